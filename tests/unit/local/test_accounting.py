"""The accounting: the inputs' balance, and an identity for every later branch and every folder."""
from __future__ import annotations

from pathlib import Path

from pipeline.local.accounting import Accounting, TargetDeliveries, read_deliveries, summary, with_checks


def _files(root: Path, folder: str, lines: int) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / f"{folder.rsplit('/', 1)[-1]}-0.jsonl").write_text("{}\n" * lines)


def test_later_dead_letters_do_not_break_the_balance_and_the_folder_holds_both(tmp_path: Path) -> None:
    # 10 inputs: 5 pushed, 2 orders, 2 rejected, 1 duplicate; 1 pushed event was also too late
    # for its day's statistics, so the dead-letter folder holds 3 lines and 6 events were counted.
    a = Accounting(inputs=10, pushed=5, orders=2, dead_lettered=2, duplicates=1,
                   dead_letter_kinds={"not_json": 2, "late_beyond_allowed_lateness": 1}, dead_lettered_later=1,
                   lifecycle_events=5)
    _files(tmp_path, "deadletter", 3)
    checked = with_checks(a, tmp_path, {"all_dead_letters": "deadletter"}, counted_in_statistics=6)
    assert checked.balanced and checked.all_dead_letters == 3
    text = summary(checked, "out")
    assert "balanced: nothing lost" in text
    assert "later dead letters of accepted events (statistics, lifecycle): 1" in text
    assert "accepted events = counted in daily statistics + dead-lettered late: 7 = 7 holds" in text
    assert "deadletter/" + " " * 33 + "3 lines (agrees)" in text
    assert text.endswith("All identities hold.")


def test_an_unbalanced_run_says_so() -> None:
    a = Accounting(inputs=10, pushed=5, orders=2, dead_lettered=2, duplicates=0, dead_letter_kinds={})
    assert not a.balanced
    report = summary(with_checks(a, None, {}))
    assert "NOT BALANCED" in report
    # What could not be counted is said, not claimed.
    assert "not checked: accepted events = counted in daily statistics + dead-lettered late" in report
    assert "not checked: output folders against what the job wrote (the output is not local)" in report


def test_events_missing_from_the_statistics_break_the_balance() -> None:
    # Two accepted events were neither counted in a day nor dead-lettered as late.
    a = Accounting(inputs=5, pushed=3, orders=2, dead_lettered=0, duplicates=0, dead_letter_kinds={}, lifecycle_events=3)
    checked = with_checks(a, None, {}, counted_in_statistics=3)
    assert a.inputs_balanced and not checked.balanced
    assert "5 = 3 DOES NOT HOLD" in summary(checked)


def test_lines_left_out_of_a_folder_break_the_balance(tmp_path: Path) -> None:
    # The job wrote 4 waybill views; the folder holds 3 (one stranded in a temp folder).
    a = Accounting(0, 0, 0, 0, 0, {}, written={"waybills": 4})
    _files(tmp_path, "waybills", 3)
    checked = with_checks(a, tmp_path, {})
    assert not checked.balanced
    assert "waybills/" + " " * 35 + "3 lines (DIFFERS from 4 written)" in summary(checked, "out")


def test_deliveries_per_target_come_from_the_counters_and_each_must_balance(tmp_path: Path) -> None:
    deliveries = read_deliveries({
        "delivery_requested_erp": 5, "delivery_delivered_erp": 4, "delivery_dead_lettered_erp": 1,
        "delivery_retries_erp": 3, "delivery_requested_hook": 2, "delivery_delivered_hook": 1, "inputs": 9,
    })
    assert deliveries == {
        "erp": TargetDeliveries(requested=5, delivered=4, dead_lettered=1, retried=3),
        "hook": TargetDeliveries(requested=2, delivered=1),
    }
    _files(tmp_path, "units/erp", 4)
    checked = with_checks(Accounting(0, 0, 0, 0, 0, {}, deliveries=deliveries), tmp_path, {}, {"erp": "units/erp"})
    report = summary(checked, "out")
    assert "  erp                             5          4              1        3  balanced" in report
    assert "  hook                            2          1              0        0  NOT BALANCED" in report
    assert "delivery target hook: requested = delivered + dead-lettered: 2 = 1 DOES NOT HOLD" in report
    assert "units/erp/" in report and "4 lines (agrees)" in report
    assert not checked.balanced
