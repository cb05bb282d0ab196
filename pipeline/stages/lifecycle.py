"""The waybill lifecycle stage: one view per shipment, real-name and stuck-parcel alerts, bounded state.

Why a keyed stateful DoFn with event-time timers, not windows: a shipment's life has no
fixed length (an hour for a same-city parcel, weeks for a customs hold), its rules are
deadlines relative to its own events (pickup + 30 min, last scan + 24 h), and a view must
be emitted on every change with a version that keeps increasing across the whole life.
Session windows would split a shipment at every long silence (restarting the version and
losing the pickup for the real-name rule), and fixed windows cut it at arbitrary instants.
One shipment state per key (its scans in a bag beside it, see :class:`TrackShipmentsFn`) plus
one timer at the earliest pending deadline
(:meth:`pipeline.stages.shipment.Shipment.next_due`) expresses exactly the rules.

Why the key is the master waybill number: a multi-piece shipment is registered and picked
up as one (the real-name registration comes on the master; the pieces carry only scans),
so the real-name rule and the master's view need every piece in the same state cell. A
piece's events are keyed by their ``parent_waybill_no``; the view lists the pieces under
the master, each with its own scans, status and stuck watch.

Worked example (defaults): a single waybill W, events in event time, arrivals out of order.

=========================  ========================================================================
watermark / arrival         what the stage emits
=========================  ========================================================================
ARRIVE 12:00 arrives        view v1 (status IN_TRANSIT, one scan); timer at 12:00 + 24 h
PICKUP 10:00 arrives        view v2 (scans PICKUP, ARRIVE: event-time order); timer at 10:30
watermark 10:30             alert REAL_NAME_MISSING OPEN (deadline 10:30); view v3 (MISSING)
registration 10:50 arrives  alert REAL_NAME_MISSING CLOSED; view v4 (REGISTERED_LATE)
DELIVERED 15:00 arrives     view v5 (DELIVERED); timer at 15:00 + 24 h (retention)
watermark 15:00 next day    final view v6 (is_final, DELIVERED); state shrinks to a tombstone
a DEPART 11:00 arrives      dead letter late_for_closed_waybill (not lost; not in any view)
watermark + 7 days          tombstone dropped: no state left for W
an ARRIVE 13:00 arrives     a new state of W (generation g2 > g1): view (g2, v1), newer than (g1, v6)
=========================  ========================================================================

With ``views="incremental"`` the versions between a generation's first and final view leave
as ``WaybillViewChange`` records on their own output (``view_changes``): in the table above,
v1 and v6 stay full views, v2 to v5 are changes, each with the header and what changed since
the version before it (v2: the PICKUP scan added before the ARRIVE, ``scan_count`` 2).

Every view carries ``(generation, version)``: the generation is fixed when the state opens
(wall-clock time, so a state opened again after its tombstone was dropped has a larger one:
g1 above for the first life, g2 for the second), the version counts the views of that state.
A receiver keeps, per waybill_no, the view with the largest pair.

Runner notes (Beam 2.77): the Python DirectRunner does not hold the output watermark for
pending timers, so the outputs are meant for sinks in the global window, not for event-time
windows downstream; it also loses metrics incremented inside timer callbacks, so the counters
are incremented in a plain step after the stateful one. On the FnApiRunner, timer DoFns
back to back can fail to fire timers; behind de-duplication (a timer DoFn), validation and
identification, this stage's timers fire without a ``Reshuffle`` in between (with one, the
views, alerts and counters are the same), and
``tests/unit/stages/test_lifecycle.py::test_several_synthetic_days_keep_live_states_flat_on_the_fnapi_runner``
runs that chain, so a wiring that breaks it fails there.
"""
from __future__ import annotations

import enum
import logging
from datetime import timedelta
from typing import Any, Iterator, Union

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipeline.model import schemas
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record
from pipeline.model.json_records import format_timestamp
from pipeline.stages.calendar_days import to_datetime, to_timestamp
from pipeline.stages.scan_coder import ScanCoder
from pipeline.stages.shipment import ALERT, CHANGE, FULL_VIEWS, VIEW, VIEW_CHANGE, Output, Settings, Shipment

_LOGGER = logging.getLogger(__name__)

WAYBILL_VIEW = f"{schemas.NAMESPACE}.WaybillView"
WAYBILL_VIEW_CHANGE = f"{schemas.NAMESPACE}.WaybillViewChange"
WAYBILL_ALERT = f"{schemas.NAMESPACE}.WaybillAlert"
WAYBILL_STATE_CHANGE = f"{schemas.NAMESPACE}.WaybillStateChange"


