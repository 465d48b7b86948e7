"""The alert and recording rules (dashboards/zctrace-rules.yml) under `promtool`: its checker, its
unit tests on synthetic series (dashboards/tests/*.yml), and what those tests must cover: every
alert fires in one case and stays quiet in another, and links to its own section of
docs/runbook.md. The same rules run on a real Prometheus in tests/test_exporter.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "dashboards" / "zctrace-rules.yml"
RULE_TESTS = sorted((REPO / "dashboards" / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = re.compile(r"docs/runbook\.md#([a-z0-9-]+)")

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/setup.sh)")


def alerts(rules: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def promtool_test(rules_file: Path, tests: list[Path], tmp: Path) -> subprocess.CompletedProcess:
    """`promtool test rules` on copies of `tests` that load `rules_file` instead."""
    copies = []
    for t in tests:
        doc = yaml.safe_load(t.read_text())
        doc["rule_files"] = [str(rules_file)]
        copy = tmp / t.name
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        copies.append(copy)
    return subprocess.run(["promtool", "test", "rules", *map(str, copies)], capture_output=True, text=True,
                          timeout=600)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings (lower case, spaces to dashes,
    punctuation other than - and _ dropped)."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_promtool_checks_the_rules():
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass():
    assert RULE_TESTS
    for t in RULE_TESTS:  # each names the rules file it tests, relative to itself
        assert yaml.safe_load(t.read_text())["rule_files"] == ["../zctrace-rules.yml"], t
    r = subprocess.run(["promtool", "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(RULE_TESTS), r.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    names = set(alerts(yaml.safe_load(RULES.read_text())))
    firing, quiet = set(), set()
    for t in RULE_TESTS:
        for group in yaml.safe_load(t.read_text())["tests"]:
            for case in group.get("alert_rule_test") or []:
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert names - firing == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they stay quiet"
    assert (firing | quiet) - names == set(), "cases for alerts that do not exist"


def test_every_case_can_fail(tmp_path: Path):
    """The unit tests see the alerts' real expressions: with every alert made to fire always (and
    at once), each alert's quiet cases fail; made never to fire, its firing cases fail."""
    rules = yaml.safe_load(RULES.read_text())
    names = set(alerts(rules))
    for mutation, expr in (("always", "vector(1)"), ("never", "vector(1) == 0")):
        mutated = yaml.safe_load(RULES.read_text())
        for rule in alerts(mutated).values():
            rule["expr"] = expr
            rule.pop("for", None)
        path = tmp_path / f"{mutation}.yml"
        path.write_text(yaml.safe_dump(mutated, sort_keys=False))
        r = promtool_test(path, RULE_TESTS, tmp_path)
        assert r.returncode != 0, mutation
        # On stderr, a failed case: "alertname: X, time: T," then "exp:[]," when it expected quiet.
        cases = re.findall(r"alertname: (\w+), time: \S+\s+exp:(\[\])?", r.stderr)
        failed = {name for name, quiet in cases if bool(quiet) == (mutation == "always")}
        assert failed == names, (mutation, names - failed)


def test_every_alert_links_to_its_own_runbook_section():
    anchors = github_anchors(RUNBOOK.read_text())
    seen = {}
    for name, rule in alerts(yaml.safe_load(RULES.read_text())).items():
        for key in ("summary", "description", "runbook_url"):
            assert rule.get("annotations", {}).get(key), (name, key)
        m = RUNBOOK_URL.fullmatch(rule["annotations"]["runbook_url"])
        assert m, (name, rule["annotations"]["runbook_url"])
        assert m.group(1) == name.lower(), (name, "links to another alert's section")
        assert m.group(1) in anchors, (name, "no such section in docs/runbook.md")
        seen[m.group(1)] = name
    assert len(seen) == len(alerts(yaml.safe_load(RULES.read_text())))


def test_github_anchors():
    assert github_anchors("# Runbook: zctrace alerts\n## ZctraceEventsLost\n## Kubernetes names for container_id and pod_uid\n") == {
        "runbook-zctrace-alerts", "zctraceeventslost", "kubernetes-names-for-container_id-and-pod_uid"}
