/* Follow the traced processes' children (sessions that filter by process), and forget each one
 * when it exits, so zc_targets only ever holds live tasks. (A fork adds threads too: their ids
 * are never a tgid, and they go when they exit.) */

#include "maps.bpf.h"

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32, child = args->child_pid;
	u8 one = 1;

	if (zc_targets.lookup(&parent))
		zc_targets.update(&child, &one);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u32 tid = bpf_get_current_pid_tgid();

	zc_targets.delete(&tid);
	return 0;
}
