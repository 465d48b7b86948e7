"""Shared pytest setup.

VM split: tests marked ``@pytest.mark.vm`` need the full-kernel VM (fentry/kprobe tiers) and
run only there (``python3 scripts/vmtest.py``, which sets ZCTRACE_IN_VM=1); inside the VM
every other test is skipped.
"""
import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

IN_VM = os.environ.get("ZCTRACE_IN_VM") == "1"
REPO = Path(__file__).resolve().parent.parent


def copy_checkout(dest: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) copied to `dest`, for a clean build."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes((REPO / name).read_bytes())
    return dest

# tests/vm_selfcheck/ holds a deliberately failing vm test: collected only on request.
collect_ignore = [] if os.environ.get("ZCTRACE_VM_SELFCHECK") == "1" else ["vm_selfcheck"]


# The tracepoint tier runs on the host (6.18, linked notifications) and, inside the VM, only on
# the kernels named here: 6.1 has no linked notifications and older syscall and io_uring
# tracepoints; 6.12 lies between it and the host, and its tracepoint-tier run cost CI about six
# minutes (ZCTRACE_VM_TRACEPOINT_KERNELS="6.12 6.1" runs it there too).
VM_TRACEPOINT_KERNELS = os.environ.get("ZCTRACE_VM_TRACEPOINT_KERNELS", "6.1").split()


def kernel_series(release: str | None = None) -> str:
    """'6.12' of '6.12.118+deb12-amd64'."""
    return ".".join((release or os.uname().release).split(".")[:2])


def pytest_collection_modifyitems(config, items):
    if IN_VM:
        skip = pytest.mark.skip(reason="inside the VM only vm-marked tests run")
    else:
        skip = pytest.mark.skip(reason="needs the full-kernel VM: python3 scripts/vmtest.py")
    series = kernel_series()
    skip_tp = pytest.mark.skip(reason=f"the tracepoint tier runs on the host and in the VM on "
                                      f"{' '.join(VM_TRACEPOINT_KERNELS) or 'no kernel'}, not {series} "
                                      f"(ZCTRACE_VM_TRACEPOINT_KERNELS)")
    for item in items:
        if (item.get_closest_marker("vm") is not None) != IN_VM:
            item.add_marker(skip)
        elif IN_VM and series not in VM_TRACEPOINT_KERNELS and "tracepoint-vm" in getattr(
                getattr(item, "callspec", None), "id", ""):
            item.add_marker(skip_tp)


