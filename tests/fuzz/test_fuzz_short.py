"""The short fuzz run of `make test`: every target for a few seconds, after replaying its
checked-in corpus (the regression fixtures of crashes found and fixed). `make fuzz` runs the
same targets for a minute each."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import run

SHORT_SECONDS = 5


@pytest.mark.parametrize("target", run.TARGETS)
def test_fuzz_target_survives_a_short_run(target: str, tmp_path: Path) -> None:
    result = run.run_target(target, SHORT_SECONDS, tmp_path)
    assert result.ok, f"fuzz target {target} crashed:\n{result.output_tail}"
    assert result.executions > 0, f"fuzz target {target} ran nothing:\n{result.output_tail}"
