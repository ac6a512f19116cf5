"""Dashboards: the JSON lint, variable substitution, the check's decisions, exported names.

The check against a real Prometheus is tests/integration/test_dashboards.py; here the pure
parts, with a fake Prometheus API where the check asks for label values or query results.
"""

from __future__ import annotations

import copy
import re

import pytest

from observe_rt.export import PrometheusExporter
from observe_rt.export.probes import ProbeMetrics
from observe_rt.grafana.check import (
    DASHBOARDS_DIR,
    Intervals,
    check_dashboard,
    parse_seconds,
    resolve_variables,
)
from observe_rt.grafana.dashboard import (
    DashboardError,
    Variable,
    load_all,
    parse_label_values,
    queries,
    referenced,
    selection,
    substitute,
)
from observe_rt.grafana.lint import lint
from observe_rt.grafana.pictures import legend, scaled
from observe_rt.grafana.prometheus import SCRAPE_CONFIG, PromQLError, scrape_config
from observe_rt.model.snapshot import Snapshot

BOARDS = load_all(DASHBOARDS_DIR)
METRIC = re.compile(r"\b((?:container|observe_rt)_[a-z0-9_]+)")


def exported_names() -> set[str]:
    """Every sample name /metrics can carry, from the exporters' own declarations."""
    families = list(PrometheusExporter(Snapshot).registry.collect())
    families += ProbeMetrics(probes=None).describe()
    names = set()
    for family in families:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


# --- the dashboards in the repository ------------------------------------------------------


