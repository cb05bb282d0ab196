"""Incremental waybill views: the changes between a generation's first and final view rebuild every
full view, and a change's size does not grow with the track's history."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.launcher import parse_options
from pipeline.model.json_records import to_json_line
from pipeline.stages.lifecycle import WAYBILL_VIEW, WAYBILL_VIEW_CHANGE
from pipeline.stages.shipment import (
    ALERT,
    FULL_VIEWS,
    INCREMENTAL_VIEWS,
    VIEW,
    VIEW_CHANGE,
    Output,
    Settings,
    Shipment,
)
from tests.unit.stages.test_lifecycle import T0, order_info_event, registration_event, scan_event

Record = dict[str, Any]
# Short durations, so that random steps reach every deadline: real name, stuck, retire, clear.
DURATIONS = dict(registration_delay=timedelta(minutes=30), stuck_after=timedelta(hours=6),
                 retain_after_delivery=timedelta(hours=2), expire_after=timedelta(days=1),
                 remember_closed_for=timedelta(days=1))
FULL, INCREMENTAL = Settings(**DURATIONS), Settings(**DURATIONS, views=INCREMENTAL_VIEWS)
PARCELS = ("WB1", "WB1-1", "WB1-2")  # the master and two pieces
SCAN_TYPES = ("PICKUP", "DEPART", "ARRIVE", "DISPATCH", "DELIVERED", "EXCEPTION")
HEADER = ("version", "real_name_status", "outlet_id", "courier_id", "as_of", "emitted_at")


def applied(view: Record, change: Record) -> Record:
    """The view a receiver holds after applying ``change`` to ``view``, the version it follows:
    the header replaced, the registration and order information replaced where the change
    carries them, and each changed parcel's standing replaced and its new scans merged into its
    scans in event-time order (ties by event_id); a parcel the view lacks is a new piece."""
    assert (change["waybill_no"], change["generation"], change["base_version"]) == (
        view["waybill_no"], view["generation"], view["version"])
    rebuilt = {**view, **{field: change[field] for field in HEADER}}
    for field, at in (("real_name_registration", "registered_at"), ("order_info", "order_info_at")):
        if change[field] is not None:
            rebuilt[field], rebuilt[at] = change[field], change[at]
    tracks = {track["identification"]["waybill_no"]: track for track in (view["master"], *view["pieces"])}
    for parcel in change["parcels"]:
        number = parcel["identification"]["waybill_no"]
        scans = sorted([*tracks.get(number, {"scans": []})["scans"], *parcel["new_scans"]],
                       key=lambda scan: (scan["event_time"], scan["event_id"]))
        assert len(scans) == parcel["scan_count"]
        tracks[number] = {**{k: v for k, v in parcel.items() if k not in ("scan_count", "new_scans")}, "scans": scans}
    rebuilt["master"] = tracks[view["waybill_no"]]
    rebuilt["pieces"] = [tracks[number] for number in sorted(tracks) if number != view["waybill_no"]]
    return rebuilt


def without_emitted_at(record: Record) -> Record:
    return {k: v for k, v in record.items() if k != "emitted_at"}


def event_of(step: tuple[str, int, int, int]) -> Record:
    kind, parcel, scan_type, minute = step
    when = T0 + timedelta(minutes=minute)
    if kind == "registration":
        return registration_event("WB1", when)
    if kind == "order_info":
        return order_info_event("WB1", when, merchant=f"M-00{scan_type % 3}")
    number = PARCELS[parcel]
    return scan_event(number, SCAN_TYPES[scan_type], when, parent=None if number == "WB1" else "WB1")


def lifecycle(steps: list[tuple[str, int, int, int]], views: Settings, generation: int) -> list[Output]:
    """What one shipment emits for ``steps``: events (dropped once it is closed, as the stage
    dead-letters them), and deadlines as the watermark reaches the minute of a ``fire`` step."""
    shipment: Shipment | None = None
    outputs: list[Output] = []
    watermark = T0
    for step in steps:
        if step[0] == "fire":
            watermark = max(watermark, T0 + timedelta(minutes=step[3]))
            outputs += shipment.fire(watermark, views) if shipment else []
            continue
        event = event_of(step)
        if shipment is None:
            shipment = Shipment.open("WB1", event["event_time"])
            shipment.generation = generation
        if shipment.closed_at is None:
            outputs += shipment.add(event, views)
    return outputs + (shipment.fire(T0 + timedelta(days=30), views) if shipment else [])


STEPS = st.lists(st.tuples(
    st.sampled_from(("scan", "scan", "scan", "registration", "order_info", "fire")),
    st.integers(0, len(PARCELS) - 1), st.integers(0, len(SCAN_TYPES) - 1), st.integers(0, 3 * 24 * 60),
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_changes_applied_in_order_to_the_first_view_rebuild_every_full_view(steps: list[tuple[str, int, int, int]]) -> None:
    full = lifecycle(steps, FULL, generation=7)
    incremental = lifecycle(steps, INCREMENTAL, generation=7)

    # The same alerts and state changes, and one view or change for each full view, at the same place.
    assert [kind for kind, _ in incremental] == [VIEW_CHANGE if kind == VIEW and 1 < r["version"] and not r["is_final"]
                                                 else kind for kind, r in full]
    assert ([without_emitted_at(r) for kind, r in incremental if kind == ALERT]
            == [without_emitted_at(r) for kind, r in full if kind == ALERT])
    held = None
    for (_, expected), (kind, record) in zip(((k, r) for k, r in full if k == VIEW),
                                              ((k, r) for k, r in incremental if k in (VIEW, VIEW_CHANGE))):
        held = record if kind == VIEW else applied(held, record)
        assert without_emitted_at(held) == without_emitted_at(expected), expected["version"]


def waybill_with_scans(count: int, views: Settings) -> list[Output]:
    """A waybill's outputs for ``count`` ARRIVE scans a minute apart, registered and with its order
    information first (same-length event ids, so that only the history differs)."""
    shipment = Shipment.open("WB1", T0)
    outputs = shipment.add(registration_event("WB1", T0), views) + shipment.add(order_info_event("WB1", T0), views)
    for minute in range(1, count + 1):
        outputs += shipment.add(scan_event("WB1", "ARRIVE", T0 + timedelta(minutes=minute)), views)
    return outputs


def test_a_change_has_the_same_size_at_200_scans_as_at_6_while_a_full_view_grows() -> None:
    def last_line(count: int, views: Settings, schema_name: str) -> int:
        return len(to_json_line(schema_name, waybill_with_scans(count, views)[-1][1]).encode())

    changes = {count: last_line(count, INCREMENTAL, WAYBILL_VIEW_CHANGE) for count in (6, 200)}
    full = {count: last_line(count, FULL, WAYBILL_VIEW) for count in (6, 200)}
    assert 0 <= changes[200] - changes[6] <= 6, changes  # version, base_version, scan_count: 2 digits more each
    assert full[200] > 20 * changes[200] and full[200] > 20 * full[6], full


def test_changes_carry_only_what_changed() -> None:
    outputs = waybill_with_scans(3, INCREMENTAL)
    kinds = [kind for kind, _ in outputs]
    assert kinds == [VIEW, VIEW_CHANGE, VIEW_CHANGE, VIEW_CHANGE, VIEW_CHANGE]
    order_info, first_scan, *later = (record for _, record in outputs[1:])
    assert order_info["order_info"] is not None and order_info["real_name_registration"] is None
    assert order_info["parcels"] == [] and order_info["base_version"] == 1 and order_info["version"] == 2
    assert first_scan["order_info"] is None and [p["scan_count"] for p in first_scan["parcels"]] == [1]
    assert [len(p["new_scans"]) for change in later for p in change["parcels"]] == [1, 1]


def test_the_option_reaches_the_stage_settings_and_refuses_other_forms(tmp_path: Any) -> None:
    assert parse_options([f"--output_dir={tmp_path}"]).waybill_views == FULL_VIEWS
    assert parse_options([f"--output_dir={tmp_path}", "--waybill_views=incremental"]).waybill_views == INCREMENTAL_VIEWS
    with pytest.raises(SystemExit):
        parse_options([f"--output_dir={tmp_path}", "--waybill_views=delta"])
    with pytest.raises(ValueError, match="views must be one of full, incremental, got 'delta'"):
        Settings(views="delta")


def test_first_and_final_views_stay_full() -> None:
    shipment = Shipment.open("WB1", T0)
    shipment.add(scan_event("WB1", "PICKUP", T0), INCREMENTAL)
    shipment.add(scan_event("WB1", "DELIVERED", T0 + timedelta(hours=1)), INCREMENTAL)
    final = [record for kind, record in shipment.fire(T0 + timedelta(days=30), INCREMENTAL) if kind == VIEW]
    assert [(v["version"], v["is_final"], len(v["master"]["scans"])) for v in final] == [(4, True, 2)]
