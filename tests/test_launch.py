"""The suite does not depend on how it is launched (issue 24).

`scripts/test.sh &` or `nohup ... &` starts pytest with SIGINT ignored, an ignored signal stays
ignored across fork and exec, and zctrace keeps a signal ignored at startup ignored (as it should:
zctrace/interrupts.py install()). The tests that send zctrace SIGINT used to hang there until
their timeouts and leave `zctrace trace` running with its programs attached. Here they run in a
child pytest whose SIGINT is ignored: they pass, and leave no process behind.
"""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import REPO

# Every test that sends zctrace SIGINT (grep -rn SIGINT tests/); the terminal's ^C through tmux
# is not among them: tmux's server starts its panes with default signal dispositions.
SIGINT_TESTS = [
    "tests/test_cli.py::test_ctrl_c_stops_tracing_reports_and_unloads",
    *(f"tests/test_robust_cli.py::test_a_signal_while_probes_load_is_one_line[{args}-{int(signal.SIGINT)}]"
      for args in ("trace", "top", "bench", "trace-cmd")),
    f"tests/test_robust_cli.py::test_two_signals_in_a_row_still_write_the_report[{int(signal.SIGINT)}]",
]
MARK = "ZCTRACE_TEST_LAUNCH"  # in the environment of the child pytest and all it starts


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def marked(value: str) -> list[int]:
    """Processes whose environment holds MARK=value."""
    needle = f"{MARK}={value}".encode() + b"\0"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if b"\0" + needle in b"\0" + environ:
            found.append(int(pid))
    return found


def test_sigint_tests_pass_with_sigint_ignored_and_leave_nothing_running(tmp_path):
    # The condition itself: a Python started like this keeps SIGINT ignored.
    r = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT).name)"],
                       capture_output=True, text=True, preexec_fn=ignore_sigint, check=True)
    assert r.stdout == "SIG_IGN\n"

    value = uuid.uuid4().hex
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "--basetemp", str(tmp_path / "child"), *SIGINT_TESTS],
                           cwd=REPO, env={**os.environ, MARK: value}, capture_output=True, text=True,
                           timeout=300, preexec_fn=ignore_sigint)
    finally:
        left = marked(value)
        for pid in left:  # what a run killed on timeout (or a test that hung) left
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert r.returncode == 0 and f"{len(SIGINT_TESTS)} passed" in r.stdout, \
        f"processes left: {left}\n{r.stdout}{r.stderr}"
    assert left == [], f"processes left by the tests: {left}"
