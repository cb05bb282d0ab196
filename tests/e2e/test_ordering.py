"""Order within a waybill, counted from the output files of a whole run: every per-waybill
destination (supervision/, supervision_compliance/, units/*, subscribers/*) gets each
waybill's messages in event-time order, numbered 1..n with chained previous ids, and any that
could not be put in their place marked ``out_of_order``."""
from __future__ import annotations

from pathlib import Path

from benchmarks.ordering import count_output, table
from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER

# The per-waybill destinations 3,000 synthetic messages reach (merchant-m002 gets digests only).
DESTINATIONS = {
    "supervision", "supervision_compliance", "units/coldchain", "units/customs", "units/erp", "units/wms",
    "subscribers/east-china-exceptions", "subscribers/merchant-m001",
}


def run(tmp_path: Path, *extra: str) -> dict:
    result = cli.run([f"--runner={LOCAL_RUNNER}", "--events=3000", "--day=2026-11-21", f"--output_dir={tmp_path}", *extra])
    assert result.balanced
    figures = {name: c for name, c in count_output(tmp_path).items() if c.messages}
    print(table(figures))  # seen with pytest -s
    assert set(figures) == DESTINATIONS
    for name, c in figures.items():
        assert c.sequenced == c.messages, name
        assert c.broken_sequences == [], (name, c.broken_sequences[:5])
        assert c.unmarked_out_of_order_waybills == 0, name  # every late message is marked
    return figures


def test_in_batch_no_waybill_is_out_of_order_anywhere(tmp_path: Path) -> None:
    # In batch the whole input is within the delay: every waybill leaves sorted.
    figures = run(tmp_path)
    assert {name: c.out_of_order_waybills for name, c in figures.items()} == dict.fromkeys(DESTINATIONS, 0)
    assert {name: c.marked for name, c in figures.items()} == dict.fromkeys(DESTINATIONS, 0)


def test_in_streaming_the_synthetic_day_arrives_within_the_delay_and_leaves_in_order(tmp_path: Path) -> None:
    # The whole day is read in seconds: every waybill's messages arrive within the 1 s delay.
    figures = run(tmp_path, "--streaming")
    assert {name: c.out_of_order_waybills for name, c in figures.items()} == dict.fromkeys(DESTINATIONS, 0)


def test_in_streaming_with_no_delay_every_message_that_leaves_after_a_later_one_is_marked(tmp_path: Path) -> None:
    # Nothing held: the synthetic day's late scans and orders leave as they come, and every one
    # that leaves after a later message of its waybill is marked (run() checks: no unmarked one).
    figures = run(tmp_path, "--streaming", "--reorder_delay_seconds=0")
    assert figures["supervision"].out_of_order_waybills > 10 and figures["units/erp"].out_of_order_waybills > 5
    assert all(c.marked >= c.out_of_order_waybills for c in figures.values())
