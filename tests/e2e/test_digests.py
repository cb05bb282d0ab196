"""Account digests equal a recount from the run's other outputs (orders, supervision records,
alerts), whatever order the events arrive in: a shuffled multi-day file in batch, and a local
streaming run."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.digests import compare, last_digests, run_job, shuffled_input, table
from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER

DIGEST_SUBSCRIBERS = {"merchant-m001", "merchant-m002-digest"}


def check(output_dir: Path) -> None:
    compared = compare(output_dir)
    print(table(compared))  # seen with pytest -s
    assert set(compared) == DIGEST_SUBSCRIBERS
    for subscriber, (digest, recount) in compared.items():
        assert digest == recount, subscriber
        # the figures that arrival luck used to lose: scans and registrations before the order
        assert digest["real_name_registrations"] > 0 and digest["scans_by_type.PICKUP"] > 0, subscriber


@pytest.mark.parametrize("seed", [3, 11])
def test_in_batch_a_shuffled_multi_day_stream_gives_digests_equal_to_the_recount(tmp_path: Path, seed: int) -> None:
    shuffled_input(tmp_path / "input.jsonl", events=1200, days=2, seed=seed)
    run_job(tmp_path / "input.jsonl", tmp_path / "output")
    check(tmp_path / "output")


def test_a_local_streaming_run_ends_with_final_digests_equal_to_the_recount(tmp_path: Path) -> None:
    # The packaged schedules (30 and 60 min) fall after this run's end: the end of the bounded
    # input sends the final digests, also to the digest-only subscriber.
    result = cli.run([f"--runner={LOCAL_RUNNER}", "--streaming", "--events=3000", "--day=2026-11-21",
                      f"--output_dir={tmp_path}"])
    assert result.balanced
    assert {s: d["reason"] for s, d in last_digests(tmp_path).items()} == dict.fromkeys(DIGEST_SUBSCRIBERS, "final")
    check(tmp_path)
