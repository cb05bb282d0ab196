"""The accounting: the balance counts inputs; later dead letters of accepted events stand beside it."""
from __future__ import annotations

from pathlib import Path

from pipeline.local.accounting import Accounting, TargetDeliveries, read_deliveries, summary


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
    assert "deadletter/" + " " * 33 + "3 lines (agrees)" in text


def test_an_unbalanced_run_says_so() -> None:
    a = Accounting(inputs=10, pushed=5, orders=2, dead_lettered=2, duplicates=0, dead_letter_kinds={})
    assert not a.balanced
    assert "NOT BALANCED" in summary(a, "gs://bucket/out", {})


def test_deliveries_per_target_come_from_the_counters_and_each_must_balance(tmp_path: Path) -> None:
    deliveries = read_deliveries({
        "delivery_requested_erp": 5, "delivery_delivered_erp": 4, "delivery_dead_lettered_erp": 1,
        "delivery_retries_erp": 3, "delivery_requested_hook": 2, "delivery_delivered_hook": 1, "inputs": 9,
    })
    assert deliveries == {
        "erp": TargetDeliveries(requested=5, delivered=4, dead_lettered=1, retried=3),
        "hook": TargetDeliveries(requested=2, delivered=1),
    }
    (tmp_path / "units" / "erp").mkdir(parents=True)
    (tmp_path / "units" / "erp" / "erp-1.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n')
    report = summary(Accounting(0, 0, 0, 0, 0, {}, deliveries=deliveries), str(tmp_path), {}, {"erp": "units/erp"})
    assert "  erp                             5          4              1        3  balanced" in report
    assert "  hook                            2          1              0        0  NOT BALANCED" in report
    assert "units/erp/" in report and "4 lines (agrees)" in report
