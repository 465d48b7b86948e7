"""What a second start reuses: BTF answers and probe tier verdicts, cached under XDG_CACHE_HOME.

Speed itself is measured by scripts/bench_startup.py; these tests check that the cache is used,
that its answers are the kernel's, and that a wrong remembered verdict does not stop tracing.
"""
import json
import subprocess
import sys

import pytest

from zctrace.btf import Btf, CachedBtf
from zctrace.offsets import kernel_defines

ZCTRACE = [sys.executable, "-m", "zctrace.cli"]


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_second_start_parses_no_btf_and_gets_the_same_answers(cache_home):
    first = CachedBtf()
    defines = kernel_defines(first)
    first.has_function("skb_copy_ubufs")
    assert first._parsed
    first.save()
    assert list((cache_home / "zctrace").glob("btf-*.json"))

    second = CachedBtf()
    assert kernel_defines(second) == defines == kernel_defines(Btf.load())
    assert second.has_function("skb_copy_ubufs") is Btf.load().has_function("skb_copy_ubufs")
    assert not second._parsed, "the second start parsed BTF: every answer it needed was cached"


def test_a_new_question_is_a_miss_answered_from_btf(cache_home):
    first = CachedBtf()
    first.field("sock", "sk_zckey")
    first.save()
    second = CachedBtf()
    assert second.field("sk_buff", "len") == Btf.load().field("sk_buff", "len")
    assert second._parsed
    with pytest.raises(LookupError):
        second.field("sock", "no_such_member")


def _trace(cache_home) -> subprocess.CompletedProcess:
    env = {"XDG_CACHE_HOME": str(cache_home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(ZCTRACE + ["trace", "--json", "-", "--", "true"], capture_output=True, text=True,
                          timeout=120, env=env)


def test_tier_verdicts_are_remembered(cache_home):
    r = _trace(cache_home)
    assert r.returncode == 0, r.stderr
    tier = json.loads(r.stdout[r.stdout.index("{"):])["tier"]
    remembered, = (cache_home / "zctrace").glob("tiers-*.json")
    verdicts = json.loads(remembered.read_text())
    assert verdicts[tier]["ok"] is True


def test_a_wrong_remembered_verdict_is_tried_again(cache_home):
    """A tier remembered as loading that no longer does (policy changed) is dropped, not fatal."""
    r = _trace(cache_home)
    tier = json.loads(r.stdout[r.stdout.index("{"):])["tier"]
    if tier == "fentry":
        pytest.skip("every tier loads here: no wrong verdict to plant")
    remembered, = (cache_home / "zctrace").glob("tiers-*.json")
    verdicts = json.loads(remembered.read_text())
    verdicts["fentry"] = {"tier": "fentry", "ok": True, "error": "", "remembered": True}
    remembered.write_text(json.dumps(verdicts))

    r = _trace(cache_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{"):])["tier"] == tier
    assert json.loads(remembered.read_text())["fentry"]["ok"] is False


def test_remembered_refusals_alone_never_fail_a_start(cache_home):
    """Every tier remembered as refused (a transient failure, a policy since relaxed): tried again."""
    r = _trace(cache_home)
    tier = json.loads(r.stdout[r.stdout.index("{"):])["tier"]
    remembered, = (cache_home / "zctrace").glob("tiers-*.json")
    remembered.write_text(json.dumps({t: {"tier": t, "ok": False, "error": "planted", "remembered": True}
                                      for t in ("fentry", "kprobe", "tracepoint")}))
    r = _trace(cache_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{"):])["tier"] == tier
    assert json.loads(remembered.read_text())[tier]["ok"] is True
