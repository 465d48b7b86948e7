/* Follow the traced processes' children (sessions that filter by process). */

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32, child = args->child_pid;
	u8 one = 1;

	if (zc_targets.lookup(&parent))
		zc_targets.update(&child, &one);
	return 0;
}
