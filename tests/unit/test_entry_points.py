"""bcc's names for the programs' entry points: one rule, used to attach and to find each
program's statistics."""

import pytest

from zctrace.probes import entry_point


@pytest.mark.parametrize("kind, target, name", [
    ("tracepoint", "syscalls:sys_enter_sendmsg", "tracepoint__syscalls__sys_enter_sendmsg"),
    ("raw_tracepoint", "io_uring_complete", "raw_tracepoint__io_uring_complete"),
    ("fentry", "io_tx_ubuf_complete", "kfunc__io_tx_ubuf_complete"),
    ("kprobe", "skb_copy_ubufs", "kprobe__skb_copy_ubufs"),
])
def test_entry_point_names(kind, target, name):
    assert entry_point(kind, target) == name


def test_an_unknown_kind_is_an_error():
    with pytest.raises(KeyError):
        entry_point("uprobe", "x")
