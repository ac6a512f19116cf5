"""Reading Grafana dashboards (classic JSON model): panels, their PromQL targets, variables.

    board = load("dashboards/node-overview.json")
    for query in queries(board):          # every target of every panel, rows included
        expr = substitute(query.expr, {"namespace": "(default|kube-system)"}, RATE_INTERVALS)

Substitution follows Grafana's rules for the Prometheus data source: `$name`, `${name}`,
`${name:fmt}` and `[[name]]` take the variable's value; a multi-value selection is the regex
`(a|b)` of its escaped values; `$__rate_interval`, `$__interval` and `$__range` are the built-in
intervals, which the caller supplies (they depend on the scrape interval and the time range).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: $var, ${var}, ${var:format}, [[var]]; group "name" is the variable's name.
VARIABLE_REF = re.compile(
    r"\$\{(?P<braced>\w+)(?::\w+)?\}|\[\[(?P<bracketed>\w+)(?::\w+)?\]\]|\$(?P<plain>\w+)"
)
#: label_values(label) or label_values(metric{selector}, label)
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$")
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")


class DashboardError(ValueError):
    """A dashboard file that cannot be read as a Grafana dashboard."""


@dataclass(frozen=True)
class Query:
    """One PromQL target of one panel."""

    dashboard: str  # the dashboard's uid
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    legend: str = ""
    format: str = "time_series"  # time_series | heatmap | table

    @property
    def where(self) -> str:
        return f"{self.dashboard} panel {self.panel_id} {self.panel_title!r} target {self.ref_id}"


@dataclass(frozen=True)
class Variable:
    name: str
    type: str  # datasource | query | custom | constant | interval | textbox ...
    query: str  # for "query": the label_values(...) definition
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


def load(path: str | Path) -> dict:
    try:
        board = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DashboardError(f"{path}: {err}") from None
    if not isinstance(board, dict) or not isinstance(board.get("panels"), list):
        raise DashboardError(f"{path}: not a Grafana dashboard (no 'panels' list)")
    return board


def load_all(directory: str | Path) -> dict[str, dict]:
    """{file stem: dashboard} for every *.json in `directory`, sorted by name."""
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise DashboardError(f"{directory}: no dashboard JSON files")
    return {path.stem: load(path) for path in files}


def panels(board: Mapping) -> Iterator[dict]:
    """Every panel, including the panels folded inside collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", []) if panel.get("type") == "row" else ()


def queries(board: Mapping) -> Iterator[Query]:
    uid = board.get("uid", "?")
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield Query(
                dashboard=uid,
                panel_id=panel.get("id", -1),
                panel_title=panel.get("title", ""),
                panel_type=panel.get("type", ""),
                ref_id=target.get("refId", ""),
                expr=target.get("expr", ""),
                legend=target.get("legendFormat", ""),
                format=target.get("format", "time_series"),
            )


def _query_text(raw) -> str:
    return raw.get("query", "") if isinstance(raw, dict) else str(raw or "")


def variables(board: Mapping) -> list[Variable]:
    out = []
    for var in board.get("templating", {}).get("list", []):
        out.append(
            Variable(
                name=var.get("name", ""),
                type=var.get("type", ""),
                query=_query_text(var.get("query")),
                multi=bool(var.get("multi")),
                include_all=bool(var.get("includeAll")),
                all_value=var.get("allValue") or None,
            )
        )
    return out


def referenced(text: str) -> set[str]:
    """Names of the variables `text` refers to (built-ins like $__rate_interval included)."""
    return {next(g for g in m.groups() if g) for m in VARIABLE_REF.finditer(text)}


def regex_escape(value: str) -> str:
    """Escape a value for a PromQL =~ matcher, as Grafana does for multi-value variables."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value)


def selection(var: Variable, values: list[str]) -> str:
    """The text Grafana puts in a query when every value is selected ("All")."""
    if var.include_all and var.all_value is not None:
        return var.all_value
    escaped = [regex_escape(v) for v in values]
    if len(escaped) == 1:
        return escaped[0]
    return "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace every variable reference in `expr`; an unknown one raises DashboardError."""

    def one(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise DashboardError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE_REF.sub(one, expr)


def parse_label_values(query: str) -> tuple[str | None, str]:
    """label_values(...) -> (series selector or None, label name)."""
    found = LABEL_VALUES.match(query)
    if not found:
        raise DashboardError(f"variable query {query!r}: only label_values(...) is supported")
    return found.group("match"), found.group("label")
