"""Every courier event of a shipment is attributed to its merchant exactly once, whenever the
ORDER_INFO that names the merchant arrives: at once when it came first, on ``attributed_late``
when it comes after (the account digests count both)."""
from __future__ import annotations

import pickle
from typing import Any

from apache_beam import pvalue
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.plain_state import Alarm, Bag, Cell, fire_until_quiet
from pipeline.stages.lifecycle import LifecycleOutput, TrackShipmentsFn
from pipeline.stages.shipment import Settings, Shipment
from tests.unit.stages.test_lifecycle import at, order_info_event, registration_event, scan_event

SHIPMENT = [
    registration_event("WB1", at(9, 0)),
    order_info_event("WB1", at(9, 2), merchant="M-002"),
    scan_event("WB1", "PICKUP", at(9, 30)),
    scan_event("WB1-1", "PICKUP", at(9, 31), parent="WB1"),  # a piece: the master's merchant
    scan_event("WB1", "DEPART", at(11, 0)),
    scan_event("WB1-1", "DEPART", at(11, 5), parent="WB1"),
    scan_event("WB1", "DELIVERED", at(15, 0)),
]


def attributed(arrivals: list[dict[str, Any]]) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """Runs the lifecycle's DoFn on one shipment's events in arrival order; returns what it
    emitted on ``events_with_merchant`` and on ``attributed_late``, as (event id, merchant)."""
    fn, state, scans, held, wake = TrackShipmentsFn(Settings()), Cell(), Bag(), Bag(), Alarm()
    direct, late = [], []
    for event in arrivals:
        for out in fn.process(("WB1", event), state=state, scans=scans, held=held, wake=wake):
            if isinstance(out, pvalue.TaggedOutput) and out.tag == LifecycleOutput.EVENTS_WITH_MERCHANT.value:
                direct.append((out.value[0]["event_id"], out.value[1]))
            elif isinstance(out, pvalue.TaggedOutput) and out.tag == LifecycleOutput.ATTRIBUTED_LATE.value:
                late.append((out.value[0]["event_id"], out.value[1]))
    return direct, late


def test_events_before_the_order_info_are_attributed_when_it_arrives() -> None:
    registration, info, pickup, *_ = SHIPMENT
    direct, late = attributed([registration, pickup, info, SHIPMENT[4]])
    assert direct == [(registration["event_id"], None), (pickup["event_id"], None), (info["event_id"], "M-002"),
                      (SHIPMENT[4]["event_id"], "M-002")]
    assert late == [(registration["event_id"], "M-002"), (pickup["event_id"], "M-002")]


@settings(max_examples=60, deadline=None)
@given(st.permutations(SHIPMENT))
def test_in_any_arrival_order_each_event_counts_for_the_merchant_exactly_once(arrivals: list[dict[str, Any]]) -> None:
    direct, late = attributed(arrivals)
    counted = [event_id for event_id, merchant in direct + late if merchant == "M-002"]
    assert sorted(counted) == sorted(e["event_id"] for e in SHIPMENT)
    assert [event_id for event_id, _ in direct] == [e["event_id"] for e in arrivals]  # the push itself is unchanged


class CountingBag(Bag):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self) -> list[Any]:
        self.reads += 1
        return super().read()


def test_events_before_the_order_info_wait_in_their_own_bag_read_once_when_it_arrives() -> None:
    fn, state, scans, held, wake = TrackShipmentsFn(Settings()), Cell(), Bag(), CountingBag(), Alarm()
    scans_before = [scan_event("WB1", "ARRIVE", at(10, minute)) for minute in range(60)]

    def take(event: dict[str, Any]) -> list[Any]:
        return list(fn.process(("WB1", event), state=state, scans=scans, held=held, wake=wake))

    take(scans_before[0])
    cell_after_one = len(pickle.dumps(state.read()))
    for event in scans_before[1:]:
        take(event)
    assert held.reads == 0 and len(held.items) == 60
    assert len(pickle.dumps(state.read())) - cell_after_one <= 59 * 12  # the scans' id hashes only

    released = [out.value for out in take(order_info_event("WB1", at(11, 0), merchant="M-002"))
                if isinstance(out, pvalue.TaggedOutput) and out.tag == LifecycleOutput.ATTRIBUTED_LATE.value]
    assert [event["event_id"] for event, _ in released] == [e["event_id"] for e in scans_before]
    assert held.reads == 1 and held.items == []
    take(scan_event("WB1", "DEPART", at(12, 0)))
    assert held.reads == 1


def test_events_held_inside_a_state_of_the_earlier_form_are_attributed_too() -> None:
    registration, info, pickup, *_ = SHIPMENT
    earlier = Shipment.open("WB1", registration["event_time"])
    earlier.unattributed = (registration, pickup)
    state, held = Cell(), Bag()
    state.write(pickle.loads(pickle.dumps(earlier)))
    fn = TrackShipmentsFn(Settings())
    late = [out.value[0]["event_id"] for out in fn.process(("WB1", info), state=state, scans=Bag(), held=held, wake=Alarm())
            if isinstance(out, pvalue.TaggedOutput) and out.tag == LifecycleOutput.ATTRIBUTED_LATE.value]
    assert late == [registration["event_id"], pickup["event_id"]]
    assert held.items == [] and state.read().unattributed == ()


def test_a_shipment_that_retires_without_its_order_info_drops_the_events_it_held() -> None:
    fn, state, scans, held, wake = TrackShipmentsFn(Settings()), Cell(), Bag(), Bag(), Alarm()
    for event in (SHIPMENT[0], SHIPMENT[2], SHIPMENT[6]):  # registration, pickup, delivered: no ORDER_INFO
        list(fn.process(("WB1", event), state=state, scans=scans, held=held, wake=wake))
    assert len(held.items) == 3
    list(fire_until_quiet(wake, lambda when: fn.on_wake(fired_at=when, state=state, scans=scans, held=held, wake=wake)))
    assert held.items == [] and state.read() is None