def test_three_dashboards():
    assert sorted(BOARDS) == ["ebpf-insights", "node-overview", "pod-detail"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_lints_clean(name):
    assert lint(BOARDS[name]) == []


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_metric_a_panel_names_is_exported(name):
    names = {m for q in queries(BOARDS[name]) for m in METRIC.findall(q.expr)}
    assert names, name
    assert names - exported_names() == set()


@pytest.mark.parametrize(
    "name, metrics",
    [
        ("node-overview", ["observe_rt_containers", "container_cpu_usage_seconds_total",
                           "container_memory_working_set_bytes",
                           "container_cpu_cfs_throttled_periods_total",
                           "container_oom_events_total", "observe_rt_probe_up",
                           "observe_rt_probe_events_lost_total",
                           "observe_rt_cri_request_duration_seconds_bucket",
                           "observe_rt_cri_request_errors_total",
                           "observe_rt_image_pull_duration_seconds_count"]),
        ("pod-detail", ["container_spec_cpu_quota", "container_spec_memory_limit_bytes",
                        "container_network_receive_bytes_total", "container_processes",
                        "observe_rt_container_restarts", "container_oom_events_total"]),
        ("ebpf-insights", ["observe_rt_container_syscalls_total",
                           "observe_rt_container_syscall_errors_total",
                           "observe_rt_container_syscall_duration_seconds_bucket",
                           "observe_rt_container_tcp_connections_total",
                           "observe_rt_container_tcp_sent_bytes_total",
                           "observe_rt_container_tcp_retransmits_total",
                           "observe_rt_container_tcp_resets_total"]),
    ],
)  # fmt: skip
def test_the_issue_panels_are_there(name, metrics):
    exprs = " ".join(q.expr for q in queries(BOARDS[name]))
    assert [m for m in metrics if m not in exprs] == []


def test_ebpf_dashboard_has_a_latency_heatmap():
    (heatmap,) = [q for q in queries(BOARDS["ebpf-insights"]) if q.panel_type == "heatmap"]
    assert heatmap.format == "heatmap" and "by (le)" in heatmap.expr


# --- lint ----------------------------------------------------------------------------------


def _board() -> dict:
    return copy.deepcopy(BOARDS["pod-detail"])


def _panel(board: dict, index: int = 1) -> dict:
    return board["panels"][index]


def test_lint_duplicate_ids():
    board = _board()
    _panel(board, 2)["id"] = _panel(board, 1)["id"]
    assert any("used by 2 panels" in p for p in lint(board))


def test_lint_overlap_and_width():
    board = _board()
    _panel(board, 2)["gridPos"] = dict(_panel(board, 1)["gridPos"])
    _panel(board, 3)["gridPos"] = {"x": 20, "y": 200, "w": 8, "h": 2}
    problems = lint(board)
    assert any("overlaps" in p for p in problems)
    assert any("wider than 24" in p for p in problems)


def test_lint_unused_and_undefined_variables():
    board = _board()
    board["templating"]["list"].append(
        {"type": "query", "name": "node", "query": "label_values(instance)"}
    )
    _panel(board)["targets"][0]["expr"] += " + on() vector($cluster)"
    problems = lint(board)
    assert "variable $node is never used" in problems
    assert "$cluster is used but not defined" in problems


def test_lint_hard_coded_datasource_and_missing_variables():
    board = _board()
    _panel(board)["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    board["templating"]["list"] = [
        v for v in board["templating"]["list"] if v["name"] != "pod"
    ]  # fmt: skip
    problems = lint(board)
    assert any("datasource must be the $datasource variable" in p for p in problems)
    assert "no $pod variable" in problems


def test_lint_old_schema():
    board = _board()
    board["schemaVersion"] = 16
    assert any("schemaVersion 16" in p for p in lint(board))


# --- substitution --------------------------------------------------------------------------


def test_substitute_every_reference_style():
    values = {"ns": "(a|b)", "__rate_interval": "1m"}
    expr = 'rate(x{n=~"$ns", m=~"${ns}", o=~"[[ns]]", p=~"${ns:regex}"}[$__rate_interval])'
    assert substitute(expr, values) == 'rate(x{n=~"(a|b)", m=~"(a|b)", o=~"(a|b)", ' + \
        'p=~"(a|b)"}[1m])'  # fmt: skip
    assert referenced(expr) == {"ns", "__rate_interval"}
    with pytest.raises(DashboardError, match=r"unknown variable \$pod"):
        substitute('x{pod="$pod"}', values)


def test_selection_of_all_values():
    multi = Variable("pod", "query", "", multi=True, include_all=True)
    assert selection(multi, ["web-1", "db.0"]) == r"(web-1|db\\.0)"
    assert selection(multi, ["only"]) == "only"
    custom = Variable("pod", "query", "", include_all=True, all_value=".*")
    assert selection(custom, ["a", "b"]) == ".*"


def test_parse_label_values():
    assert parse_label_values("label_values(namespace)") == (None, "namespace")
    query = 'label_values(up{namespace=~"$namespace"}, pod)'
    assert parse_label_values(query) == ('up{namespace=~"$namespace"}', "pod")
    with pytest.raises(DashboardError, match="only label_values"):
        parse_label_values("query_result(up)")


def test_intervals_and_durations():
    values = Intervals(scrape_seconds=15, range_seconds=3600).values()
    assert values["__rate_interval"] == "60s" and values["__range"] == "3600s"
    assert [parse_seconds(t) for t in ("15s", "2m", "1h")] == [15, 120, 3600]
    with pytest.raises(ValueError):
        parse_seconds("15")


# --- the check's decisions, with a fake Prometheus -------------------------------------------


class FakeAPI:
    """Label values and query results from dicts; records what was asked."""

    def __init__(self, labels: dict, results: dict | None = None, default=None) -> None:
        self.labels, self.results, self.default = labels, results or {}, default
        self.asked: list = []

    def label_values(self, label, match=None, start=None, end=None):
        self.asked.append((label, match))
        return self.labels.get(label, [])

    def query(self, expr, at=None):
        self.asked.append(expr)
        result = self.results.get(expr, self.default)
        if isinstance(result, Exception):
            raise result
        return result or []


def test_variables_resolve_in_order_with_all_selected():
    api = FakeAPI({"namespace": ["shop", "db"], "pod": ["web-0"]})
    values, problems = resolve_variables(api, BOARDS["pod-detail"], Intervals(), 1e9)
    assert problems == []
    assert values["namespace"] == "(db|shop)" and values["pod"] == "web-0"
    assert ("pod", 'container_cpu_usage_seconds_total{namespace=~"(db|shop)"}') in api.asked


def test_a_variable_without_values_fails_the_dashboard():
    api = FakeAPI({"namespace": ["shop"]}, default=[{"metric": {}, "value": [0, "1"]}])
    report = check_dashboard(api, "pod-detail", BOARDS["pod-detail"], Intervals(), at=1e9)
    assert not report.ok
    assert any("variable $pod" in f and "no values" in f for f in report.failures)


def test_empty_and_rejected_queries_fail_and_name_the_panel():
    board = BOARDS["pod-detail"]
    api = FakeAPI({"namespace": ["shop"], "pod": ["web"]}, default=[{"metric": {}, "value": []}])
    good = check_dashboard(api, "pod-detail", board, Intervals(), at=1e9)
    assert good.ok and all(o.series == 1 for o in good.outcomes)
    first, second = good.outcomes[0].expr, good.outcomes[1].expr
    api.results = {first: [], second: PromQLError("bad_data: parse error")}
    bad = check_dashboard(api, "pod-detail", board, Intervals(), at=1e9)
    assert len(bad.failures) == 2
    assert "no series" in bad.failures[0] and "'CPU usage vs limit' target A" in bad.failures[0]
    assert "Prometheus rejected the query: bad_data" in bad.failures[1]


# --- scrape config and pictures' pure helpers -----------------------------------------------


def test_scrape_config_points_the_deploy_file_at_a_target(tmp_path):
    text = scrape_config("127.0.0.1:40001", "2s")
    assert '"127.0.0.1:40001"' in text and "scrape_interval: 2s" in text
    assert "job_name: observe-rt" in text
    assert text.replace('"127.0.0.1:40001"', '"127.0.0.1:9464"').replace(
        "scrape_interval: 2s", "scrape_interval: 15s"
    ) == SCRAPE_CONFIG.read_text()  # fmt: skip
    broken = tmp_path / "prometheus.yml"
    broken.write_text("scrape_configs: []\n")
    with pytest.raises(ValueError, match="expected exactly one"):
        scrape_config("127.0.0.1:1", "1s", broken)


def test_legend_and_units():
    assert legend("{{pod}}/{{container}}", {"pod": "web", "container": "app"}) == "web/app"
    assert legend("", {"__name__": "up", "job": "x"}) == "job=x"
    assert scaled(3 * 1024 * 1024, "bytes") == "3 MiB"
    assert scaled(0.0042, "s") == "4.2 ms"
    assert scaled(0.25, "percentunit") == "25%"
    assert scaled(float("nan"), "short") == "n/a"
