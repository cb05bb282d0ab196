"""The partner-credit benchmark (benchmarks/partner_credit.py) and the points API with a capacity
it runs against. No timing is checked: only counts that follow from the capacity model."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.partner_credit import SETTINGS, measure, table
from pipeline.local.points_api import CapacityPlan


def test_the_capacity_plan_admits_up_to_its_capacity_and_answers_slower_with_load() -> None:
    now = [0.0]
    plan = CapacityPlan(capacity_rows=6000, base_s=0.5, per_row_s=0.0002, retry_after="2", clock=lambda: now[0])
    first = plan(1, 2000)
    assert (first.status, first.delay_s, first.apply) == (200, pytest.approx(0.9), True)
    assert plan(2, 3000).delay_s == pytest.approx(0.5 + 0.0002 * 5000)  # 5,000 rows in flight
    over = plan(3, 1001)
    assert (over.status, over.retry_after, over.apply) == (429, "2", False)
    now[0] = 0.95  # request 1's answer has gone: 3,000 rows in flight
    assert plan(4, 3000).status == 200 and plan.max_in_flight_rows == 6000
    now[0] = 10.0  # every answer has gone
    lost = plan(7, 1000)  # request 7: applied, then a 500
    assert (lost.status, lost.apply, lost.delay_s) == (500, True, pytest.approx(0.7))
    with pytest.raises(ValueError, match="must be at most 5 s"):
        CapacityPlan(capacity_rows=50_000, base_s=0.4, per_row_s=0.0001)


@pytest.mark.slow
def test_every_setting_credits_every_valid_row_once_and_only_fixed_large_batches_overload(tmp_path: Path) -> None:
    # 6,000 rows (5,651 valid), a capacity of 5,000 rows in flight. Fixed 5,000 x 4 sends its two
    # chunks (5,000 and 651) at once: one is over the capacity. Adaptive sends 2,500 alone, then
    # 2,750 and 401 together (3,151 rows in flight).
    outcomes = {o.setting: o for o in measure(tmp_path, rows=6000, capacity_rows=5000)}
    print("\n" + table(list(outcomes.values())))
    assert list(outcomes) == [s.name for s in SETTINGS]
    for o in outcomes.values():
        assert (o.exit_code, o.credited, o.feedback_credited, o.credited_twice) == (0, o.valid_rows, o.valid_rows, 0), o
    small, large, adaptive = outcomes["fixed 2500 x 1"], outcomes["fixed 5000 x 4"], outcomes["adaptive"]
    assert (small.throttled, small.max_requests_in_flight, small.max_rows_in_flight) == (0, 1, 2500)
    assert large.throttled >= 1
    assert adaptive.throttled == 0 and adaptive.max_requests_in_flight == 2
