"""What the benchmarks (oci, pull, cri) share: options and the command line that reproduces a
run, the run itself (root check, SIGTERM taken like Ctrl-C, JSON or tables), the progress bar,
the rich tables, report figures, the interleaved driver loop and clean-up helpers.

Imported at every `observe-rt` start (through the commands' registration), so rich is imported
only inside the functions that draw something.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Self

from observe_rt.bench.stats import summarize
from observe_rt.errors import FailedPrecondition

# --- options and the command line ----------------------------------------------------------


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


@dataclass(frozen=True)
class Option:
    """One benchmark option: its help ends in "(default D)", and the command line that
    reproduces a run names it when it differs from the default (or `always`)."""

    flag: str
    kind: Callable[[str], object]
    default: object
    text: str
    always: bool = False
    show: Callable[[object], str] = str  # the value as the command line spells it

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


def add_benchmark(benchmarks, name: str, text: str, options: Sequence[Option], func) -> None:
    """`observe-rt bench NAME`: its options, --json, and the function that runs it."""
    parser = benchmarks.add_parser(name, help=text)
    for option in options:
        shown = option.show(option.default)
        parser.add_argument(option.flag, type=option.kind, default=option.default,
                            help=f"{option.text} (default {shown})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=func)


def command_line(name: str, args: argparse.Namespace, options: Sequence[Option]) -> str:
    words = ["observe-rt", "bench", *([name] if name else [])]
    for option in options:
        value = getattr(args, option.dest)
        if option.always or value != option.default:
            words += [option.flag, option.show(value)]
    return shlex.join(words)


# --- the run --------------------------------------------------------------------------------


def run(
    args: argparse.Namespace,
    name: str,
    options: Sequence[Option],
    *,
    root_reason: str,
    cleaned: str,
    measure: Callable[[argparse.Namespace, object], dict],
    render: Callable[[dict, object], None],
) -> int:
    """Measure (`measure(args, stderr console)` returns the report), then print the report as
    JSON or `render` it. SIGTERM (`timeout`, a CI runner) takes the same clean-up path as Ctrl-C;
    `cleaned` says what that path removed."""
    from rich.console import Console

    if os.geteuid() != 0:
        raise FailedPrecondition(f"bench {name} needs root: {root_reason}")
    console, errors = Console(), Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = measure(args, errors)
    except KeyboardInterrupt:
        errors.print(f"interrupted: {cleaned} removed")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["command"] = command_line(name, args, options)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result, console)
    return 0


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def narrator(console) -> Callable[[str], None]:
    """say(text): one timestamped progress line on `console` (stderr), so a long run shows
    where it is, in a terminal and in a log alike."""
    import time

    def say(text: str) -> None:
        console.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False, highlight=False)

    return say


class progress:
    """A transient progress bar on a terminal; a no-op otherwise (pipes, --json into files)."""

    def __init__(self, console, total: int, label: str) -> None:
        from rich.progress import Progress

        self.bar = Progress(console=console, transient=True) if console.is_terminal else None
        self.total, self.label = total, label

    def __enter__(self):
        if self.bar is None:
            return None
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- rendering ------------------------------------------------------------------------------


def render(console, tables: Iterable[tuple], notes: Iterable[str]) -> None:
    """Each (title, columns, rows, text_columns) as a table, then the notes as plain lines."""
    for title, columns, rows, text_columns in tables:
        console.print(table(title, columns, rows, text_columns))
    for line in notes:
        console.print(line, markup=False, highlight=False)


def table(title: str, columns, rows, text_columns: int = 1):
    """A rich table: the first `text_columns` columns left-aligned, the figures right-aligned."""
    from rich.table import Table

    result = Table(title=title)
    for index, column in enumerate(columns):
        justify = "left" if index < text_columns else "right"
        result.add_column(column, justify=justify, no_wrap=True)
    for row in rows:
        result.add_row(*row)
    return result


# --- reports --------------------------------------------------------------------------------


def host_info() -> dict:
    return {"kernel": os.uname().release, "cpus": os.cpu_count()}


def figures(values: Sequence[float], unit: str) -> dict:
    """Runs, median, p95, min and max of `values` (3 decimals), keys suffixed with `unit`."""
    summary = summarize(values)
    return {
        "runs": summary.runs,
        f"median_{unit}": round(summary.median, 3),
        f"p95_{unit}": round(summary.p95, 3),
        f"min_{unit}": round(summary.minimum, 3),
        f"max_{unit}": round(summary.maximum, 3),
    }


def timing_figures(samples: Sequence[dict[str, float]], steps: Sequence[str]) -> dict:
    """Samples of milliseconds per step: figures of their totals, each step's median, totals."""
    totals = [sum(sample[step] for step in steps) for sample in samples]
    return {
        **figures(totals, "ms"),
        "step_median_ms": {
            step: round(summarize([sample[step] for sample in samples]).median, 3) for step in steps
        },
        "samples_ms": [round(total, 3) for total in totals],
    }


