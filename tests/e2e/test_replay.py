"""The local streaming run replays a synthetic day on an accelerated clock: each daily figure goes
early -> on time -> late -> final, as on a live day, and ends equal to the batch run's."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER

DAY = "2026-11-21"


def _courier_event_panes(output_dir: Path) -> list[tuple[str, bool, int]]:
    """(timing, is_final, value) of each pane of the day's courier_events total, in pane order."""
    records = [json.loads(line) for path in sorted((output_dir / "stats").glob("*.jsonl")) for line in path.open()]
    panes = [r for r in records if r["day"] == DAY and r["metric"] == "courier_events" and r["dimension"] == "total"]
    panes.sort(key=lambda r: (r["is_final"], r["pane_index"] if r["pane_index"] is not None else -1))
    return [(r["timing"], r["is_final"], r["value"]) for r in panes]


def test_a_replayed_day_converges_early_on_time_late_final_to_the_batch_figure(tmp_path: Path) -> None:
    common = ["--events=1500", "--seed=4", f"--day={DAY}"]
    replayed = cli.run([f"--runner={LOCAL_RUNNER}", "--streaming", "--replay_speed=7200", *common,
                        f"--output_dir={tmp_path / 'replayed'}"])
    batch = cli.run([f"--runner={LOCAL_RUNNER}", *common, f"--output_dir={tmp_path / 'batch'}"])
    assert replayed.balanced and batch.balanced

    panes = _courier_event_panes(tmp_path / "replayed")
    timings = [timing for timing, final, _ in panes if not final]
    on_time = timings.index("ON_TIME")
    assert on_time > 0 and set(timings[:on_time]) == {"EARLY"}, panes
    assert set(timings[on_time + 1:]) == {"LATE"} and len(timings) > on_time + 1, panes
    values = [value for _, _, value in panes]
    assert values == sorted(values), panes  # accumulating: each pane counts at least what the one before did
    (batch_final,) = [value for _, final, value in _courier_event_panes(tmp_path / "batch") if final]
    assert panes[-1][1] and panes[-1][2] == batch_final > values[on_time]
