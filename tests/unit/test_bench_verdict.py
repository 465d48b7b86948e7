"""A bench cell's verdict is the one model.build assembled (traced) or the kernel's own counts
in the model's Counts (untraced): the suites render it, never rebuild it from requests."""

from __future__ import annotations

import os

import pytest
from fakemaps import FakeMaps

from zctrace import snapshot
from zctrace.bench.cells import Cell, traced_counts
from zctrace.bench.suites import SEED_COLUMNS, SuiteCell
from zctrace.workload.senders import WorkloadSpec

ZC8 = next(c for c in SEED_COLUMNS if c.key == "zc/8")
NO_VERDICT = {"zerocopied": 0, "copied": 0, "unknown": 0, "so_zerocopy": True}


def traced_cell(requests: int, **counters: int) -> SuiteCell:
    """A traced io_uring SEND_ZC cell of `requests` sends whose probe counters are `counters`."""
    m = FakeMaps()
    m.stats(os.getpid(), "io_uring", "udp", requests=requests, **counters)
    spec = WorkloadSpec(mode="uring_zc", target="sink", size=1000, count=requests)
    counts = traced_counts(snapshot.take(m), spec)
    # positional: the tracer's counts are the field after the kernel's
    return SuiteCell(ZC8, Cell("uring_zc", "udp", 1000, "sink", requests, 1.0, 0.1, NO_VERDICT, counts))


@pytest.mark.parametrize("counters,verdict", [
    ({"zerocopied": 6}, "zerocopied"),  # 4 still in flight when the cell ended: not `unknown`
    ({}, "undecided"),
    ({"zerocopied": 6, "unreported": 4}, "mixed"),
    ({"unreported": 10}, "unknown")])
def test_a_traced_cell_says_the_model_verdict(counters, verdict):
    sc = traced_cell(10, **counters)
    assert sc.verdict == verdict
    assert sc.really_zerocopy is (verdict == "zerocopied")
    assert sc.cell.traced == {"requests": 10, "zerocopied": counters.get("zerocopied", 0), "copied": 0,
                              "unknown": counters.get("unreported", 0), "not_attempted": 0}


@pytest.mark.parametrize("kernel,verdict", [
    ({"zerocopied": 10, "copied": 0, "unknown": 0}, "zerocopied"),
    ({"zerocopied": 0, "copied": 10, "unknown": 0}, "copied"),
    ({"zerocopied": 6, "copied": 0, "unknown": 4}, "mixed"),
    ({"zerocopied": 0, "copied": 0, "unknown": 10}, "unknown")])
def test_an_untraced_cell_says_the_kernel_verdict(kernel, verdict):
    cell = Cell("uring_zc", "udp", 1000, "sink", 10, 1.0, 0.1, {**kernel, "so_zerocopy": True}, None)
    assert (SuiteCell(ZC8, cell).verdict, cell.traced, cell.matches) == (verdict, None, None)


def test_no_zerocopy_asked_has_no_verdict():
    cell = Cell("uring", "udp", 1000, "sink", 10, 1.0, 0.1, NO_VERDICT, None)
    assert SuiteCell(SEED_COLUMNS[3], cell).verdict == "-"
