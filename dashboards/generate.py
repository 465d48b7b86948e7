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

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "zctrace.json"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"


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


def requests(verdicts: str = "") -> str:
    """The requests counter of the selected hosts, for verdicts matching a regex."""
    return f'zctrace_zerocopy_requests_total{{{SEL}' + (f',verdict=~"{verdicts}"}}' if verdicts else "}")


def build() -> dict:
    decided = requests("zerocopied|copied|not_attempted")
    d = (dashboard.Dashboard("zctrace: zerocopy sends")
         .uid("zctrace-zerocopy")
         .description("Were the zerocopy sends (MSG_ZEROCOPY, io_uring SEND_ZC) really zero-copy? "
                      "Metrics from `zctrace export`.")
         .tags(["zctrace", "ebpf", "network"])
         .time("now-1h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR)
         .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
         .with_variable(dashboard.QueryVariable("instance").label("Host").datasource(DS)
                        .query("label_values(zctrace_build_info, instance)")
                        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                        .multi(True).include_all(True).all_value(".*")))

    d = d.with_row(dashboard.Row("Verdicts"))
    d = d.with_panel(series(
        "Zerocopy ratio", "Share of zerocopy requests the kernel really sent without a copy "
        "(zerocopied / (zerocopied + copied + not_attempted)).", "percentunit",
        query(f"sum by (api) (rate({requests('zerocopied')}[{RATE}])) / "
              f"(sum by (api) (rate({decided}[{RATE}])) > 0)", "{{api}}")))
    d = d.with_panel(series(
        "Requests by verdict", "Zerocopy send requests per second by the kernel's verdict.", "reqps",
        query(f"sum by (verdict) (rate({requests()}[{RATE}]))", "{{verdict}}"), stacked=True))
    d = d.with_panel(series(
        "Copied requests by reason", "Why zerocopy requests were copied after all, and why the "
        "kernel never tried (not_attempted).", "reqps",
        query(f'sum by (reason) (rate(zctrace_copy_fallbacks_total{{{SEL}}}[{RATE}]))', "{{reason}}"),
        query(f'sum by (reason) (rate(zctrace_zerocopy_not_attempted_total{{{SEL}}}[{RATE}]))',
              "not attempted: {{reason}}"), stacked=True))
    d = d.with_panel(series(
        "Late-copied bytes by kernel caller", "Bytes copied late by skb_copy_ubufs, by the kernel "
        "function that asked (fentry/kprobe tiers only).", "Bps",
        query(f'sum by (caller) (rate(zctrace_late_copy_bytes_total{{{SEL}}}[{RATE}]))', "{{caller}}"),
        stacked=True))
    d = d.with_panel(series(
        "Undecided requests", "Requests still waiting for a verdict: completions in flight, or "
        "(tracepoint tier) notifications the application has not read yet.", "short",
        query(f'sum by (api) (zctrace_zerocopy_undecided_requests{{{SEL}}})', "{{api}}")))
    d = d.with_panel(series(
        "Pinned bytes", "Bytes of zerocopy sends the kernel has not completed: user pages it still "
        "holds, charged to RLIMIT_MEMLOCK without CAP_IPC_LOCK (io_uring: until the notification "
        "CQE; MSG_ZEROCOPY: fentry/kprobe tiers only).", "bytes",
        query(f'sum by (comm) (zctrace_zerocopy_pinned_bytes{{{SEL}}})', "{{comm}}")))

    d = d.with_row(dashboard.Row("Processes"))
    d = d.with_panel(series(
        "Top processes by zerocopy bytes", "Bytes per second sent with zerocopy requests, by "
        "process name (the exporter keeps the top N names, the rest are `other`).", "Bps",
        query(f'topk(10, sum by (comm) (rate(zctrace_zerocopy_bytes_total{{{SEL}}}[{RATE}])))', "{{comm}}")))
    d = d.with_panel(table.Panel().title("Copied or not attempted, by process").description(
        "Requests per second that were not zero-copy, by process name and verdict.")
        .datasource(DS).height(8).span(12).unit("reqps").targets(targets(query(
            f"topk(10, sum by (comm, verdict) (rate({requests('copied|not_attempted')}[{RATE}])))",
            fmt=PromQueryFormat.TABLE, instant=True))))

    d = d.with_row(dashboard.Row("Notifications"))
    d = d.with_panel(heatmap.Panel().title("Notification latency").description(
        "Time from a send to its completion notification (fentry/kprobe tiers) or to the "
        "application reading it (tracepoint tier).").datasource(DS).height(8).span(12)
        .calculate(False).y_axis(heatmap.YAxisConfig().unit("s")).targets(targets(query(
            f'sum by (le) (rate(zctrace_notification_latency_seconds_bucket{{{SEL}}}[{RATE}]))',
            "{{le}}", fmt=PromQueryFormat.HEATMAP))))
    d = d.with_panel(series(
        "Notification latency p50 / p99", "Upper bounds of the log2 bucket holding the quantile.", "s",
        query(f'histogram_quantile(0.5, sum by (le, api) (rate(zctrace_notification_latency_seconds_bucket'
              f'{{{SEL}}}[{RATE}])))', "p50 {{api}}"),
        query(f'histogram_quantile(0.99, sum by (le, api) (rate(zctrace_notification_latency_seconds_bucket'
              f'{{{SEL}}}[{RATE}])))', "p99 {{api}}")))

    d = d.with_panel(series(
        "io_uring CQEs not reaped", "CQEs (completions and notifications) waiting in the CQ rings of "
        "io_uring zerocopy senders, and in the kernel's overflow list when a ring was full: an "
        "application that stopped reaping.", "short",
        query(f'sum by (comm) (zctrace_io_uring_unreaped_cqes{{{SEL}}})', "{{comm}}"),
        query(f'sum by (comm) (zctrace_io_uring_overflowed_cqes{{{SEL}}})', "overflow {{comm}}")))

    d = d.with_row(dashboard.Row("Receive"))
    d = d.with_panel(series(
        "TCP_ZEROCOPY_RECEIVE bytes", "Bytes handed over by getsockopt(TCP_ZEROCOPY_RECEIVE): mapped "
        "into the application (zero-copy), copied into its copy buffer, or skipped (left for a "
        "copying recv()).", "Bps",
        query(f'sum by (how) (rate(zctrace_tcp_zerocopy_receive_bytes_total{{{SEL}}}[{RATE}]))', "{{how}}"),
        stacked=True))
    d = d.with_panel(series(
        "TCP_ZEROCOPY_RECEIVE mapped share by process", "Share of received bytes mapped zero-copy, "
        "by process name.", "percentunit",
        query(f'sum by (comm) (rate(zctrace_tcp_zerocopy_receive_bytes_total{{{SEL},how="mapped"}}[{RATE}])) / '
              f'(sum by (comm) (rate(zctrace_tcp_zerocopy_receive_bytes_total{{{SEL}}}[{RATE}])) > 0)', "{{comm}}")))

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
