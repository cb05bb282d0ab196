"""The accounting: the balance counts inputs; later dead letters of accepted events stand beside it."""
from __future__ import annotations

from pathlib import Path

from pipeline.accounting import Accounting, summary


def test_later_dead_letters_do_not_break_the_balance_and_the_folder_holds_both(tmp_path: Path) -> None:
    # 10 inputs: 5 pushed, 2 orders, 2 rejected, 1 duplicate; 1 pushed event was also too late
    # for its day's statistics, so the dead-letter folder holds 3 lines.
    a = Accounting(inputs=10, pushed=5, orders=2, dead_lettered=2, duplicates=1,
                   dead_letter_kinds={"not_json": 2, "late_beyond_allowed_lateness": 1}, dead_lettered_later=1)
    assert a.balanced and a.all_dead_letters == 3
    (tmp_path / "deadletter").mkdir()
    (tmp_path / "deadletter" / "deadletter-0.jsonl").write_text("{}\n{}\n{}\n")
    text = summary(a, str(tmp_path), {"all_dead_letters": "deadletter"})
    assert "balanced: nothing lost" in text
    assert "later dead letters of accepted events (statistics, lifecycle): 1" in text
    assert "deadletter/                     3 lines (agrees)" in text


def test_an_unbalanced_run_says_so() -> None:
    a = Accounting(inputs=10, pushed=5, orders=2, dead_lettered=2, duplicates=0, dead_letter_kinds={})
    assert not a.balanced
    assert "NOT BALANCED" in summary(a, "gs://bucket/out", {})