def rounded(value: float | None) -> float | None:
    """A ratio for the report: 3 decimals, None (no baseline) kept."""
    return None if value is None else round(value, 3)


def add_ratios(
    entries: dict, baseline: str, ratios: Callable[[dict, dict], dict[str, float | None]]
) -> None:
    """Give each measured entry `ratio_to_<baseline>`: `ratios(entry, the baseline's entry)`
    (an empty dict when the baseline is missing), rounded."""
    base = entries.get(baseline, {})
    for entry in entries.values():
        if entry["available"]:
            values = ratios(entry, base)
            entry[f"ratio_to_{baseline}"] = {key: rounded(value) for key, value in values.items()}


def times(value: float | None) -> str:
    """A ratio for a table: "1.23×", or "n/a" without a baseline."""
    return "n/a" if value is None else f"{value:.2f}×"


def available(entries: dict) -> list[tuple[str, dict]]:
    """(name, entry) of every measured runtime or puller of a report."""
    return [(name, entry) for name, entry in entries.items() if entry["available"]]


def unavailable_lines(entries: dict) -> list[str]:
    return [
        f"{name}: unavailable: {entry['reason']}"
        for name, entry in entries.items()
        if not entry["available"]
    ]


def summary_lines(
    entries: dict, baseline: str, key: str, sentence: Callable[[str, dict], str]
) -> list[str]:
    """Every unavailable entry's reason, then `sentence(name, ratios)` for each measured entry
    other than the baseline whose ratio `key` there is (there is none without a baseline)."""
    lines = unavailable_lines(entries)
    for name, entry in available(entries):
        ratios = entry[f"ratio_to_{baseline}"]
        if name != baseline and ratios[key] is not None:
            lines.append(sentence(name, ratios))
    return lines


# --- sessions -------------------------------------------------------------------------------


class Session:
    """A benchmark session; use as a context manager so clean-up (`close`) always runs."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


def rotated(items: list, shift: int) -> list:
    if not items:
        return []
    shift %= len(items)
    return items[shift:] + items[:shift]


def round_robin(runs: list, measured: int, warmup: int, one, progress=None) -> list:
    """Warm up, then measure: every active run once per iteration, the order rotated each
    iteration. `one(run, iteration, label)` returns a sample, or None (and sets run.reason, which
    drops the run). Samples of measured iterations go to run.samples."""
    for iteration in range(warmup + measured):
        for run in rotated([run for run in runs if run.active], iteration):
            is_measured = iteration >= warmup
            label = f"run {iteration - warmup + 1}" if is_measured else f"warm-up {iteration + 1}"
            sample = one(run, iteration, label)
            if sample is not None and is_measured:
                run.samples.append(sample)
            if progress:
                progress()
    return runs


def clean_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for runtimes and pullers: no proxy settings, so traffic stays on
    127.0.0.1."""
    environ = dict(os.environ if environ is None else environ)
    return {key: value for key, value in environ.items() if "proxy" not in key.lower()}


@contextlib.contextmanager
def signals_ignored(*signums: int):
    """Ignore `signums` for the block, so a second Ctrl-C (or SIGTERM) can't cut clean-up short
    (signals can only be set in the main thread)."""
    import threading  # here: every `observe-rt` start imports this module

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
