"""Cost as shipments grow: the same number of scans, fewer and longer waybills.

Traffic of ``scans`` TRACK_SCAN events in all, ``per_waybill`` to each waybill (PICKUP, then
DEPART / ARRIVE in turn, DISPATCH, DELIVERED), each waybill with its real-name registration
5 minutes and its ORDER_INFO 2.5 minutes before the pickup (the first so that no REAL_NAME_MISSING
alert blurs the comparison, the second so that the lifecycle does not hold the scans waiting for
the merchant), scans 5 minutes apart, everything arriving in event-time order. For each
``per_waybill`` and each of :data:`VIEW_MODES`, :func:`measure_scans` gives a row of:

- the whole graph (batch, the local runner's FnApiRunner, as :func:`benchmarks.stages.measure_graph`):
  µs of CPU per message with the graph's fixed cost subtracted, its ratio to the first
  ``per_waybill``'s, and the bytes of the ``WaybillView`` and ``WaybillViewChange`` lines written;
- the lifecycle alone as a plain loop (its DoFn with state in a dict, every view and alert as
  a JSON line, as :mod:`benchmarks.floor` runs it): µs of CPU per message;
- state bytes per live waybill after its last event, mean over waybills: all of it, and the
  shipment cell read and written at every event (:func:`benchmarks.state_bytes.live_shipment_bytes`).

``python -m benchmarks.run`` prints the rows as the "cost as shipments grow" table.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock
from pathlib import Path
from typing import Any, Sequence

from benchmarks.keyed_work import shipment_outputs
from benchmarks.rows import repeat
from benchmarks.stages import Inputs, Measurement, measure_graph, timed
from benchmarks.state_bytes import by_shipment, live_shipment_bytes
from benchmarks.workload import build_workload, first_day
from pipeline.graph import track_lifecycles
from pipeline.io import outputs
from pipeline.model import json_records, schemas
from pipeline.model.messages import Encoding, RawMessage
from pipeline.options import WaybillOptions
from pipeline.stages.lifecycle import WAYBILL_ALERT, WAYBILL_VIEW, WAYBILL_VIEW_CHANGE, TrackShipmentsFn


@dataclasses.dataclass(frozen=True)
class ViewMode:
    """A way the job writes waybill views, and the pipeline options that select it."""

    name: str
    options: tuple[str, ...] = ()


# The job's ways of writing waybill views; the scans rows are measured once in each.
VIEW_MODES: tuple[ViewMode, ...] = (ViewMode("full"), ViewMode("incremental", ("--waybill_views=incremental",)))
SCANS_PER_WAYBILL = (6, 50, 200)
_GAP = timedelta(minutes=5)
# The lifecycle outputs the loop writes as JSON lines, as the graph does; state changes are left
# out (two lines of about 130 bytes per shipment).
_OUTPUT_SCHEMA = {"main": WAYBILL_VIEW, "view_changes": WAYBILL_VIEW_CHANGE, "alerts": WAYBILL_ALERT}
_VIEW_SCHEMAS = (WAYBILL_VIEW, WAYBILL_VIEW_CHANGE)
_VIEW_DIRS = (outputs.WAYBILLS_DIR, outputs.WAYBILL_CHANGES_DIR)


def scan_types(per_waybill: int) -> list[str]:
    """PICKUP, DEPART/ARRIVE in turn, DISPATCH, DELIVERED: ``per_waybill`` (at least 3) in all.

    Example::

        >>> scan_types(5)
        ['PICKUP', 'DEPART', 'ARRIVE', 'DISPATCH', 'DELIVERED']
    """
    middle = ["DEPART" if i % 2 == 0 else "ARRIVE" for i in range(per_waybill - 3)]
    return ["PICKUP", *middle, "DISPATCH", "DELIVERED"]


def _message(record: dict[str, Any]) -> RawMessage:
    attributes = {"schema": schemas.COURIER_EVENT, "event_id": record["event_id"],
                  "event_time": json_records.format_timestamp(record["event_time"])}
    return RawMessage(schemas.encode(schemas.COURIER_EVENT, record), attributes, "synthetic", Encoding.AVRO)


def scan_traffic(scans: int, per_waybill: int, day: date) -> list[RawMessage]:
    """The messages, in event-time order: ``scans // per_waybill`` waybills (see the module docstring)."""
    if per_waybill < 3:
        raise ValueError(f"per_waybill must be 3 or more (PICKUP, DISPATCH, DELIVERED), got {per_waybill}")
    start = datetime.combine(day, clock(1), timezone.utc)
    events = []
    for w in range(scans // per_waybill):
        waybill_no, at = f"WBS{per_waybill:03d}{w:07d}", start + timedelta(seconds=7 * w)

        def event(kind: str, event_id: str, when: datetime, payload: dict[str, Any]) -> dict[str, Any]:
            return {"event_id": event_id, "waybill_no": waybill_no, "parent_waybill_no": None, "outlet_id": "OUT-001",
                    "courier_id": "CR-001-1", "event_type": kind, "event_time": when, "payload": payload}

        events.append(event("REAL_NAME_REGISTRATION", f"{waybill_no}-R", at - _GAP, {
            "sender_name": "Sender", "id_type": "RESIDENT_ID_CARD", "id_number_masked": "3****************X",
            "phone_masked": "138****0000"}))
        events.append(event("ORDER_INFO", f"{waybill_no}-O", at - _GAP / 2, {
            "order_id": f"ORD-{waybill_no}", "merchant_id": "M-001", "item_description": "1 item(s)",
            "declared_value_cents": 9_900}))
        for i, scan_type in enumerate(scan_types(per_waybill)):
            events.append(event("TRACK_SCAN", f"{waybill_no}-{i:04d}", at + i * _GAP, {
                "scan_type": scan_type, "site_id": f"SITE-{i % 30:03d}", "region": "310000", "exception_reason": None}))
    events.sort(key=lambda e: (e["event_time"], e["event_id"]))
    return [_message(e) for e in events]


def lifecycle_fn(options: Sequence[str]) -> TrackShipmentsFn:
    """The lifecycle's DoFn as the job's ``options`` configure it."""
    return TrackShipmentsFn(track_lifecycles(WaybillOptions(list(options))).settings)


def lifecycle_loop(shipments: dict[str, list[dict[str, Any]]], options: Sequence[str]) -> Measurement:
    """The lifecycle as a plain loop over each shipment's events; facts: the views and view
    changes, and their bytes."""
    track = lifecycle_fn(options)

    def loop() -> dict[str, int]:
        view_bytes = views = 0
        for key, events in shipments.items():
            for tag, value in shipment_outputs(track, key, events):
                name = _OUTPUT_SCHEMA.get(tag)
                if name:
                    line = json_records.to_json_line(name, value)
                    if name in _VIEW_SCHEMAS:
                        view_bytes, views = view_bytes + len(line.encode()) + 1, views + 1
        return {"views": views, "view_bytes": view_bytes}

    return timed(loop, lambda written: written)


def view_lines(result: Any, output_dir: Path) -> dict[str, int]:
    """The ``WaybillView`` and ``WaybillViewChange`` lines a finished run wrote, and their bytes."""
    files = [path for folder in _VIEW_DIRS for path in (output_dir / folder).rglob("*.jsonl")]
    return {"views": sum(1 for p in files for _ in p.open("rb")), "view_bytes": sum(p.stat().st_size for p in files)}


def measure_scans(
    scans: int, repeats: int, fixed_cpu_s: float, modes: Sequence[ViewMode] = VIEW_MODES,
    per_waybill: Sequence[int] = SCANS_PER_WAYBILL,
) -> list[dict[str, Any]]:
    """One row per mode and ``per_waybill`` (medians of ``repeats``); ``fixed_cpu_s`` is the
    whole graph's CPU over no message (the harness's fixed-cost row), subtracted from each run."""
    rows = []
    for mode in modes:
        first_us: float | None = None
        for n in per_waybill:
            messages = scan_traffic(scans, n, first_day(1))
            workload = build_workload(messages)
            shipments = by_shipment(workload.identified)
            live = live_shipment_bytes(lifecycle_fn(mode.options), shipments)
            label = f"scans, {mode.name}, {n} per waybill"
            loops = repeat(f"{label}, plain loop", repeats, lambda: lifecycle_loop(shipments, mode.options))
            with tempfile.TemporaryDirectory(prefix="bench-scans-inputs-") as folder:
                inputs = Inputs(workload, Path(folder))
                graphs = repeat(f"{label}, whole graph", repeats, lambda: measure_graph(inputs, mode.options, view_lines))
            graph_us = (statistics.median(g.cpu_s for g in graphs) - fixed_cpu_s) / len(messages) * 1e6
            first_us = graph_us if first_us is None else first_us
            views, view_bytes = graphs[-1].facts["views"], graphs[-1].facts["view_bytes"]
            rows.append({
                "mode": mode.name, "per_waybill": n, "messages": len(messages), "waybills": len(shipments),
                "graph_cpu_s": [g.cpu_s for g in graphs], "graph_cpu_us_per_event": graph_us,
                "ratio_to_first": graph_us / first_us,
                "views": views, "view_bytes": view_bytes, "bytes_per_view": view_bytes / max(views, 1),
                "loop_cpu_s": [m.cpu_s for m in loops],
                "loop_cpu_us_per_event": statistics.median(m.cpu_s for m in loops) / len(messages) * 1e6,
                "loop_views": loops[-1].facts["views"],
                "state_bytes_per_waybill": statistics.mean(cell + bag for cell, bag in live),
                "cell_bytes_per_waybill": statistics.mean(cell for cell, _ in live),
            })
    return rows
