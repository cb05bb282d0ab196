"""The reliability run on the file path, small: the job killed (SIGKILL) while it pushes to a
webhook that fails one call in ten, restarted, and every event counted in its output files."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability.legs import LegResult, LegSettings, result_json, run_file_leg


def _assert_nothing_lost_or_doubled(result: LegResult, kills: int) -> None:
    o, w = result.outputs, result.webhook
    figures = result_json(result)
    assert result.kills == kills and result.exit_codes[-1] == 0, figures
    assert (o.lost, o.doubled, o.misplaced, o.foreign) == (0, 0, 0, 0), figures
    assert set(w.faults) == {"5xx", "429", "timeout"}, figures
    assert w.lost == 0, figures
    # A restarted file run pushes again what the killed one pushed: allowed, under the same webhook-id.
    assert w.copies_share_their_id


@pytest.mark.slow
def test_a_killed_batch_run_then_a_complete_one_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = run_file_leg(tmp_path, LegSettings("file batch", events=20_000, seed=11, kills=1), streaming=False)
    _assert_nothing_lost_or_doubled(result, kills=1)
    assert result.sent.resent > 1500 and result.webhook.pushed_twice > 0


@pytest.mark.slow
def test_a_streaming_file_run_killed_twice_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = run_file_leg(tmp_path, LegSettings("file streaming", events=4_000, seed=12, kills=2), streaming=True)
    _assert_nothing_lost_or_doubled(result, kills=2)