class LifecycleOutput(str, enum.Enum):
    """Outputs of :class:`TrackWaybillLifecycles`."""

    VIEWS = "views"
    VIEW_CHANGES = "view_changes"
    ALERTS = "alerts"
    STATE_CHANGES = "state_changes"
    EVENTS_WITH_MERCHANT = "events_with_merchant"
    ATTRIBUTED_LATE = "attributed_late"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


_TAG_OF_OUTPUT = {VIEW: LifecycleOutput.VIEWS.value, VIEW_CHANGE: LifecycleOutput.VIEW_CHANGES.value,
                  ALERT: LifecycleOutput.ALERTS.value, CHANGE: LifecycleOutput.STATE_CHANGES.value}

Identified = tuple[str, dict[str, Any]]


def master_waybill_no(identified: Identified) -> str:
    """The key of the shipment an identified event belongs to: its master waybill number."""
    ident = identified[1]["identification"]
    return ident["master_waybill_no"] or ident["waybill_no"]


def _by_master(identified: Identified) -> tuple[str, dict[str, Any]]:
    return master_waybill_no(identified), identified[1]["event"]


class TrackShipmentsFn(beam.DoFn):
    """``(master waybill no, courier event)`` -> views (main), view changes, alerts, state changes, dead letters.

    State per key: the :class:`~pipeline.stages.shipment.Shipment` without its scans (``shipment``,
    pickled, read and written at every event and timer) and the scans, each added once as
    ``(waybill_no, scan)`` (``scans``, a bag read only when a full view is built: every version
    with ``views="full"``, with ``"incremental"`` a generation's first and final one; emptied when
    the shipment retires) and the events taken before its ORDER_INFO (``unattributed``, a bag
    read once, when the ORDER_INFO arrives; emptied then or when the shipment retires). Timer
    per key: one event-time timer, always at the shipment's earliest pending deadline; when it
    fires every deadline up to its time is handled and it is set to the next one. After the
    tombstone is dropped the key has no state and no timer.

    Example: pickup at 10:00 with a 30 min registration delay: the timer is at 10:30. When
    the watermark passes 10:30 the callback runs with ``fired_at`` = 10:30, emits the alert
    and a view stamped 10:30, and sets the timer to the next deadline (last scan + 24 h).
    """

    SHIPMENT = ReadModifyWriteStateSpec("shipment", PickleCoder())
    SCANS = BagStateSpec("scans", ScanCoder())
    UNATTRIBUTED = BagStateSpec("unattributed", PickleCoder())
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    def process(
        self,
        element: tuple[str, dict[str, Any]],
        state: Any = beam.DoFn.StateParam(SHIPMENT),
        scans: Any = beam.DoFn.StateParam(SCANS),
        held: Any = beam.DoFn.StateParam(UNATTRIBUTED),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterator[Union[dict[str, Any], pvalue.TaggedOutput]]:
        key, event = element
        shipment: Shipment | None = state.read()
        if shipment is not None and shipment.closed_at is not None:
            yield pvalue.TaggedOutput(LifecycleOutput.DEAD_LETTER.value, _late_for_closed(key, shipment, event))
            return
        outputs: list[Output] = []
        if shipment is None:
            shipment = Shipment.open(key, event["event_time"])
            outputs.append(shipment.opened())
        shipment.keep_scans_in(scans)
        outputs += shipment.add(event, self._settings)
        merchant_id = shipment.order_info["merchant_id"] if shipment.order_info else None
        attributed_late = _hold_or_release(shipment, held, event, merchant_id)
        state.write(shipment)
        self._set(wake, shipment)
        yield from _routed(outputs)
        yield pvalue.TaggedOutput(LifecycleOutput.EVENTS_WITH_MERCHANT.value, (event, merchant_id))
        for earlier in attributed_late:
            yield pvalue.TaggedOutput(LifecycleOutput.ATTRIBUTED_LATE.value, (earlier, merchant_id))

    @on_timer(WAKE)
    def on_wake(
        self,
        fired_at: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        state: Any = beam.DoFn.StateParam(SHIPMENT),
        scans: Any = beam.DoFn.StateParam(SCANS),
        held: Any = beam.DoFn.StateParam(UNATTRIBUTED),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterator[Union[dict[str, Any], pvalue.TaggedOutput]]:
        shipment: Shipment | None = state.read()
        if shipment is None:
            # Happens once per key at the end of a bounded streaming run on the DirectRunner, which
            # fires the timer again after the state was cleared; harmless, nothing to emit.
            _LOGGER.debug("lifecycle timer fired at %s for a key without state", fired_at)
            return
        shipment.keep_scans_in(scans)
        outputs = shipment.fire(to_datetime(fired_at), self._settings)
        if shipment.closed_at is not None and (shipment.holds_unattributed or shipment.unattributed):
            held.clear()  # a retired shipment takes no more events: no ORDER_INFO will come for them
            shipment.holds_unattributed, shipment.unattributed = False, ()
        if shipment.cleared:
            state.clear()
        else:
            state.write(shipment)
            self._set(wake, shipment)
        yield from _routed(outputs)

    def _set(self, wake: Any, shipment: Shipment) -> None:
        due = shipment.next_due(self._settings)
        if due is not None:
            wake.set(to_timestamp(due))


def _hold_or_release(shipment: Shipment, held: Any, event: dict[str, Any], merchant_id: str | None) -> list[dict[str, Any]]:
    """Holds ``event`` in the bag ``held`` while its shipment has no merchant; once it has one,
    the events held so far (to attribute to it), the bag emptied. The bag is read only then:
    holding costs an append per event, not a read and write of every event held.

    Example: REGISTRATION and PICKUP arrive before the ORDER_INFO: each is added to the bag
    and ``[]`` is returned; the ORDER_INFO returns ``[REGISTRATION, PICKUP]``; later events ``[]``.
    """
    for earlier in shipment.unattributed:  # held inside a state pickled in the earlier form
        held.add(earlier)
        shipment.holds_unattributed = True
    shipment.unattributed = ()
    if not merchant_id:
        held.add(event)
        shipment.holds_unattributed = True
        return []
    if not shipment.holds_unattributed:
        return []
    released = list(held.read())
    held.clear()
    shipment.holds_unattributed = False
    return released


def _routed(outputs: list[Output]) -> Iterator[Union[dict[str, Any], pvalue.TaggedOutput]]:
    for kind, record in outputs:
        yield record if kind == VIEW else pvalue.TaggedOutput(_TAG_OF_OUTPUT[kind], record)


def _late_for_closed(key: str, shipment: Shipment, event: dict[str, Any]) -> dict[str, Any]:
    """The DeadLetter record of an event for a shipment whose state was already dropped."""
    assert shipment.closed_at is not None
    return dead_letter_record(
        raw_payload=schemas.encode(schemas.COURIER_EVENT, event),
        attributes={
            "event_id": event["event_id"],
            "event_time": format_timestamp(event["event_time"]),
            "schema": schemas.COURIER_EVENT,
            "waybill_no": event["waybill_no"],
        },
        source="courier",
        stage=Stage.LIFECYCLE,
        kind=ErrorKind.LATE_FOR_CLOSED_WAYBILL,
        message=(
            f"{event['event_type']} of waybill {event['waybill_no']} at "
            f"{format_timestamp(event['event_time'])} arrived after shipment {key} was closed at "
            f"{format_timestamp(shipment.closed_at)} ({shipment.final_reason}, final view generation "
            f"{shipment.generation} version {shipment.version}); it was pushed to supervision but is in no "
            "lifecycle view"
        ),
        event_id=event["event_id"],
    )


class _Count(beam.DoFn):
    """Counts records by name (kept out of the stateful DoFn: the DirectRunner drops metrics
    incremented in timer callbacks)."""

    def __init__(self, name_of: Any) -> None:
        super().__init__()
        self._name_of = name_of
        self._counters: dict[str, Any] = {}

    def process(self, record: Any) -> Iterator[Any]:
        name = self._name_of(record)
        if name not in self._counters:
            self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
        self._counters[name].inc()
        yield record


def _change_counter(change: dict[str, Any]) -> str:
    return f"lifecycle_{change['change']}"


def _alert_counter(alert: dict[str, Any]) -> str:
    return f"lifecycle_alerts_{alert['kind'].lower()}_{alert['status'].lower()}"


def _tracked_counter(event_with_merchant: Any) -> str:
    return "lifecycle_events"


def _attributed_late_counter(event_with_merchant: Any) -> str:
    return "lifecycle_events_attributed_late"


def _view_counter(view: dict[str, Any]) -> str:
    return "lifecycle_views"


def _view_change_counter(change: dict[str, Any]) -> str:
    return "lifecycle_view_changes"


class TrackWaybillLifecycles(beam.PTransform):
    """Identified courier events -> lifecycle views, alerts, dead letters, state changes.

    Input: ``(waybill_no, {event_id, identification, event})`` as :class:`IdentifyWaybills`
    emits them, each timestamped with its event_time. Output, all in the global window:

    * ``views``: ``WaybillView`` records, a new version per change of a shipment; newer views
      have a larger ``(generation, version)``, also across a state dropped and opened again;
      with ``views="incremental"`` only the first and the final version of each generation;
    * ``view_changes``: with ``views="incremental"``, ``WaybillViewChange`` records, the versions
      between those two (none with ``views="full"``); counted as ``lifecycle_view_changes``;
    * ``alerts``: ``WaybillAlert`` records (REAL_NAME_MISSING / STUCK, OPEN / CLOSED);
    * ``dead_letter``: ``DeadLetter`` records of events for shipments already closed;
    * ``state_changes``: ``{'change': 'opened'|'retired'|'cleared', 'waybill_no', 'at',
      'opened_at'}``, counted as ``lifecycle_opened`` / ``_retired`` / ``_cleared``;
    * ``events_with_merchant``: ``(courier event, merchant_id)`` for every event the stage
      took, with the merchant of its shipment's ORDER_INFO so far (None before it arrives),
      for the subscriber push: a scan itself does not name the merchant; counted as
      ``lifecycle_events``;
    * ``attributed_late``: ``(courier event, merchant_id)`` again for each event that went out
      on ``events_with_merchant`` with None, once its shipment's ORDER_INFO arrives (within
      the state's retention), for the account digests; counted as
      ``lifecycle_events_attributed_late``. Example: REAL_NAME_REGISTRATION at 10:00 and
      PICKUP at 10:05 arrive before the ORDER_INFO of merchant M-002: both leave with None;
      when the ORDER_INFO arrives it leaves with M-002, and the two follow here with M-002.

    Args (durations in event-time seconds):
        registration_delay: after the first pickup, by when the sender must be registered.
        stuck_after: silence after which an undelivered parcel is stuck.
        retain_after_delivery: how long a delivered shipment's state is kept after its last
            event, so late scans still join its view.
        expire_after: how long an undelivered shipment's state is kept after its last event.
        remember_closed_for: how long a closed shipment is remembered (a tombstone) so that
            late events are dead-lettered; after it, a late event opens a new shipment (a new
            generation, versions from 1).
        views: ``"full"``: every version a full ``WaybillView``; ``"incremental"``: the first
            and final version of a generation full, the others ``WaybillViewChange`` records.

    See the module docstring for a worked example.
    """

    def __init__(
        self,
        registration_delay: float = 30 * 60,
        stuck_after: float = 24 * 3600,
        retain_after_delivery: float = 24 * 3600,
        expire_after: float = 7 * 24 * 3600,
        remember_closed_for: float = 7 * 24 * 3600,
        views: str = FULL_VIEWS,
    ) -> None:
        super().__init__()
        self.settings = Settings(
            registration_delay=timedelta(seconds=registration_delay),
            stuck_after=timedelta(seconds=stuck_after),
            retain_after_delivery=timedelta(seconds=retain_after_delivery),
            expire_after=timedelta(seconds=expire_after),
            remember_closed_for=timedelta(seconds=remember_closed_for),
            views=views,
        )

    def expand(self, identified: beam.PCollection) -> dict[str, beam.PCollection]:
        results = (
            identified
            | "KeyByMasterWaybill" >> beam.Map(_by_master).with_output_types(tuple[str, dict[str, Any]])
            | "TrackShipments"
            >> beam.ParDo(TrackShipmentsFn(self.settings)).with_outputs(
                *(output.value for output in LifecycleOutput if output is not LifecycleOutput.VIEWS),
                main=LifecycleOutput.VIEWS.value,
            )
        )
        out = LifecycleOutput
        return {
            out.VIEWS.value: results[out.VIEWS.value] | "CountViews" >> beam.ParDo(_Count(_view_counter)),
            out.VIEW_CHANGES.value: results[out.VIEW_CHANGES.value]
            | "CountViewChanges" >> beam.ParDo(_Count(_view_change_counter)),
            out.ALERTS.value: results[out.ALERTS.value] | "CountAlerts" >> beam.ParDo(_Count(_alert_counter)),
            out.STATE_CHANGES.value: results[out.STATE_CHANGES.value]
            | "CountStateChanges" >> beam.ParDo(_Count(_change_counter)),
            out.EVENTS_WITH_MERCHANT.value: results[out.EVENTS_WITH_MERCHANT.value]
            | "CountTrackedEvents" >> beam.ParDo(_Count(_tracked_counter)),
            out.ATTRIBUTED_LATE.value: results[out.ATTRIBUTED_LATE.value]
            | "CountAttributedLate" >> beam.ParDo(_Count(_attributed_late_counter)),
            out.DEAD_LETTER.value: results[out.DEAD_LETTER.value],
        }
