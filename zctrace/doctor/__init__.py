"""`zctrace doctor`: what this kernel lets zctrace see, and whether zerocopy can succeed here.

Findings: kernel, BTF, probe tiers (and why not), probes on the active tier, io_uring opcodes,
kernel functions; then, each with a one-line advice: per interface of this network namespace
whether zerocopy sends can end zero-copy (netdev.py), net.core.optmem_max, RLIMIT_MEMLOCK
and CAP_IPC_LOCK, kernel.io_uring_disabled, and by behaviour (never by version or number):
IORING_SEND_ZC_REPORT_USAGE, io_uring zcrx, SCM_ZC_NOTIFICATION; and the namespaces and
devices that killed zctrace runs left (removed, as root).

command.py gathers them (diagnose) and prints them (render.py); system.py reads the settings
and limits, features.py tries the kernel's features with real sockets, rings and syscalls.
"""
