"""Generate dashboards/zctrace.json, the Grafana dashboard for `zctrace export`, with Grafana's
grafana-foundation-sdk (pip install grafana-foundation-sdk; pure Python, works offline).

    python3 dashboards/generate.py          # rewrite dashboards/zctrace.json
    python3 dashboards/generate.py --check  # exit 1 if the committed JSON is out of date

The committed JSON is what users import; tests/test_exporter.py runs every query in it against
a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (DashboardCursorSync, DataSourceRef, DataTransformerConfig,
                                                     DynamicConfigValue, VariableRefresh)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "zctrace.json"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job",instance=~"$instance"'
PSEL = SEL + ',api=~"$api",proto=~"$proto"'  # the families with api and proto labels
LSEL = SEL + ',api=~"$api"'  # notification latency (not per process)
RATE = "$__rate_interval"
# The namespace, pod and container variables, as matchers: on kube-state-metrics' series, and on
# zctrace's own, which have no such labels (so they match only while the variables are All).
NAMES = 'namespace=~"$namespace",pod=~"$pod",container=~"$container"'
WORKLOAD = "namespace, pod, container, instance, cgroup, container_id, pod_uid"


def sel(*matchers: str) -> str:
    return ",".join(m for m in matchers if m)


def containers(matchers: str = "") -> str:
    """kube-state-metrics' containers, one series per container_id (bare, as zctrace's label),
    with their namespace, pod and container (docs/runbook.md#kubernetes-names-for-container_id-and-pod_uid)."""
    known = sel('container_id!=""', matchers)
    return ("max by (container_id, namespace, pod, container) (label_replace(kube_pod_container_info"
            f'{{{known}}}, "container_id", "$1", "container_id", ".*://(.+)"))')


def named(vector: Callable[[str], str]) -> str:
    """A vector of per-process series, `vector(matchers)`, with the namespace, pod and container
    of the containers kube-state-metrics knows, filtered by the variables; the series it does not
    know (host processes, no kube-state-metrics at all) stay as they are while those are All."""
    return (f"({vector('')} * on (container_id) group_left (namespace, pod, container) {containers(NAMES)}"
            f" or ({vector(NAMES)} unless on (container_id) {containers()}))")


def rate_of(metric: str, *matchers: str, base: str = PSEL, window: str = RATE) -> str:
    """rate() of a per-process counter of the selected hosts, APIs and workloads (`base`: SEL
    for the families without api and proto)."""
    return named(lambda m: f"rate({metric}{{{sel(base, *matchers, m)}}}[{window}])")


def gauge_of(metric: str, base: str = PSEL) -> str:
    """A per-process gauge of the selected hosts, APIs and workloads."""
    return named(lambda m: f"{metric}{{{sel(base, m)}}}")


def most_copied_workloads() -> table.Panel:
    """One row per workload with copies over the dashboard's time range: copied requests per
    second, copied share (copied / (zerocopied + copied), as ZctraceWorkloadMostlyCopied) and the
    top copy reason; namespace, pod and container where kube-state-metrics knows the container."""
    copied = f"sum by ({WORKLOAD}) ({requests('copied', window='$__range')})"
    tried = f"sum by ({WORKLOAD}) ({requests('zerocopied|copied', window='$__range')})"
    reasons = f"sum by ({WORKLOAD}, reason) ({rate_of('zctrace_copy_fallbacks_total', window='$__range')})"
    columns = {"namespace": "namespace", "pod": "pod", "container": "container", "cgroup": "cgroup",
               "container_id": "container_id", "pod_uid": "pod_uid", "instance": "host",
               "Value #A": "copied req/s", "Value #B": "copied share", "reason": "top reason",
               "Value #C": "top reason req/s"}
    return (table.Panel().title("Most-copied workloads").description(
        "Workloads (cgroup; container and pod ids; namespace, pod and container names from "
        "kube-state-metrics where it knows the container) whose zerocopy requests were copied over "
        "the time range: copied requests per second, copied share of those with a verdict "
        "(copied / (zerocopied + copied)) and the most frequent copy reason. docs/runbook.md says "
        "what to change per reason.")
        .datasource(DS).height(10).span(24).targets(targets(
            query(f"{copied} > 0", fmt=PromQueryFormat.TABLE, instant=True),
            query(f"({copied} > 0) / ({tried} > 0)", fmt=PromQueryFormat.TABLE, instant=True),
            query(f"topk by ({WORKLOAD}) (1, {reasons} > 0)", fmt=PromQueryFormat.TABLE, instant=True)))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": columns}))
        .sort_by([common_builders.TableSortByFieldState().display_name("copied req/s").desc(True)])
        .override_by_name("copied req/s", [DynamicConfigValue(id_val="unit", value="reqps")])
        .override_by_name("top reason req/s", [DynamicConfigValue(id_val="unit", value="reqps")])
        .override_by_name("copied share", [DynamicConfigValue(id_val="unit", value="percentunit")]))


def query(expr: str, legend: str = "", fmt: PromQueryFormat | None = None,
          instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if fmt:
        q = q.format(fmt)
    return q.instant() if instant else q


def targets(*queries: prometheus.Dataquery) -> list[prometheus.Dataquery]:
    return [q.ref_id(chr(ord("A") + i)) for i, q in enumerate(queries)]


def series(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
           stacked: bool = False, width: int = 12) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DS)
         .height(8).span(width).targets(targets(*queries)).fill_opacity(20 if stacked else 0))
    if stacked:
        p = p.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return p


