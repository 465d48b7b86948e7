"""The VM harness: the probe tiers exist in the VM, and the harness reports failures."""
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _vmtest():
    """scripts/vmtest.py, the VM harness (a developer tool: not in the package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("vmtest", REPO / "scripts" / "vmtest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vmtest", module)
    spec.loader.exec_module(module)
    return module

SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
MSG_ERRQUEUE = 0x2000
IP_RECVERR = 11  # not in Python's socket module
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1

PROG = r"""
BPF_ARRAY(hits, u64, 2);

KFUNC_PROBE(skb_copy_ubufs)
{
    hits.increment(0);
    return 0;
}

int on_zc_callback(struct pt_regs *ctx)
{
    hits.increment(1);
    return 0;
}
"""


def _zerocopy_udp_send(payload=b"z" * 1000):
    """One MSG_ZEROCOPY UDP send over loopback; returns its notification (lo, hi, copied)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        assert tx.sendto(payload, MSG_ZEROCOPY, rx.getsockname()) == len(payload)
        assert rx.recv(65536) == payload
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            select.select([tx], [], [], 0.1)  # an error-queue entry shows as POLLERR
            try:
                _, anc, _, _ = tx.recvmsg(0, 256, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            for level, type_, data in anc:
                if level == socket.SOL_IP and type_ == IP_RECVERR:
                    # struct sock_extended_err: u32 errno; u8 origin, type, code, pad;
                    # u32 info (first send id), data (last send id)
                    assert data[4] == SO_EE_ORIGIN_ZEROCOPY
                    lo = int.from_bytes(data[8:12], "little")
                    hi = int.from_bytes(data[12:16], "little")
                    return lo, hi, data[6] & SO_EE_CODE_ZEROCOPY_COPIED
        pytest.fail("no zerocopy notification on the error queue")


@pytest.mark.vm
def test_vm_has_fentry_and_kprobe_tiers():
    from bcc import BPF

    assert os.path.exists("/sys/kernel/btf/vmlinux")
    assert BPF.support_kfunc(), "kernel refuses fentry (BPF trampolines)"
    b = BPF(text=PROG)  # KFUNC_PROBE attaches on load
    try:
        b.attach_kprobe(event="__msg_zerocopy_callback", fn_name="on_zc_callback")
        assert b.num_open_kprobes() == 1
        # Loopback delivers locally, so the kernel reports the send as copied.
        assert _zerocopy_udp_send() == (0, 0, SO_EE_CODE_ZEROCOPY_COPIED)
        time.sleep(0.1)
        hits = b["hits"]
        copies, callbacks = hits[0].value, hits[1].value
        # skb_orphan_frags_rx copied the pages on receive (fentry fires), then the last
        # reference posted the notification (kprobe fires).
        assert callbacks >= 1, "kprobe on __msg_zerocopy_callback never fired"
        assert copies >= 1, "fentry on skb_copy_ubufs never fired"
    finally:
        b.cleanup()


@pytest.mark.vm
def test_vm_has_netns_veth_and_dummy():
    ns = "zcvm-selftest"

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    ip("netns", "add", ns)
    try:
        ip("link", "add", "zcvm0", "type", "veth", "peer", "name", "zcvm1", "netns", ns)
        ip("link", "add", "zcvm2", "type", "dummy")  # loads the dummy module
        ip("link", "set", "zcvm2", "mtu", "65535", "up")
        ip("link", "del", "zcvm2")
        ip("link", "del", "zcvm0")
    finally:
        ip("netns", "del", ns)


def _vm_ready():
    try:
        vmtest = _vmtest()
        vmtest.find_kernel()
        vmtest.find_vng()
    except Exception as e:  # noqa: BLE001 - any reason is a reason to skip
        return str(e)
    return None


def test_harness_reports_vm_test_failure():
    """Boots the VM once (about a minute under TCG) on a test that must fail."""
    why = _vm_ready()
    if why:
        pytest.skip(why)
    # No third-party pytest plugins in this boot: importing them over 9p under TCG is slow.
    env = dict(os.environ, ZCTRACE_VM_SELFCHECK="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    env.pop("ZCTRACE_IN_VM", None)
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "vmtest.py"), "--timeout", "600",
                        "tests/vm_selfcheck"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=700)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out  # pytest's "tests failed", passed through
    assert "_ test_wrong_probe_name_attaches _" in out, out  # its traceback, from the VM
    assert "1 failed" in out, out


def test_harness_missing_kernel_is_one_line_error():
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "vmtest.py"), "--kernel",
                        "/nonexistent/vmlinuz"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 125
    assert p.stderr.strip().count("\n") == 0
    assert p.stderr.startswith("vmtest: error: kernel image not found"), p.stderr


@pytest.mark.parametrize("series,name", [("6.12", r"vmlinuz-6\.12\.\d+\+deb\d+-amd64"),
                                         ("6.1", r"vmlinuz-6\.1\.0-\d+-amd64")])
def test_kernel_series_names_the_newest_installed_kernel(series, name):
    """--kernel 6.12 / 6.1 pick Debian's generic-flavour kernel of that series (setup-vm.sh)."""
    import re
    vmtest = _vmtest()
    try:
        kernel = vmtest.resolve_kernel(series)
    except vmtest.VMError as e:
        pytest.skip(str(e))
    assert re.fullmatch(name, os.path.basename(kernel)), kernel
    assert os.path.isdir("/lib/modules/" + os.path.basename(kernel).removeprefix("vmlinuz-"))
    assert vmtest.resolve_kernel(kernel) == kernel  # a path is taken as it is


def test_harness_unknown_kernel_series_is_one_line_error():
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "vmtest.py"), "--kernel", "5.10"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 125
    assert p.stderr.strip().count("\n") == 0
    assert p.stderr.startswith("vmtest: error: kernel image not found: 5.10 (give a path or one "
                               "of 6.12, 6.1)"), p.stderr
