"""The unit tests' import chain loads no bcc: run in a fresh interpreter where `import bcc`
fails, the pipeline they drive (snapshot -> model -> report, top, the collector) still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PIPELINE = """
import sys
sys.modules["bcc"] = None  # any `import bcc` now raises ImportError
from scenes import mixed
from zctrace import model, report, snapshot, top
from zctrace.exporter import collector
rep = model.build(snapshot.take(mixed()), "tracepoint")
report.render(rep)
top.render(top.Frame(rep, {}, 0.0), 1.0)
from zctrace.probes import Session
list(collector.ZctraceCollector(Session("tracepoint", [], bpf=mixed()), map_fills=lambda bpf: []).collect())
print(rep.totals.zc_requests)
assert "bcc" not in {name.split(".")[0] for name, mod in sys.modules.items() if mod is not None}
"""


def test_the_unit_tests_need_no_bcc():
    run = subprocess.run([sys.executable, "-c", PIPELINE], cwd=HERE, capture_output=True, text=True,
                         env={"PYTHONPATH": f"{HERE}:{HERE.parent.parent}", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["22"]