def requests(verdicts: str = ".+", window: str = RATE) -> str:
    """rate() of the requests of the selected hosts, APIs and workloads, for verdicts matching a regex."""
    return rate_of("zctrace_zerocopy_requests_total", f'verdict=~"{verdicts}"', window=window)


def variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).datasource(DS).query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"))


def build() -> dict:
    d = (dashboard.Dashboard("zctrace: zerocopy sends")
         .uid("zctrace-zerocopy")
         .description("Were the zerocopy sends (MSG_ZEROCOPY, io_uring SEND_ZC) really zero-copy? "
                      "Metrics from `zctrace export`.")
         .tags(["zctrace", "ebpf", "network"])
         .time("now-1h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR)
         .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
         .with_variable(variable("job", "Job", "label_values(zctrace_build_info, job)"))
         .with_variable(variable("instance", "Host", 'label_values(zctrace_build_info{job=~"$job"}, instance)'))
         # From kube-state-metrics: empty without it, and then every series is shown.
         .with_variable(variable("namespace", "Namespace", "label_values(kube_pod_container_info, namespace)"))
         .with_variable(variable("pod", "Pod", 'label_values(kube_pod_container_info{namespace=~"$namespace"}, pod)'))
         .with_variable(variable("container", "Container", 'label_values(kube_pod_container_info'
                                 '{namespace=~"$namespace",pod=~"$pod"}, container)'))
         .with_variable(variable("api", "API", f"label_values(zctrace_zerocopy_requests_total{{{SEL}}}, api)"))
         .with_variable(variable("proto", "Protocol", f"label_values(zctrace_zerocopy_requests_total{{{SEL}}}, proto)")))

    d = d.with_row(dashboard.Row("Verdicts"))
    d = d.with_panel(series(
        "Zerocopy ratio", "Share of zerocopy requests the kernel really sent without a copy "
        "(zerocopied / (zerocopied + copied + not_attempted)).", "percentunit",
        query(f"sum by (api) ({requests('zerocopied')}) / "
              f"(sum by (api) ({requests('zerocopied|copied|not_attempted')}) > 0)", "{{api}}")))
    d = d.with_panel(series(
        "Requests by verdict", "Zerocopy send requests per second by the kernel's verdict.", "reqps",
        query(f"sum by (verdict) ({requests()})", "{{verdict}}"), stacked=True))
    d = d.with_panel(series(
        "Copied requests by reason", "Why zerocopy requests were copied after all, and why the "
        "kernel never tried (not_attempted).", "reqps",
        query(f'sum by (reason) ({rate_of("zctrace_copy_fallbacks_total")})', "{{reason}}"),
        query(f'sum by (reason) ({rate_of("zctrace_zerocopy_not_attempted_total")})',
              "not attempted: {{reason}}"), stacked=True))
    d = d.with_panel(series(
        "Late-copied bytes by kernel caller", "Bytes copied late by skb_copy_ubufs, by the kernel "
        "function that asked (fentry/kprobe tiers only; all workloads).", "Bps",
        query(f'sum by (caller) (rate(zctrace_late_copy_bytes_total{{{SEL}}}[{RATE}]))', "{{caller}}"),
        stacked=True))
    d = d.with_panel(series(
        "Undecided requests", "Requests still waiting for a verdict: completions in flight, or "
        "(tracepoint tier) notifications the application has not read yet.", "short",
        query(f'sum by (api) ({gauge_of("zctrace_zerocopy_undecided_requests")})', "{{api}}")))
    d = d.with_panel(series(
        "Pinned bytes", "Bytes of zerocopy sends the kernel has not completed: user pages it still "
        "holds, charged to RLIMIT_MEMLOCK without CAP_IPC_LOCK (io_uring: until the notification "
        "CQE; MSG_ZEROCOPY: fentry/kprobe tiers only).", "bytes",
        query(f'sum by (comm) ({gauge_of("zctrace_zerocopy_pinned_bytes")})', "{{comm}}")))

    d = d.with_row(dashboard.Row("Workloads"))
    d = d.with_panel(most_copied_workloads())
    d = d.with_panel(series(
        "Copied share by workload (15 m, as the alert sees it)", "copied / (zerocopied + copied) "
        "per workload over 15 minutes, all APIs (recording rule zctrace:workload_copied_share:rate15m: "
        "needs dashboards/zctrace-rules.yml loaded); ZctraceWorkloadMostlyCopied fires above 50 % "
        "at 1 request/s or more.", "percentunit",
        query(f"topk(10, {gauge_of('zctrace:workload_copied_share:rate15m', SEL)})",
              "{{namespace}}/{{pod}}/{{container}} {{cgroup}}")))

    d = d.with_panel(table.Panel().title("Advice by workload").description(
        "Advice for each workload now (zctrace_advice, docs/advice.md): below_crossover (most bytes go in "
        "requests below the crossover this host measured: copying would cost less CPU), "
        "crossover_not_measured (run zctrace bench --suite crossover for its path), always_copied (a path "
        "that always copies), fixable_not_attempted (ENOBUFS or no SO_ZEROCOPY: a setting to change), "
        "notifications_late (optmem or RLIMIT_MEMLOCK at risk). `zctrace trace --json` on the host has the "
        "evidence.")
        .datasource(DS).height(8).span(24).targets(targets(query(
            f"max by (code, comm, {WORKLOAD}) ({gauge_of('zctrace_advice', SEL)})",
            fmt=PromQueryFormat.TABLE, instant=True)))
        .with_transformation(DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "Value": True}})))

    d = d.with_row(dashboard.Row("Processes"))
    d = d.with_panel(series(
        "Top processes by zerocopy bytes", "Bytes per second sent with zerocopy requests, by "
        "process name (the exporter keeps the top N names, the rest are `other`).", "Bps",
        query(f'topk(10, sum by (comm) ({rate_of("zctrace_zerocopy_bytes_total")}))', "{{comm}}")))
    d = d.with_panel(table.Panel().title("Copied or not attempted, by process").description(
        "Requests per second that were not zero-copy, by process name and verdict.")
        .datasource(DS).height(8).span(12).unit("reqps").targets(targets(query(
            f"topk(10, sum by (comm, verdict) ({requests('copied|not_attempted')}))",
            fmt=PromQueryFormat.TABLE, instant=True))))

    d = d.with_row(dashboard.Row("Notifications"))
    d = d.with_panel(heatmap.Panel().title("Notification latency").description(
        "Time from a send to its completion notification (fentry/kprobe tiers) or to the "
        "application reading it (tracepoint tier); all workloads.").datasource(DS).height(8).span(12)
        .calculate(False).y_axis(heatmap.YAxisConfig().unit("s")).targets(targets(query(
            f'sum by (le) (rate(zctrace_notification_latency_seconds_bucket{{{LSEL}}}[{RATE}]))',
            "{{le}}", fmt=PromQueryFormat.HEATMAP))))
    d = d.with_panel(series(
        "Notification latency p50 / p99", "Upper bounds of the log2 bucket holding the quantile.", "s",
        query(f'histogram_quantile(0.5, sum by (le, api) (rate(zctrace_notification_latency_seconds_bucket'
              f'{{{LSEL}}}[{RATE}])))', "p50 {{api}}"),
        query(f'histogram_quantile(0.99, sum by (le, api) (rate(zctrace_notification_latency_seconds_bucket'
              f'{{{LSEL}}}[{RATE}])))', "p99 {{api}}")))

    d = d.with_panel(series(
        "io_uring CQEs not reaped", "CQEs (completions and notifications) waiting in the CQ rings of "
        "io_uring zerocopy senders, and in the kernel's overflow list when a ring was full: an "
        "application that stopped reaping.", "short",
        query(f'sum by (comm) ({gauge_of("zctrace_io_uring_unreaped_cqes", SEL)})', "{{comm}}"),
        query(f'sum by (comm) ({gauge_of("zctrace_io_uring_overflowed_cqes", SEL)})', "overflow {{comm}}")))

    d = d.with_row(dashboard.Row("Receive"))
    received, mapped = "zctrace_tcp_zerocopy_receive_bytes_total", 'how="mapped"'
    d = d.with_panel(series(
        "TCP_ZEROCOPY_RECEIVE bytes", "Bytes handed over by getsockopt(TCP_ZEROCOPY_RECEIVE): mapped "
        "into the application (zero-copy), copied into its copy buffer, or skipped (left for a "
        "copying recv()).", "Bps",
        query(f'sum by (how) ({rate_of(received, base=SEL)})', "{{how}}"), stacked=True))
    d = d.with_panel(series(
        "TCP_ZEROCOPY_RECEIVE mapped share by process", "Share of received bytes mapped zero-copy, "
        "by process name.", "percentunit",
        query(f'sum by (comm) ({rate_of(received, mapped, base=SEL)}) / '
              f'(sum by (comm) ({rate_of(received, base=SEL)}) > 0)', "{{comm}}")))

    d = d.with_row(dashboard.Row("Probe health"))
    d = d.with_panel(stat.Panel().title("Probes down").description(
        "Attach points whose probe is not attached (zctrace_probe_up == 0).").datasource(DS)
        .height(6).span(6).targets(targets(query(f'count(zctrace_probe_up{{{SEL}}} == 0) or vector(0)',
                                                 instant=True))))
    d = d.with_panel(table.Panel().title("Probes").description("Every attach point, 1 = attached.")
                     .datasource(DS).height(6).span(18).targets(targets(query(
                         f'zctrace_probe_up{{{SEL}}}', fmt=PromQueryFormat.TABLE, instant=True))))
    d = d.with_panel(series(
        "Lost events", "Events the probes could not record (a BPF map full, a program skipped).", "short",
        query(f'sum by (cause) (increase(zctrace_lost_events_total{{{SEL}}}[{RATE}]))', "{{cause}}"),
        query(f'sum by (probe) (increase(zctrace_bpf_program_recursion_misses_total{{{SEL}}}[{RATE}]))',
              "recursion: {{probe}}"), width=8))
    d = d.with_panel(series(
        "BPF map fill", "Entries in use / capacity of the maps that drop new entries when full.",
        "percentunit",
        query(f'max by (map) (zctrace_bpf_map_entries{{{SEL}}} / zctrace_bpf_map_max_entries{{{SEL}}})',
              "{{map}}"), width=8))
    d = d.with_panel(series(
        "BPF program CPU", "CPU seconds per second spent in the probes (needs kernel.bpf_stats_enabled=1 "
        "or zctrace export --bpf-stats).", "percentunit",
        query(f'sum by (probe) (rate(zctrace_bpf_program_run_seconds_total{{{SEL}}}[{RATE}]))', "{{probe}}"),
        width=8))
    d = d.with_panel(table.Panel().title("Exporters").description(
        "Version, probe tier and kernel of each exporter; scrape time and memory.")
                     .datasource(DS).height(6).span(24).targets(targets(
                         query(f'zctrace_build_info{{{SEL}}}', fmt=PromQueryFormat.TABLE, instant=True),
                         query(f'zctrace_scrape_duration_seconds{{{SEL}}}', fmt=PromQueryFormat.TABLE,
                               instant=True),
                         query(f'process_resident_memory_bytes{{job="zctrace",{SEL}}}',
                               fmt=PromQueryFormat.TABLE, instant=True))))
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
