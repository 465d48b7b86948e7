"""The unit tests' dict-backed maps (tests/unit/fakemaps.py) against a live session: a recording
of real probes' maps after real sends reads back as the very same snapshot, so what the unit
tests drive through the fake is what a live session gives."""

import sys
from dataclasses import replace
from pathlib import Path

from zctrace import model, snapshot
from zctrace.bench import cells
from zctrace.workload.senders import WorkloadSpec

sys.path.insert(0, str(Path(__file__).resolve().parent / "unit"))
from fakemaps import FakeMaps  # noqa: E402


def test_a_recorded_session_reads_back_as_the_same_snapshot(tracer):
    tracer.clear()
    cells.run([WorkloadSpec(mode="msg_zerocopy", target="loopback", size=1000, count=50),
               WorkloadSpec(mode="uring_zc", target="loopback", size=1000, count=50, report_usage=False),
               WorkloadSpec(mode="msg_zerocopy", target="loopback", size=1000, count=20, so_zerocopy=False)])
    live = snapshot.take(tracer.bpf)
    fake = snapshot.take(FakeMaps.recorded(tracer.bpf))
    assert replace(fake, taken_at=0) == replace(live, taken_at=0)
    totals = model.build(fake, tracer.tier).totals
    assert totals.zc_requests == 100 and totals.not_attempted == 20 and totals.copied_reasons, totals
