"""`observe-rt bench trace` on the real machine with 1 pod per daemon: both daemons measured,
the traced one's spans at the receiver, and nothing left behind. No timing claims."""

from __future__ import annotations

import glob

import pytest

from tests.integration.test_bench_cri import leftovers
from tests.support.bench import run_json

pytestmark = pytest.mark.root


def test_bench_trace_json_reports_both_daemons_and_leaves_nothing():
    before = leftovers()
    result = run_json("trace", "--pods", "1", "--warmup", "0", timeout=600)
    assert result["benchmark"] == "trace" and result["baseline"] == "untraced"
    assert result["command"] == "observe-rt bench trace --pods 1 --warmup 0"
    assert list(result["runtimes"]) == ["untraced", "traced"]
    for name, entry in result["runtimes"].items():
        assert entry["available"], entry
        assert entry["start"]["runs"] == 1 and entry["daemon_cpu_ms_per_pod"] > 0, name
        assert all(value > 0 for value in entry["ratio_to_untraced"].values()), name
    export = result["export"]
    # One traced pod start is at least its three CRI calls and their steps.
    assert export["spans_received"] >= 10 and export["spans_dropped"] == 0
    assert export["spans_exported"] == export["spans_received"]
    new = {key: {str(item) for item in set(value) - set(before[key])}
           for key, value in leftovers().items()}  # fmt: skip
    assert {key: ours(items) for key, items in new.items()} == {key: set() for key in new}


def ours(items: set[str]) -> set[str]:
    """What a trace session leaves: its daemons' dirs are u/ (untraced) and t/ (traced), its
    bridges end in u or t. Other engineers' bench sessions on this machine come and go."""
    return {item for item in items
            if any(part in item for part in ("/u/", "/t/", "/untraced", "/traced"))
            or (item.startswith("ocb") and item[-1] in "ut")
            or any(glob.glob(f"{item}/{d}") for d in ("u", "t"))}  # fmt: skip
