"""Evaluate every panel query of the dashboards against a real Prometheus, as Grafana would.

    python -m observe_rt.grafana --prometheus http://127.0.0.1:9090 [--scrape-interval 15s]

For each dashboard: lint its JSON (lint.py); resolve its query variables in order through the
label values API (a variable with no values is a failure: every panel under it would be
empty); select "All" of each, as the dashboards do by default; then run every target with the
variables and built-in intervals substituted. A target fails when Prometheus rejects it or when
it returns no series, which is what a panel naming a metric the daemon does not export does.
Exit status 0 when every dashboard passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .dashboard import (
    DashboardError,
    Query,
    load_all,
    parse_label_values,
    queries,
    selection,
    substitute,
    variables,
)
from .lint import lint
from .prometheus import PrometheusAPI, PromQLError

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"


def parse_seconds(text: str) -> int:
    """ "15s", "2m", "1h" -> seconds (the durations Grafana and Prometheus configs use)."""
    units = {"s": 1, "m": 60, "h": 3600}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"duration {text!r}: expected e.g. 15s, 2m or 1h")
    return int(text[:-1]) * units[text[-1]]


@dataclass(frozen=True)
class Intervals:
    """Grafana's built-ins: $__rate_interval is four scrape intervals at the least."""

    scrape_seconds: int = 15
    range_seconds: int = 3600

    def values(self) -> dict[str, str]:
        return {
            "__interval": f"{self.scrape_seconds}s",
            "__interval_ms": str(self.scrape_seconds * 1000),
            "__rate_interval": f"{4 * self.scrape_seconds}s",
            "__range": f"{self.range_seconds}s",
            "__range_s": str(self.range_seconds),
            "__range_ms": str(self.range_seconds * 1000),
        }


@dataclass
class Outcome:
    """One query evaluated: `problem` is empty when it returned series."""

    query: Query
    expr: str  # with the variables substituted
    series: int = 0
    problem: str = ""


@dataclass
class Report:
    dashboard: str
    problems: list[str] = field(default_factory=list)  # lint and variable failures
    outcomes: list[Outcome] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # the variables as substituted

    @property
    def failures(self) -> list[str]:
        failed = [f"{o.query.where}: {o.problem}\n    {o.expr}" for o in self.outcomes if o.problem]
        return [*self.problems, *failed]

    @property
    def ok(self) -> bool:
        return not self.failures


def resolve_variables(api: PrometheusAPI, board: Mapping, intervals: Intervals, at: float):
    """({name: text to substitute}, [problems]) with every query variable set to All."""
    values, problems = intervals.values(), []
    start = at - intervals.range_seconds
    for var in variables(board):
        if var.type == "datasource":
            values[var.name] = var.name  # only ever a data source uid, never in PromQL
            continue
        if var.type != "query":
            problems.append(f"variable ${var.name}: type {var.type!r} is not checked")
            continue
        try:
            match, label = parse_label_values(var.query)
            match = substitute(match, values) if match else None
            found = api.label_values(label, match, start=start, end=at)
        except (DashboardError, PromQLError) as err:
            problems.append(f"variable ${var.name}: {err}")
            continue
        if not found:
            problems.append(f"variable ${var.name}: {var.query} returned no values")
            continue
        values[var.name] = selection(var, sorted(found))
    return values, problems


def evaluate(api: PrometheusAPI, query: Query, values: Mapping[str, str], at: float) -> Outcome:
    try:
        expr = substitute(query.expr, values)
    except DashboardError as err:
        return Outcome(query, query.expr, problem=str(err))
    try:
        series = api.query(expr, at)
    except PromQLError as err:
        return Outcome(query, expr, problem=f"Prometheus rejected the query: {err}")
    if not series:
        return Outcome(query, expr, problem="no series (a metric the daemon does not export?)")
    return Outcome(query, expr, series=len(series))


def check_dashboard(api: PrometheusAPI, name: str, board: Mapping, intervals: Intervals,
                    at: float | None = None) -> Report:  # fmt: skip
    at = time.time() if at is None else at
    report = Report(name, problems=[f"lint: {p}" for p in lint(board)])
    values, problems = resolve_variables(api, board, intervals, at)
    report.values = values
    report.problems += problems
    report.outcomes = [evaluate(api, q, values, at) for q in queries(board)]
    return report


def check_all(api: PrometheusAPI, boards: Mapping[str, Mapping], intervals: Intervals,
              at: float | None = None) -> list[Report]:  # fmt: skip
    return [check_dashboard(api, name, board, intervals, at) for name, board in boards.items()]


def format_reports(reports: list[Report]) -> str:
    lines = []
    for report in reports:
        good = sum(1 for o in report.outcomes if not o.problem)
        state = "OK  " if report.ok else "FAIL"
        lines.append(f"{state} {report.dashboard}: {good}/{len(report.outcomes)} queries")
        lines += [f"  {failure}" for failure in report.failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m observe_rt.grafana",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboards", default=str(DASHBOARDS_DIR), help="directory of *.json")
    parser.add_argument("--scrape-interval", default="15s", help="of the observe-rt job")
    parser.add_argument("--range", default="1h", help="time range for $__range and variables")
    args = parser.parse_args(argv)
    try:
        intervals = Intervals(parse_seconds(args.scrape_interval), parse_seconds(args.range))
        boards = load_all(args.dashboards)
    except (ValueError, DashboardError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reports = check_all(PrometheusAPI(args.prometheus), boards, intervals)
    print(format_reports(reports))
    return 0 if all(r.ok for r in reports) else 1
