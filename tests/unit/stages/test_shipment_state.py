"""The lifecycle's state: the pickled shipment does not grow with its scans, which the stage keeps in
a bag; full views read from the bag are those of the tracks that held their scans; a state pickled
with the scans inside its tracks goes on as if it had always been kept so.

The fixtures in ``tests/fixtures/lifecycle_state/`` were written by the shipment code whose tracks
held their scans (``Track.scans`` and ``Track.event_ids``), for the events of :data:`EVENTS`, with
generation 7 and ``emitted_at`` left out of the records:

* ``full_outputs.pickle``: the outputs of all of them and the deadlines to the end, full views;
* ``shipment_with_scans.pickle``: the shipment after the first :data:`SPLIT`, incremental views;
* ``shipment_with_scans_only.pickle``: the same, its tracks pickled with their scans alone (no
  ``event_ids``, ``delivered_at``, ``fresh``, ``touched``);
* ``incremental_outputs_after.pickle``: what that shipment emitted for the rest and the deadlines.
"""
from __future__ import annotations

import pickle
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional

import pytest

from benchmarks.plain_state import Alarm, Bag, Cell, fire_until_quiet
from pipeline.stages.lifecycle import TrackShipmentsFn
from pipeline.stages.shipment import FULL_VIEWS, INCREMENTAL_VIEWS, Output, Settings, Shipment
from tests.paths import FIXTURES
from tests.unit.stages.test_lifecycle import T0, at, order_info_event, registration_event, scan_event

STATE_FIXTURES = FIXTURES / "lifecycle_state"
EVENTS = [scan_event("WB1", "PICKUP", at(9)), scan_event("WB1-1", "PICKUP", at(9, 1), parent="WB1"),
          registration_event("WB1", at(9, 10)), scan_event("WB1", "ARRIVE", at(12)),
          scan_event("WB1", "DEPART", at(11)),  # older than the scan before it
          scan_event("WB1-1", "DEPART", at(11), parent="WB1"), scan_event("WB1", "DEPART", at(11)),  # a duplicate
          scan_event("WB1-1", "DELIVERED", at(13), parent="WB1"), scan_event("WB1", "DELIVERED", at(14))]
SPLIT = 5
END = at(0, day=30)
INCREMENTAL = Settings(views=INCREMENTAL_VIEWS)


class PickledBag(Bag):
    """A bag whose items go through pickle, as the stage's ``PickleCoder`` bag does."""

    def add(self, item: Any) -> None:
        super().add(pickle.dumps(item))

    def read(self) -> list[Any]:
        return [pickle.loads(item) for item in self.items]


def as_the_stage_keeps_it(state: bytes, events: Iterable[dict[str, Any]], bag: Bag, settings: Settings,
                          end: Optional[datetime] = END) -> list[Output]:
    """The outputs of ``events`` and then of the deadlines up to ``end`` (none if None), with the
    shipment unpickled from ``state`` and pickled again around each, its scans in ``bag``."""
    outputs: list[Output] = []
    for step in [*events, *([None] if end else [])]:
        shipment: Shipment = pickle.loads(state)
        shipment.keep_scans_in(bag)
        outputs += shipment.add(step, settings) if step else shipment.fire(end, settings)
        state = pickle.dumps(shipment)
    return outputs


def plain(outputs: list[Output]) -> list[Output]:
    return [(kind, {k: v for k, v in record.items() if k != "emitted_at"}) for kind, record in outputs]


def fixture(name: str) -> Any:
    return pickle.loads((STATE_FIXTURES / name).read_bytes())


def opened() -> bytes:
    shipment = Shipment.open("WB1", EVENTS[0]["event_time"])
    shipment.generation = 7
    return pickle.dumps(shipment)


def test_full_views_read_from_the_bag_are_those_of_tracks_holding_their_scans() -> None:
    bag = PickledBag()
    outputs = as_the_stage_keeps_it(opened(), EVENTS, bag, Settings(views=FULL_VIEWS))
    assert plain(outputs) == fixture("full_outputs.pickle")
    assert bag.items == []  # retired: the scans went with the tracks


@pytest.mark.parametrize("name", ["shipment_with_scans.pickle", "shipment_with_scans_only.pickle"])
def test_a_state_pickled_with_its_scans_inside_moves_them_to_the_bag_and_goes_on_the_same(name: str) -> None:
    bag = PickledBag()
    state = (STATE_FIXTURES / name).read_bytes()
    first = as_the_stage_keeps_it(state, EVENTS[SPLIT:SPLIT + 1], bag, INCREMENTAL, end=None)

    moved = {(number, scan["event_id"]) for number, scan in bag.read()}
    assert moved == {(e["waybill_no"], e["event_id"]) for e in EVENTS[:SPLIT + 1] if e["event_type"] == "TRACK_SCAN"}
    rest = as_the_stage_keeps_it(state, EVENTS[SPLIT:], PickledBag(), INCREMENTAL)
    assert plain(rest) == fixture("incremental_outputs_after.pickle")
    assert plain(first) == plain(rest)[:1]


def test_the_pickled_shipment_grows_with_its_scans_only_by_their_id_hashes() -> None:
    def state_bytes(count: int) -> tuple[int, int]:
        """The shipment as the stage pickles it after ``count`` scans, and pickled with its scans
        (the order information first: the events before it are held, in a bag of their own)."""
        fn, state, scans, held_events, wake = TrackShipmentsFn(INCREMENTAL), Cell(), Bag(), Bag(), Alarm()
        events = [registration_event("WB1", T0), order_info_event("WB1", T0)] + [
            scan_event("WB1", "ARRIVE", T0 + timedelta(minutes=minute)) for minute in range(1, count + 1)]
        for event in events:
            list(fn.process(("WB1", event), state=state, scans=scans, held=held_events, wake=wake))
        held: Shipment = pickle.loads(pickle.dumps(state.read()))  # a scan list of its own, empty
        for item in scans.read():
            held.scan_store.add(item)
        return len(pickle.dumps(state.read())), len(pickle.dumps(held))

    (small, _), (large, large_with_scans) = state_bytes(6), state_bytes(200)
    assert large - small <= 194 * 12, (small, large)  # a hash is 10 bytes pickled, plus the set's framing
    assert large < 0.25 * large_with_scans, (large, large_with_scans)


def test_the_bag_is_read_only_for_a_generation_s_first_and_final_view() -> None:
    reads: list[int] = []

    class CountingBag(Bag):
        def read(self) -> list[Any]:
            reads.append(len(self.items))
            return super().read()

    fn, state, scans, held, wake = TrackShipmentsFn(INCREMENTAL), Cell(), CountingBag(), Bag(), Alarm()
    for event in EVENTS:
        list(fn.process(("WB1", event), state=state, scans=scans, held=held, wake=wake))
    list(fire_until_quiet(wake, lambda when: fn.on_wake(fired_at=when, state=state, scans=scans, held=held, wake=wake)))
    assert reads == [1, 7]  # version 1 (the pickup), the final view (7 distinct scans)
    assert scans.items == [] and state.read() is None