def default_stop_signals() -> None:
    """In a child before exec: SIGINT and SIGTERM do what they do by default. Launched from
    `scripts/test.sh &` or nohup, pytest inherits SIGINT ignored, its children would too, and
    zctrace rightly keeps a signal ignored at startup ignored: a test's SIGINT would be lost."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)


class Processes:
    """The processes a test starts (`popen`, as subprocess.Popen): each with SIGINT and SIGTERM
    at their defaults (default_stop_signals), in a process group of its own. At the end of the
    test, one still running (the test failed or timed out) is stopped with its group (its traced
    command too): SIGTERM, SIGKILL after GRACE seconds. A killed zctrace's programs go with it."""

    GRACE = 5.0

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def popen(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, preexec_fn=default_stop_signals, process_group=0, **kw)
        self.started.append(p)
        return p

    def stop(self) -> None:
        for p in self.started:
            if p.returncode is None:  # not reaped: its pid, the group's id, is not reused yet
                self._stop_group(p)
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()

    def _stop_group(self, p: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.GRACE
        # Exited, but left unreaped (WNOWAIT) until its group has had SIGKILL.
        while os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the rest of its group, or all of it after GRACE
        p.wait()


@pytest.fixture
def procs():
    """Processes started with `procs.popen(...)`: stopped after the test (see Processes)."""
    started = Processes()
    try:
        yield started
    finally:
        started.stop()


@contextlib.contextmanager
def optmem_room():
    """net.core.optmem_max raised to 1 MiB (if lower) while a test keeps many MSG_ZEROCOPY sends
    in flight: 6.1's default 20 KiB holds about 24 notifications (ENOBUFS after)."""
    path = Path("/proc/sys/net/core/optmem_max")
    old = path.read_text().strip()
    path.write_text(str(max(int(old), 1 << 20)))
    try:
        yield
    finally:
        path.write_text(old)


# Probe tiers a tracer test runs on: the tracepoint tier on the host; fentry, kprobe and the
# tracepoint tier again inside the full-kernel VM on the kernels of VM_TRACEPOINT_KERNELS (6.1).
TIERS = [
    pytest.param("tracepoint", id="tracepoint"),
    pytest.param("tracepoint", marks=pytest.mark.vm, id="tracepoint-vm"),
    pytest.param("kprobe", marks=pytest.mark.vm, id="kprobe"),
    pytest.param("fentry", marks=pytest.mark.vm, id="fentry"),
]

# Where a test that needs no particular tier runs: on the host, and again inside the VM.
HOST_AND_VM = [pytest.param("host", id="host"), pytest.param("vm", marks=pytest.mark.vm, id="vm")]


class TierSessions:
    """One compiled session per tier for the whole test run: attached for this test process
    (and its children) while a module's tests of that tier run, detached but kept loaded with
    its maps in between. Compiling is what costs (26-33 s a tier in the 6.12 VM, paid once per
    module and tier before); attaching again takes a second or less."""

    def __init__(self) -> None:
        self.sessions: dict = {}

    @contextlib.contextmanager
    def attached(self, tier: str):
        """`tier`'s session for the block, as good as new: attached, every map of probe state
        emptied, the runs the kernel skipped counted from here (its programs' recursion_misses
        are since they were loaded: snapshot.take subtracts the session's baseline). Detached
        after."""
        from zctrace.btf import Btf
        from zctrace.probes import Session
        session = self.sessions.get(tier)
        if session is None:
            session = self.sessions[tier] = Session.open(tier, Btf.load(), pids=[os.getpid()])
        else:
            session.reattach()
        try:
            self.empty(session)
            yield session
        finally:
            session.detach()

    def empty(self, session) -> None:
        """Every map of the module emptied (an array zeroed) but the program arrays, and this
        process the only one traced, as in a new session: Session.clear leaves what a benchmark
        cell needs kept (calls inside syscalls, notifications in flight, waiting chains, the
        traced pids), which a module's tests must not inherit from another's."""
        from bcc.table import ProgArray
        from zctrace import bpfinfo
        for name in bpfinfo.map_names(session.bpf):
            table = session.bpf[name.encode()]
            if not isinstance(table, ProgArray):
                table.clear()
        session.forget_skipped_runs()
        session.add_pid(os.getpid())

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()


@pytest.fixture(scope="session")
def tier_sessions():
    sessions = TierSessions()
    try:
        yield sessions
    finally:
        sessions.close()


@pytest.fixture(scope="module", params=TIERS)
def tracer(request, tier_sessions):
    """Probes of one tier, attached for this test process (and its children) while the module's
    tests of that tier run, emptied at their start (one compile per tier a run: TierSessions)."""
    with tier_sessions.attached(request.param) as session:
        yield session


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_netns_seq = itertools.count()


def setns_net(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def private_netns():
    """This thread (and the threads and processes it starts) in a new network namespace,
    removed with everything in it on exit."""
    name = f"zcns{os.getpid()}x{next(_netns_seq)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            setns_net(fd)
        finally:
            os.close(fd)
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield name
        finally:
            setns_net(home)
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# A tracepoint program that spends up to 200 us in each getppid(): while it runs on a CPU the
# kernel skips every kprobe (and tracepoint) program there, as in a softirq that interrupts it.
SPIN = r"""
TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
	u64 t0 = bpf_ktime_get_ns();

	for (int i = 0; i < 2000; i++)
		if (bpf_ktime_get_ns() - t0 > 200000)
			break;
	return 0;
}
"""


@contextlib.contextmanager
def bpf_busy_cpu(cpu: int):
    """A thread on `cpu` that spends its time inside SPIN (getppid in a loop) until the end."""
    import threading
    from bcc import BPF
    spin = BPF(text=SPIN)
    stop = threading.Event()

    def busy() -> None:
        os.sched_setaffinity(0, {cpu})
        while not stop.is_set():
            os.getppid()

    spinner = threading.Thread(target=busy)
    try:
        spinner.start()
        time.sleep(0.2)
        yield
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join()
        spin.cleanup()


@pytest.fixture
def freeing_device():
    """A target whose device frees what it transmits after taps saw it: dummy where the kernel
    has one (the VM), else a bridge without ports (the host)."""
    from zctrace.workload.targets import open_target
    why = []
    with contextlib.ExitStack() as stack:
        for kind in ("dummy", "bridge"):
            try:
                endpoint = stack.enter_context(open_target(kind, "udp"))
                break
            except RuntimeError as e:
                why.append(str(e))
        else:
            pytest.skip("; ".join(why))
        yield endpoint


@pytest.fixture
def dummy():
    """The dummy-device target (the published benchmark's sink), where the kernel has one."""
    from zctrace.workload.targets import open_target
    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(open_target("dummy", "udp"))
        except RuntimeError as e:
            pytest.skip(f"{e}: runs in the VM")
        yield endpoint


@contextlib.contextmanager
def scratch_cgroup(name: str):
    """A new cgroup v2 `name` (under the v2 mount) for the test's processes; removed after, with
    any process left in it moved back to the root first."""
    from zctrace import cgroups
    from zctrace.errors import ZctraceError
    try:
        root = cgroups.mount()
    except ZctraceError as e:
        pytest.skip(str(e))
    path = root / name
    path.mkdir()
    try:
        yield path
    finally:
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [path]:
            for pid in (sub / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # the process ended meanwhile
                    (root / "cgroup.procs").write_text(pid)
            sub.rmdir()


def in_cgroup(path, argv: list[str]) -> list[str]:
    """`argv`, run as a process that starts inside cgroup `path` (a shell moves itself, then execs)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(path), *argv]
