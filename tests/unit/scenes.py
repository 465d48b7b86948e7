"""Hand-written map contents for the unit tests: two live processes (this one and pid 1, so the
exporter's sweeper retires neither) with every verdict, reason kind and side table."""

from __future__ import annotations

import os

from fakemaps import FakeMaps

SENDER, OTHER = os.getpid(), 1
LOCAL = ("skb_copy_ubufs", "__netif_receive_skb_core.constprop.0", "netif_receive_skb")
LOCAL_NEWER = ("skb_copy_ubufs", "ip_local_deliver_finish", "ip_local_deliver")
MYSTERY = ("skb_copy_ubufs", "mystery_xmit.cold", "dev_hard_start_xmit")


def mixed(kernel: bool = False) -> FakeMaps:
    """`kernel`: the maps of the fentry/kprobe tiers (copy sites, kernel events)."""
    m = FakeMaps(kernel=kernel)
    # sender, MSG_ZEROCOPY over UDP: 6 zero-copied, 3 copied, 1 undecided; 4 never attempted
    m.stats(SENDER, "msg_zerocopy", "udp", comm="sender", cgroup=11, requests=10, bytes=10_000,
            zerocopied=6, copied=3, notifications=5, read_requests=8, completed_bytes=9_000,
            na_so_zerocopy_unset=4)
    m.reason(SENDER, "msg_zerocopy", "udp", "late_copy", 1, LOCAL)
    m.reason(SENDER, "msg_zerocopy", "udp", "late_copy", 1, LOCAL_NEWER)
    m.reason(SENDER, "msg_zerocopy", "udp", "no_sg", 1)
    # sender, io_uring over TCP (the ring's counters): 2 zero-copied, 5 unknown, 1 undecided
    m.ring(SENDER, "tcp", comm="sender", cgroup=11, requests=8, bytes=32_000, zerocopied=2, unreported=5,
           notifications=7, completed_bytes=28_000)
    # other, MSG_ZEROCOPY over TCP: 4 copied (3 by a caller zctrace does not know, 1 without evidence)
    m.stats(OTHER, "msg_zerocopy", "tcp", comm="other", cgroup=22, requests=4, bytes=16_000, copied=4,
            notifications=2, read_requests=4, completed_bytes=16_000, na_eopnotsupp=2)
    m.reason(OTHER, "msg_zerocopy", "tcp", "late_copy", 3, MYSTERY)
    m.reason(OTHER, "msg_zerocopy", "tcp", "unknown", 1)
    m.stats(OTHER, "io_uring", "udp", comm="other", cgroup=22)  # a row with nothing counted yet
    m.sock(SENDER, "udp", 5001, requests=10, zerocopied=6, copied=3, nbytes=10_000, ifindex=1)
    m.sock(OTHER, "tcp", 5002, requests=4, zerocopied=0, copied=4, nbytes=16_000)
    m.hist("latency", "msg_zerocopy", {14: 3, 20: 1})
    m.hist("range", "msg_zerocopy", {1: 4, 2: 1})
    m.error("socks_full", 2, requests=3, nbytes=3_000)
    m.receive(OTHER, "other", calls=5, mapped=40_960, copied=100, errors=1, cgroup=22)
    if kernel:
        m.kevent("copy_ubufs", 3, 12_000)
        m.copy_site(LOCAL, 2, 8_000)
        m.copy_site(MYSTERY, 1, 4_000)
    return m
