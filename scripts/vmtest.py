"""Run the vm-marked tests inside a full Debian kernel, 6.12 or 6.1 (fentry and kprobe tiers).

    python3 scripts/vmtest.py [--kernel 6.12|6.1|PATH] [--timeout S] [--cpus N] [--memory M] [pytest args]

Boots Debian's 6.12 (default) or 6.1 kernel once with virtme-ng under TCG (no KVM), runs
``python -m pytest -m vm <pytest args>`` from the repository root inside it with
ZCTRACE_IN_VM=1, streams the output live and exits with pytest's exit status.
Install what it needs with ``scripts/setup-vm.sh``. See docs/vm-tests.md.

Inside the VM: the host root file system is shared read-only over 9p (/etc, /usr, /var, /tmp
... get a throw-away overlay), the repository is shared read-write, ``python3`` on PATH is this
very interpreter (not Debian's /usr/bin/python3), and of the host's environment only ZCTRACE_*
and PYTEST_DISABLE_PLUGIN_AUTOLOAD are passed through.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Debian's kernel series the suite runs on: their image names, generic flavour (not -rt/-cloud).
KERNEL_NAMES = {
    "6.12": re.compile(r"vmlinuz-6\.12\.\d+(\+deb\d+)?-amd64"),
    "6.1": re.compile(r"vmlinuz-6\.1\.0-\d+-amd64"),
}
DEFAULT_SERIES = "6.12"
DEFAULT_TIMEOUT = 2700  # seconds, boot included (6.1 on 2026-12-07's slower machine: past 1800)
RC_MARK = "ZCTRACE_VMTEST_RC="
BOOT_MARK = "ZCTRACE_VMTEST_BOOTED"
EXIT_TIMEOUT = 124  # harness errors use codes pytest never returns (0-5)
EXIT_VM_ERROR = 125


class VMError(Exception):
    """The VM could not be started or did not run pytest to its end."""

    def __init__(self, msg: str, code: int = EXIT_VM_ERROR):
        super().__init__(msg)
        self.code = code


class VMSilent(VMError):
    """vng ended before the guest printed anything: a start-up failure worth one retry."""


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", os.path.basename(path))]


def find_kernel(series: str = DEFAULT_SERIES) -> str:
    """Newest installed Debian kernel of `series` (generic amd64 flavour) that has its modules."""
    pattern = f"/boot/vmlinuz-{series}.*"
    found = [k for k in glob.glob(pattern)
             if KERNEL_NAMES[series].fullmatch(os.path.basename(k))
             and os.path.isdir("/lib/modules/" + os.path.basename(k)[len("vmlinuz-"):])]
    if not found:
        raise VMError(f"no {series} kernel with modules ({pattern}): run scripts/setup-vm.sh")
    return max(found, key=_version_key)


def resolve_kernel(kernel: str | None) -> str:
    """A kernel image from --kernel: a series name (6.12, 6.1), a path, or None (6.12)."""
    if kernel is None or kernel in KERNEL_NAMES:
        return find_kernel(kernel or DEFAULT_SERIES)
    if not os.path.isfile(kernel):
        raise VMError(f"kernel image not found: {kernel} "
                      f"(give a path or one of {', '.join(KERNEL_NAMES)})")
    return kernel


def find_vng() -> str:
    beside = Path(sys.executable).parent / "vng"
    vng = str(beside) if beside.exists() else shutil.which("vng")
    if not vng:
        raise VMError("virtme-ng (vng) is not installed: run scripts/setup-vm.sh")
    if not shutil.which("qemu-system-x86_64"):
        raise VMError("qemu-system-x86_64 is not installed: run scripts/setup-vm.sh")
    return vng


def guest_script(pytest_args: list[str]) -> str:
    """The shell script the VM runs: mounts, environment, pytest, then its exit status."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("ZCTRACE_") or k == "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(ZCTRACE_IN_VM="1", PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    cmd = shlex.join([sys.executable, "-m", "pytest", "-m", "vm", *pytest_args])
    return f"""\
echo {BOOT_MARK}
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
mountpoint -q /sys/kernel/tracing || mount -t tracefs none /sys/kernel/tracing
{exports}cd {shlex.quote(str(REPO))} || exit 1
{cmd} </dev/null 2>&1
echo {RC_MARK}$?
"""


def vng_command(vng: str, kernel: str, script: str, cpus: int, memory: str) -> list[str]:
    return [vng, "--disable-kvm", "--run", kernel, "--memory", memory, "--cpus", str(cpus),
            "--rwdir", str(REPO), "--cwd", str(REPO), "--", "sh", script]


def run(pytest_args: list[str], kernel: str | None = None, timeout: float = DEFAULT_TIMEOUT,
        cpus: int | None = None, memory: str = "2G", out=None) -> int:
    """Boot once, run the vm tests, stream their output to ``out``; return pytest's status."""
    out = out or sys.stdout
    kernel = resolve_kernel(kernel)
    vng = find_vng()
    if not (REPO / "tests").is_dir():
        raise VMError(f"{REPO} is not a zctrace source checkout (no tests/)")
    cpus = cpus or min(os.cpu_count() or 1, 2)
    # The guest sees the host's /tmp (under a throw-away overlay), so the script goes there:
    # a long pytest command line would not fit in the kernel command line.
    fd, script = tempfile.mkstemp(prefix="zctrace-vmtest-", suffix=".sh")
    with os.fdopen(fd, "w") as f:
        f.write(guest_script(pytest_args))
    start = time.monotonic()
    booted_at = done_at = rc = None
    timed_out = threading.Event()
    tail: list[str] = []
    try:
        proc = subprocess.Popen(vng_command(vng, kernel, script, cpus, memory), cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
                if line == BOOT_MARK:
                    booted_at = time.monotonic()
                    print(f"vmtest: {os.path.basename(kernel)} booted in "
                          f"{booted_at - start:.1f} s", file=out, flush=True)
                    continue
                m = re.fullmatch(RC_MARK + r"(\d+)", line.strip())
                if m:
                    rc, done_at = int(m.group(1)), time.monotonic()
                    continue
                tail = (tail + [line])[-5:]
                print(line, file=out, flush=True)
            vng_rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                kill()
                proc.wait()
    finally:
        os.unlink(script)
    total = time.monotonic() - start
    if rc is None and timed_out.is_set():
        raise VMError(f"timed out after {timeout:.0f} s "
                      f"({'pytest still running' if booted_at else 'VM never booted'})",
                      EXIT_TIMEOUT)
    if rc is None and not booted_at and not any(t.strip() for t in tail):
        raise VMSilent(f"VM failed to boot (vng exit status {vng_rc}; last line: no output)")
    if rc is None:
        last = next((t.strip() for t in reversed(tail) if t.strip()), "no output")
        where = "pytest did not finish" if booted_at else "VM failed to boot"
        raise VMError(f"{where} (vng exit status {vng_rc}; last line: {last[:200]})")
    booted_at = booted_at or start
    print(f"vmtest: pytest exit status {rc}; boot {booted_at - start:.1f} s, "
          f"pytest {done_at - booted_at:.1f} s, shutdown {start + total - done_at:.1f} s, "
          f"total {total:.1f} s", file=out, flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    after = []
    if "--" in argv:
        i = argv.index("--")
        argv, after = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(
        prog="python3 scripts/vmtest.py", allow_abbrev=False,
        description="Run `pytest -m vm` inside a 6.12 or 6.1 kernel booted with virtme-ng. "
                    "Unknown arguments (and all after --) go to pytest, run from the repo root.")
    ap.add_argument("--kernel", help="6.12 or 6.1 (newest installed Debian kernel of that "
                    "series) or a kernel image path (default: 6.12)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help=f"seconds for boot and tests (default {DEFAULT_TIMEOUT})")
    ap.add_argument("--cpus", type=int, help="guest CPUs (default: up to 2)")
    ap.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    opts, pytest_args = ap.parse_known_args(argv)
    # A CI runner that gives up sends SIGTERM: unwind so the VM is killed too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        try:
            return run(pytest_args + after, kernel=opts.kernel, timeout=opts.timeout,
                       cpus=opts.cpus, memory=opts.memory)
        except VMSilent as e:  # seen once in CI (vng exit 255, no output): boot again, once
            print(f"vmtest: {e}; booting again", file=sys.stderr, flush=True)
            return run(pytest_args + after, kernel=opts.kernel, timeout=opts.timeout,
                       cpus=opts.cpus, memory=opts.memory)
    except VMError as e:
        print(f"vmtest: error: {e}", file=sys.stderr, flush=True)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
