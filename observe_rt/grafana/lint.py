"""Static checks of a dashboard's JSON: the mistakes Grafana itself lets through silently.

    problems = lint(board)     # [] when the dashboard is fine; each item names the panel

- panel ids are unique (Grafana links, alerts and repeats address panels by id);
- every panel has a gridPos inside the 24-column grid, and no two panels overlap;
- a Prometheus data source variable exists and every panel and target uses it (no hard-coded
  data source uid, which breaks on import into another Grafana);
- every variable is used somewhere, every variable a query names is defined;
- the namespace and pod variables exist; every target has a refId and an expression.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from .dashboard import panels, referenced, variables

GRID_COLUMNS = 24
BUILTIN_VARIABLES = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
)
REQUIRED_VARIABLES = ("namespace", "pod")
MIN_SCHEMA_VERSION = 39  # Grafana 10.4+; the classic model Grafana exports today is 41


def lint(board: Mapping) -> list[str]:
    problems = _header(board)
    problems += _ids(board)
    problems += _grid(board)
    problems += _datasources(board)
    problems += _variables(board)
    return problems


def _name(panel: Mapping) -> str:
    return f"panel {panel.get('id')} {panel.get('title', '')!r}"


def _header(board: Mapping) -> list[str]:
    problems = [f"dashboard has no {key}" for key in ("uid", "title") if not board.get(key)]
    version = board.get("schemaVersion", 0)
    if not isinstance(version, int) or version < MIN_SCHEMA_VERSION:
        problems.append(f"schemaVersion {version!r}: expected {MIN_SCHEMA_VERSION} or later")
    return problems


def _ids(board: Mapping) -> list[str]:
    counts = Counter(p.get("id") for p in panels(board))
    problems = [f"panel id {i!r} used by {n} panels" for i, n in counts.items() if n > 1]
    problems += [f"panel {p.get('title', '')!r} has no id" for p in panels(board) if "id" not in p]
    return problems


def _cells(panel: Mapping) -> set[tuple[int, int]]:
    pos = panel["gridPos"]
    return {
        (x, y)
        for x in range(pos["x"], pos["x"] + pos["w"])
        for y in range(pos["y"], pos["y"] + pos["h"])
    }


def _grid(board: Mapping) -> list[str]:
    """Collapsed rows keep their panels off the grid, so only top-level panels are placed."""
    problems, taken = [], {}
    for panel in board.get("panels", []):
        pos = panel.get("gridPos")
        if not isinstance(pos, dict) or not all(
            isinstance(pos.get(k), int) for k in ("x", "y", "w", "h")
        ):
            problems.append(f"{_name(panel)}: gridPos needs integer x, y, w, h")
            continue
        if pos["x"] < 0 or pos["y"] < 0 or pos["w"] < 1 or pos["h"] < 1:
            problems.append(f"{_name(panel)}: gridPos {pos} has a negative or empty extent")
            continue
        if pos["x"] + pos["w"] > GRID_COLUMNS:
            problems.append(f"{_name(panel)}: gridPos {pos} is wider than {GRID_COLUMNS} columns")
        for cell in _cells(panel):
            if cell in taken:
                problems.append(f"{_name(panel)} overlaps {_name(taken[cell])}")
                break
            taken[cell] = panel
    return problems


def _uses_variable(ref, name: str) -> bool:
    uid = ref.get("uid", "") if isinstance(ref, dict) else str(ref or "")
    return referenced(uid) == {name}


def _datasources(board: Mapping) -> list[str]:
    sources = [v for v in variables(board) if v.type == "datasource"]
    if not any(v.query == "prometheus" for v in sources):
        return ["no data source variable of type prometheus"]
    name = next(v.name for v in sources if v.query == "prometheus")
    problems = []
    for panel in panels(board):
        if panel.get("type") == "row":
            continue
        if not _uses_variable(panel.get("datasource"), name):
            problems.append(f"{_name(panel)}: datasource must be the ${name} variable")
        for target in panel.get("targets", []):
            if not _uses_variable(target.get("datasource", panel.get("datasource")), name):
                problems.append(f"{_name(panel)} target {target.get('refId')}: datasource ${name}")
            if not target.get("refId") or not str(target.get("expr", "")).strip():
                problems.append(f"{_name(panel)}: a target without refId or expr")
    return problems


def _texts(board: Mapping) -> list[str]:
    """Where a variable can be used: queries, titles, other variables' queries, data sources."""
    texts = [v.query for v in variables(board)]
    for panel in panels(board):
        texts.append(panel.get("title", ""))
        texts.append(str(panel.get("datasource", "")))
        texts += [t.get("expr", "") for t in panel.get("targets", [])]
        texts += [t.get("legendFormat", "") for t in panel.get("targets", [])]
    return texts


def _variables(board: Mapping) -> list[str]:
    defined = {v.name for v in variables(board)}
    problems = [f"no ${name} variable" for name in REQUIRED_VARIABLES if name not in defined]
    used: set[str] = set()
    for text in _texts(board):
        used |= referenced(text)
    problems += [f"variable ${name} is never used" for name in sorted(defined - used)]
    unknown = used - defined - BUILTIN_VARIABLES
    problems += [f"${name} is used but not defined" for name in sorted(unknown)]
    return problems
