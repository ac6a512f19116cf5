"""Render a dashboard's panels as one PNG from Prometheus data, laid out on Grafana's grid.

    render(api, board, values, start, end, step, "dashboards/pictures/node-overview.png")

`values` are the substituted variables (check.resolve_variables). Time series and heatmaps use
range queries over [start, end]; stat and bar gauge panels use an instant query at `end`.
Needs matplotlib (the optional "pictures" extra); Grafana is not needed to see the dashboards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime

from .dashboard import substitute
from .prometheus import PrometheusAPI

CELL_WIDTH, CELL_HEIGHT = 0.9, 0.42  # inches per grid column and per grid row
TOP = 0.6  # inches above the grid for the dashboard's title
MAX_LEGEND = 8
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend(template: str, labels: Mapping[str, str]) -> str:
    text = _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def scaled(value: float, unit: str) -> str:
    """A value in Grafana's unit, short: 12.5 MiB, 3.2 ms, 45%, 0.21 cores."""
    if math.isnan(value):
        return "n/a"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for prefix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or prefix == "TiB":
                return f"{value:.3g} {prefix}{suffix}"
            value /= 1024
    if unit == "s":
        for factor, name in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(value) >= factor or name == "ns":
                return f"{value / factor:.3g} {name}"
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    per_second = {"ops": "/s", "reqps": " req/s", "pps": " p/s", "cores": " cores"}
    return f"{value:.3g}{per_second.get(unit, '')}"


def _axes(fig, pos: Mapping):
    """An axes inside the panel's grid cells, with room for its title and tick labels."""
    width, height = fig.get_size_inches()
    left = (pos["x"] * CELL_WIDTH + 0.75) / width
    bottom = 1 - (TOP + (pos["y"] + pos["h"]) * CELL_HEIGHT - 0.35) / height
    ax_width = (pos["w"] * CELL_WIDTH - 0.95) / width
    ax_height = (pos["h"] * CELL_HEIGHT - 0.8) / height
    return fig.add_axes((left, bottom, ax_width, ax_height))


def _timeseries(ax, api, panel, values, window) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    drawn = 0
    for target in panel.get("targets", []):
        for series in api.query_range(substitute(target["expr"], values), *window):
            times = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
            points = [float(v) for _, v in series["values"]]
            label = legend(target.get("legendFormat", ""), series["metric"])
            style = "--" if label.endswith(" limit") else "-"  # as the dashboards' override
            ax.plot(times, points, style, linewidth=1.2,
                    label=label if drawn < MAX_LEGEND else None)  # fmt: skip
            drawn += 1
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: scaled(v, unit)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=6, loc="upper left", framealpha=0.6)


def _heatmap(ax, api, panel, values, window) -> None:
    """Cumulative le buckets -> per-bucket rates, one column per step."""
    target = panel["targets"][0]
    series = api.query_range(substitute(target["expr"], values), *window)
    bounds = sorted(series, key=lambda s: float(s["metric"].get("le", "inf")))
    if not bounds:
        return
    rows = [[float(v) for _, v in s["values"]] for s in bounds]
    width = min(len(r) for r in rows)
    matrix = [[(rows[i][t] - (rows[i - 1][t] if i else 0)) for t in range(width)]
              for i in range(len(rows))]  # fmt: skip
    ax.imshow(matrix, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
    labels = [scaled(float(s["metric"]["le"]), "s") for s in bounds]
    step = max(1, len(labels) // 8)
    ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=6)
    ax.set_xlabel("time →", fontsize=7)
    ax.set_xticks([])


def _instant(ax, api, panel, values, end) -> None:
    """stat and bargauge: the latest value of each series as a horizontal bar."""
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    mappings = {}
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        mappings |= {k: v.get("text", k) for k, v in mapping.get("options", {}).items()}
    names, numbers = [], []
    for target in panel.get("targets", []):
        for series in api.query(substitute(target["expr"], values), end):
            names.append(legend(target.get("legendFormat", ""), series["metric"]))
            numbers.append(float(series["value"][1]))
    bars = ax.barh(range(len(names)), numbers, color="#73bf69")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    for bar, number in zip(bars, numbers, strict=True):
        text = mappings.get(f"{number:g}", scaled(number, unit))
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {text}",
                va="center", fontsize=7)  # fmt: skip
    ax.set_xticks([])
    ax.margins(x=0.25)


def render(api: PrometheusAPI, board: Mapping, values: Mapping[str, str], start: float,
           end: float, step: float, path: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in top)
    fig = plt.figure(figsize=(24 * CELL_WIDTH, TOP + rows * CELL_HEIGHT + 0.2), dpi=72)
    fig.suptitle(board.get("title", ""), fontsize=15, weight="bold", x=0.01, ha="left")
    window = (start, end, step)
    for panel in top:
        pos = panel["gridPos"]
        if panel.get("type") == "row":
            y = 1 - (TOP + pos["y"] * CELL_HEIGHT + 0.1) / fig.get_size_inches()[1]
            fig.text(0.01, y, panel.get("title", ""), fontsize=11, weight="bold", va="top")
            continue
        ax = _axes(fig, pos)
        ax.set_title(panel.get("title", ""), fontsize=9, loc="left")
        if panel.get("type") == "heatmap":
            _heatmap(ax, api, panel, values, window)
        elif panel.get("type") in ("stat", "bargauge"):
            _instant(ax, api, panel, values, end)
        else:
            _timeseries(ax, api, panel, values, window)
    fig.savefig(path)
    plt.close(fig)
