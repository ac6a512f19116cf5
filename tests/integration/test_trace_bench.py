"""`observe-rt bench trace` on the real machine with 1 pod per daemon: both daemons measured,
the traced one's spans at the receiver, and nothing left behind. No timing claims."""

from __future__ import annotations

import pytest

from tests.support.bench import NOTHING_LEFT, cri_leftovers, cri_session, run_json

pytestmark = pytest.mark.root


def test_bench_trace_json_reports_both_daemons_and_leaves_nothing():
    stderr = []
    result = run_json("trace", "--pods", "1", "--warmup", "0", timeout=600, stderr=stderr)
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
    # Told apart from other sessions by its tag and temp dir (printed on stderr).
    assert cri_leftovers(*cri_session(stderr[0])) == NOTHING_LEFT
