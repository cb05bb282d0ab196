"""One shipment's lifecycle and its rules, as plain Python (no Beam): what the lifecycle stage keeps per key.

A shipment is a master waybill with the pieces that name it as ``parent_waybill_no`` (a
single-piece waybill is a shipment of one). :class:`Shipment` takes courier events in any
order (:meth:`Shipment.add`) and deadlines as event time passes (:meth:`Shipment.fire`), and
answers with the records to emit: new versions of the ``WaybillView`` (or, with incremental
views, ``WaybillViewChange`` records between a generation's first and final view), ``WaybillAlert``
records, and state changes (opened / retired / cleared) for the live-state counters.

Deadlines (:meth:`Shipment.next_due` is the earliest; the stage sets one event-time timer there):

* real-name: first pickup of the shipment + ``registration_delay``. Registered by then:
  COMPLIANT. Not: an OPEN ``REAL_NAME_MISSING`` alert; a registration received later closes it.
* stuck, per parcel with at least one scan and no DELIVERED scan: last scan + ``stuck_after``.
  One OPEN ``STUCK`` alert per silence; a newer scan closes it and starts a new watch.
* retire: last event + ``retain_after_delivery`` once every parcel is delivered, else last
  event + ``expire_after``. A final view (``is_final``) is emitted, and the shipment shrinks
  to a tombstone (number, generation and last version, when and why it closed).
* clear: retired + ``remember_closed_for``: the tombstone is dropped. Until then a late event
  for the shipment is recognised (and dead-lettered by the stage); after it, it opens a new
  shipment: a new ``generation`` whose versions start again at 1 (see :attr:`Shipment.generation`).

Versions: a view's ``(generation, version)`` is larger than that of every earlier view of the
same waybill number. Example: W's state opens at wall-clock time g1 and emits views
(g1, 1) ... (g1, 4), the last one final; its tombstone is dropped a week later (event time);
a late scan then opens a new state at wall-clock time g2 > g1, whose views are (g2, 1), (g2, 2):
newer than (g1, 4) although their version is lower.

Incremental views (``Settings.views`` = ``incremental``): version 1 of a generation and its final
version are full ``WaybillView`` records; every version between them is a ``WaybillViewChange``
holding the view's header and only what changed since the version before it: the registration or
order information if either changed, and for each parcel whose track changed its standing and the
scans it gained. Example: views v1 (PICKUP), then an ARRIVE scan: a change v2 (base_version 1)
with one parcel, ``scan_count`` 2 and ``new_scans`` [ARRIVE].

Where the scans are: a :class:`Track` keeps only what an event and a deadline need (its last scan,
DELIVERED time, scan count, hashed scan ids and the scans added since the last version); every
scan goes once, as ``(waybill_no of its track, scan)``, to the shipment's :class:`ScanStore`, which
is read only to build a full view and emptied when the shipment retires. A shipment keeps it in
memory (:class:`ScanList`, pickled with it); the lifecycle stage hands it its bag state instead
(:meth:`Shipment.keep_scans_in`), so the state it pickles after each event does not grow with the
scans, and with incremental views only a generation's first and final view read the bag.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional, Protocol

from pipeline.stages.identify import WAYBILL_NAMESPACE, identification

Record = dict[str, Any]
Output = tuple[str, Record]  # (VIEW | VIEW_CHANGE | ALERT | CHANGE, record)

VIEW = "view"
VIEW_CHANGE = "view_change"
ALERT = "alert"
CHANGE = "change"

# The forms of the views between a generation's first and final one (Settings.views).
FULL_VIEWS = "full"
INCREMENTAL_VIEWS = "incremental"
VIEW_MODES = (FULL_VIEWS, INCREMENTAL_VIEWS)

OPENED = "opened"
RETIRED = "retired"
CLEARED = "cleared"

# The kinds of WaybillAlert.
REAL_NAME_MISSING = "REAL_NAME_MISSING"
STUCK = "STUCK"

_STATUS_OF_SCAN = {
    "PICKUP": "PICKED_UP",
    "DEPART": "IN_TRANSIT",
    "ARRIVE": "IN_TRANSIT",
    "DISPATCH": "OUT_FOR_DELIVERY",
    "DELIVERED": "DELIVERED",
    "EXCEPTION": "EXCEPTION",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The event-time durations of the lifecycle rules, and the form of the views between a
    generation's first and final one (see the module docstring)."""

    registration_delay: timedelta = timedelta(minutes=30)
    stuck_after: timedelta = timedelta(hours=24)
    retain_after_delivery: timedelta = timedelta(hours=24)
    expire_after: timedelta = timedelta(days=7)
    remember_closed_for: timedelta = timedelta(days=7)
    views: str = FULL_VIEWS

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, timedelta) and value <= timedelta(0):
                raise ValueError(f"{field.name} must be a positive duration, got {value}")
        if self.views not in VIEW_MODES:
            raise ValueError(f"views must be one of {', '.join(VIEW_MODES)}, got {self.views!r}")


def _scan_order(scan: Record) -> tuple[datetime, str]:
    """Where a scan goes in its track: event time, then event id."""
    return scan["event_time"], scan["event_id"]


def scan_id_hash(event_id: str) -> int:
    """The 64-bit hash a track keeps of a scan's event_id, the same on every run and worker.

    >>> scan_id_hash("WB1/TRACK_SCAN/PICKUP/2026-11-21T09:00:00+00:00") < 2 ** 64
    True
    """
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


class ScanStore(Protocol):
    """Where a shipment keeps its scans, as ``(waybill_no of the track, scan)``: a list in memory,
    or the lifecycle stage's bag state (the same three methods)."""

    def add(self, item: tuple[str, Record]) -> None: ...

    def read(self) -> Iterable[tuple[str, Record]]: ...

    def clear(self) -> None: ...


class ScanList:
    """A :class:`ScanStore` in memory."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Record]] = []

    def add(self, item: tuple[str, Record]) -> None:
        self.items.append(item)

    def read(self) -> list[tuple[str, Record]]:
        return self.items

    def clear(self) -> None:
        self.items = []


@dataclasses.dataclass
class Track:
    """One parcel's standing: what a new scan and a deadline need, none of it growing with the
    track's length except the hashed scan ids (its scans are in the shipment's :class:`ScanStore`).

    Duplicates are recognised by a 64-bit hash of the event_id (:func:`scan_id_hash`), not the
    id itself: two distinct scans of a track with the same hash would drop the later one as a
    duplicate, with a probability of about n²/2⁶⁵ for a track of n scans (1e-15 at 200 scans).
    """

    waybill_no: str
    parent_waybill_no: Optional[str]
    last: Optional[Record] = None  # the last scan in (event time, event id) order
    count: int = 0  # scans in all
    ids: set[int] = dataclasses.field(default_factory=set)  # scan_id_hash of every scan
    stuck_on: Optional[Record] = None  # while a STUCK alert is open: the last scan before the silence
    stuck_deadline: Optional[datetime] = None  # and the deadline that raised it
    delivered_at: Optional[datetime] = None  # event time of the earliest DELIVERED scan
    fresh: list[Record] = dataclasses.field(default_factory=list)  # scans added since the last view or change
    touched: bool = False  # the track changed since the last view or change (a scan, a stuck watch)

    def add(self, scan: Record) -> bool:
        """Takes ``scan``; False if a scan with the same event_id (hash) is already there."""
        key = scan_id_hash(scan["event_id"])
        if key in self.ids:
            return False
        self.ids.add(key)
        self.count += 1
        order = _scan_order(scan)
        if self.last is None or order >= _scan_order(self.last):
            self.last = scan
        if scan["scan"]["scan_type"] == "DELIVERED" and (self.delivered_at is None or order[0] < self.delivered_at):
            self.delivered_at = order[0]
        self.fresh.append(scan)
        self.touched = True
        return True

    def taken_from_scans_inside(self) -> list[Record]:
        """Rebuilds a track unpickled with its scans inside it (``scans``, with or without the
        ``event_ids``, ``delivered_at``, ``fresh`` and ``touched`` kept beside them) as this class
        keeps it, and returns those scans; [] for a track already kept so."""
        state = vars(self)
        if "scans" not in state:
            return []
        scans: list[Record] = state.pop("scans")
        state.pop("event_ids", None)
        fresh, touched = state.pop("fresh", []), state.pop("touched", False)
        self.last, self.count, self.ids, self.delivered_at, self.fresh = None, 0, set(), None, []
        for scan in scans:
            self.add(scan)
        self.fresh, self.touched = fresh, touched
        return scans

    @property
    def status(self) -> str:
        if self.delivered_at is not None:
            return "DELIVERED"
        return _STATUS_OF_SCAN[self.last["scan"]["scan_type"]] if self.last else "AWAITING_PICKUP"

    def record(self, scans: list[Record]) -> Record:
        """The ``ParcelTrack`` record, with ``scans``: this track's, in event-time order."""
        return {
            "identification": identification(self.waybill_no, self.parent_waybill_no),
            "status": self.status,
            "scans": scans,
            "last_scan_time": self.last["event_time"] if self.last else None,
            "delivered_at": self.delivered_at,
            "stuck_since": self.stuck_on["event_time"] if self.stuck_on else None,
        }

    def change(self) -> Record:
        """The ``ParcelTrackChange`` record: the track's standing now and the scans added since
        the last view or change, in event-time order."""
        return {
            "identification": identification(self.waybill_no, self.parent_waybill_no),
            "status": self.status,
            "last_scan_time": self.last["event_time"] if self.last else None,
            "delivered_at": self.delivered_at,
            "stuck_since": self.stuck_on["event_time"] if self.stuck_on else None,
            "scan_count": self.count,
            "new_scans": sorted(self.fresh, key=_scan_order),
        }

    def emitted(self) -> None:
        """A view or change has carried the track as it is."""
        self.fresh, self.touched = [], False


@dataclasses.dataclass
class Shipment:
    """The state of one shipment (key: the master waybill number); see the module docstring.

    Example (default settings; ``tests/unit/stages/test_lifecycle.py`` runs it)::

        s = Shipment.open("WB1", pickup.event_time)       # pickup: a PICKUP scan at 10:00
        s.add(pickup)                  # -> [view v1]
        s.next_due(Settings())         # -> 10:30, the real-name deadline
        s.fire(10:30, Settings())      # -> [alert REAL_NAME_MISSING OPEN, view v2 (MISSING)]
        s.next_due(Settings())         # -> 10:00 the next day: 24 h after the last scan
        s.fire(10:00 + 8 days, ...)    # -> [alert STUCK OPEN, view v3, final view v4 (EXPIRED after
                                       #     7 days without events), change 'retired']

    """

    waybill_no: str
    first_event_at: datetime
    last_event_at: datetime
    # When this state was opened: wall-clock microseconds since the epoch. A state opened again
    # after the tombstone was dropped is opened later in real time (the drop and the late event
    # come after everything of the old state), so its generation is larger, and its views,
    # versions 1, 2, ... again, still compare newer by (generation, version). A pickled state
    # without the field reads the default 0, older than any real generation.
    generation: int = 0
    version: int = 0
    tracks: dict[str, Track] = dataclasses.field(default_factory=dict)
    outlet_id: str = ""
    courier_id: Optional[str] = None
    pickup: Optional[Record] = None  # the earliest PICKUP scan of any parcel
    registration: Optional[Record] = None
    registered_at: Optional[datetime] = None
    order_info: Optional[Record] = None
    order_info_at: Optional[datetime] = None
    real_name_status: str = "PENDING"
    # Whether the registration / order information changed since the last view or view change.
    registration_changed: bool = False
    order_info_changed: bool = False
    real_name_deadline: Optional[datetime] = None  # set when the real-name deadline passed
    closed_at: Optional[datetime] = None  # set once retired: the shipment is a tombstone
    final_reason: Optional[str] = None
    # Whether courier events taken before the ORDER_INFO named the merchant are held, until it
    # does, in the lifecycle stage's bag ``unattributed`` (the stage then attributes them).
    holds_unattributed: bool = False
    # Such events in a state pickled when the shipment held them itself; the stage moves them
    # to its bag on first use. A tuple, so a pickled state without it reads ().
    unattributed: tuple[Record, ...] = ()
    cleared: bool = False  # the tombstone expired: the stage drops the state
    # Every scan of the tracks; pickled with the shipment only while it is a ScanList.
    scan_store: ScanStore = dataclasses.field(default_factory=ScanList, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state: without the scan store unless it is the shipment's own list."""
        if isinstance(self.scan_store, ScanList):
            return self.__dict__
        return {k: v for k, v in self.__dict__.items() if k != "scan_store"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickles a shipment. One pickled without its scan store gets an empty list; one whose
        tracks hold their scans inside them gets them moved to that list (see
        :meth:`keep_scans_in`, which moves them on to the stage's bag)."""
        self.__dict__.update(state)
        if "scan_store" not in state:
            self.scan_store = ScanList()
        for number, track in self.tracks.items():
            for scan in track.taken_from_scans_inside():
                self.scan_store.add((number, scan))

    def keep_scans_in(self, store: ScanStore) -> None:
        """Keeps the scans in ``store`` from now on; the scans held in memory so far (none for a
        shipment the stage opened, all of them for a state pickled with its scans inside its
        tracks) move there.

        Example: the stage unpickles a state whose tracks hold 40 scans and calls this with its
        bag: the 40 scans are added to the bag, and the state it writes back holds none.
        """
        if isinstance(self.scan_store, ScanList):
            for item in self.scan_store.read():
                store.add(item)
        self.scan_store = store

    @classmethod
    def open(cls, waybill_no: str, at: datetime) -> Shipment:
        """A new state for ``waybill_no``, first event at ``at``, of a new generation (now)."""
        return cls(waybill_no=waybill_no, first_event_at=at, last_event_at=at, generation=time.time_ns() // 1000)

    # --- events -------------------------------------------------------------------------

    def add(self, event: Record, settings: Settings = Settings()) -> list[Output]:
        """Takes one validated courier event of this shipment; returns what to emit (the form of
        a view from ``settings.views``).

        Raises:
            ValueError: the shipment is closed (the stage checks :attr:`closed_at` first).
        """
        if self.closed_at is not None:
            raise ValueError(f"shipment {self.waybill_no} closed at {self.closed_at}; it takes no events")
        at: datetime = event["event_time"]
        self.first_event_at = min(self.first_event_at, at)
        self.last_event_at = max(self.last_event_at, at)
        if not self.outlet_id or (self.pickup is None and at <= self.first_event_at):
            self.outlet_id, self.courier_id = event["outlet_id"], event["courier_id"]
        kind = event["event_type"]
        if kind == "TRACK_SCAN":
            outputs, changed = self._add_scan(event)
        elif kind == "REAL_NAME_REGISTRATION":
            outputs, changed = self._add_registration(event)
        else:
            outputs, changed = self._add_order_info(event)
        return outputs + ([self._view(at, settings)] if changed else [])

    def _add_scan(self, event: Record) -> tuple[list[Output], bool]:
        number = event["waybill_no"]
        track = self.tracks.setdefault(number, Track(number, event["parent_waybill_no"]))
        scan = {
            "event_id": event["event_id"],
            "event_time": event["event_time"],
            "outlet_id": event["outlet_id"],
            "courier_id": event["courier_id"],
            "scan": dict(event["payload"]),
        }
        if not track.add(scan):
            return [], False
        self.scan_store.add((number, scan))
        outputs = []
        if scan["scan"]["scan_type"] == "PICKUP" and (self.pickup is None or scan["event_time"] < self.pickup["event_time"]):
            self.pickup = scan
            self.outlet_id, self.courier_id = scan["outlet_id"], scan["courier_id"]
        if track.stuck_on is not None and scan["event_time"] > track.stuck_on["event_time"]:
            outputs.append(self._stuck_alert(track, "CLOSED", scan["event_time"], closed_by=scan))
            track.stuck_on = track.stuck_deadline = None
        return outputs, True

    def _add_registration(self, event: Record) -> tuple[list[Output], bool]:
        at = event["event_time"]
        if self.registered_at is not None and at >= self.registered_at:
            return [], False  # the earliest registration is the one that counts
        self.registration, self.registered_at = dict(event["payload"]), at
        self.registration_changed = True
        if self.real_name_status != "MISSING":
            return [], True
        assert self.real_name_deadline is not None  # MISSING is set when the deadline passes
        self.real_name_status = "COMPLIANT" if at <= self.real_name_deadline else "REGISTERED_LATE"
        return [self._real_name_alert("CLOSED", at)], True

    def _add_order_info(self, event: Record) -> tuple[list[Output], bool]:
        at = event["event_time"]
        if self.order_info_at is not None and at < self.order_info_at:
            return [], False  # the latest order information is the one that counts
        if self.order_info == event["payload"] and self.order_info_at == at:
            return [], False
        self.order_info, self.order_info_at = dict(event["payload"]), at
        self.order_info_changed = True
        return [], True

    # --- deadlines ----------------------------------------------------------------------

    def _dues(self, settings: Settings) -> list[tuple[datetime, int, str, str]]:
        """Pending deadlines: ``(due, tie order, action, waybill_no)``."""
        if self.closed_at is not None:
            return [] if self.cleared else [(self.closed_at + settings.remember_closed_for, 3, CLEARED, "")]
        dues = []
        if self.pickup is not None and self.real_name_status == "PENDING":
            dues.append((self.pickup["event_time"] + settings.registration_delay, 0, "real_name", ""))
        all_delivered = bool(self.tracks)
        for number, track in self.tracks.items():
            delivered = track.delivered_at is not None
            all_delivered = all_delivered and delivered
            if track.last is not None and not delivered and track.stuck_on is None:
                dues.append((track.last["event_time"] + settings.stuck_after, 1, "stuck", number))
        keep_for = settings.retain_after_delivery if all_delivered else settings.expire_after
        dues.append((self.last_event_at + keep_for, 2, "delivered" if all_delivered else "expired", ""))
        return sorted(dues)

    def next_due(self, settings: Settings) -> Optional[datetime]:
        """The earliest pending deadline (where the stage sets its timer); None once cleared."""
        dues = self._dues(settings)
        return dues[0][0] if dues else None

    def fire(self, now: datetime, settings: Settings) -> list[Output]:
        """Handles every deadline at or before ``now`` (event time), earliest first.

        Example: a shipment picked up at 10:00 and never registered, with nothing else
        happening: ``fire(10:30)`` gives the OPEN alert and a view (MISSING);
        ``fire(10:00 next day)`` a STUCK alert and a view; ``fire(+7 days)`` the final view
        (EXPIRED) and a ``retired`` change; ``fire(+7 more days)`` a ``cleared`` change.
        """
        outputs: list[Output] = []
        while True:
            dues = [d for d in self._dues(settings) if d[0] <= now]
            if not dues:
                return outputs
            due, _, action, number = dues[0]
            if action == "real_name":
                outputs += self._real_name_deadline(due, settings)
            elif action == "stuck":
                track = self.tracks[number]
                track.stuck_on, track.stuck_deadline, track.touched = track.last, due, True
                outputs += [self._stuck_alert(track, "OPEN", due), self._view(due, settings)]
            elif action == CLEARED:
                self.cleared = True
                outputs.append(self._change(CLEARED, due))
            else:
                outputs += self._retire(due, action.upper())

    def _real_name_deadline(self, due: datetime, settings: Settings) -> list[Output]:
        self.real_name_deadline = due
        if self.registered_at is not None and self.registered_at <= due:
            self.real_name_status = "COMPLIANT"
            return [self._view(due, settings)]
        self.real_name_status = "MISSING"
        outputs = [self._real_name_alert("OPEN", due)]
        if self.registered_at is not None:  # received before the deadline passed, stamped after it
            self.real_name_status = "REGISTERED_LATE"
            outputs.append(self._real_name_alert("CLOSED", due))
        return outputs + [self._view(due, settings)]

    def _retire(self, due: datetime, reason: str) -> list[Output]:
        self.final_reason = reason
        final = self._full_view(due, final=True)
        self.closed_at = due
        self.tracks, self.pickup, self.registration, self.order_info = {}, None, None, None
        self.scan_store.clear()
        return [final, self._change(RETIRED, due)]

    # --- records ------------------------------------------------------------------------

    def _view(self, as_of: datetime, settings: Settings) -> Output:
        """The next version: a full view, or with incremental views after version 1 a view change."""
        if settings.views == INCREMENTAL_VIEWS and self.version > 0:
            return self._view_change(as_of)
        return self._full_view(as_of)

    def _full_view(self, as_of: datetime, final: bool = False) -> Output:
        """A whole ``WaybillView``: the one place that reads the scan store."""
        self.version += 1
        scans: dict[str, list[Record]] = {number: [] for number in self.tracks}
        for number, scan in self.scan_store.read():
            scans[number].append(scan)
        for track_scans in scans.values():
            track_scans.sort(key=_scan_order)
        master = self.tracks.get(self.waybill_no) or Track(self.waybill_no, None)
        self._emitted()
        return VIEW, {
            "waybill_no": self.waybill_no,
            "version": self.version,
            "generation": self.generation,
            "master": master.record(scans.get(self.waybill_no, [])),
            "pieces": [t.record(scans[n]) for n, t in sorted(self.tracks.items()) if n != self.waybill_no],
            "outlet_id": self.outlet_id,
            "courier_id": self.courier_id,
            "real_name_registration": self.registration,
            "registered_at": self.registered_at,
            "real_name_status": self.real_name_status,
            "order_info": self.order_info,
            "order_info_at": self.order_info_at,
            "as_of": as_of,
            "is_final": final,
            "final_reason": self.final_reason if final else None,
            "emitted_at": _now(),
        }

    def _view_change(self, as_of: datetime) -> Output:
        self.version += 1
        touched = sorted((t for t in self.tracks.values() if t.touched),
                         key=lambda t: (t.waybill_no != self.waybill_no, t.waybill_no))
        change = {
            "waybill_no": self.waybill_no,
            "generation": self.generation,
            "version": self.version,
            "base_version": self.version - 1,
            "real_name_status": self.real_name_status,
            "outlet_id": self.outlet_id,
            "courier_id": self.courier_id,
            "real_name_registration": self.registration if self.registration_changed else None,
            "registered_at": self.registered_at if self.registration_changed else None,
            "order_info": self.order_info if self.order_info_changed else None,
            "order_info_at": self.order_info_at if self.order_info_changed else None,
            "parcels": [track.change() for track in touched],
            "as_of": as_of,
            "emitted_at": _now(),
        }
        self._emitted()
        return VIEW_CHANGE, change

    def _emitted(self) -> None:
        """The version just made carries the shipment as it is: nothing has changed since."""
        for track in self.tracks.values():
            if track.touched:
                track.emitted()
        self.registration_changed = self.order_info_changed = False

    def _real_name_alert(self, status: str, at: datetime) -> Output:
        assert self.pickup is not None and self.real_name_deadline is not None
        pickup_time, deadline = self.pickup["event_time"], self.real_name_deadline
        if status == "OPEN":
            message = (
                f"shipment {self.waybill_no} was picked up at {pickup_time.isoformat()} and has no "
                f"real-name registration by {deadline.isoformat()}"
            )
        else:
            assert self.registered_at is not None
            message = (
                f"shipment {self.waybill_no}: real-name registration made at "
                f"{self.registered_at.isoformat()}, deadline {deadline.isoformat()} ({self.real_name_status})"
            )
        return ALERT, self._alert(
            f"{REAL_NAME_MISSING}/{self.waybill_no}", REAL_NAME_MISSING, status,
            identification(self.waybill_no, None), self.pickup, at, deadline, message,
            pickup_time=pickup_time, closed_by_time=self.registered_at if status == "CLOSED" else None,
        )

    def _stuck_alert(self, track: Track, status: str, at: datetime, closed_by: Optional[Record] = None) -> Output:
        last, deadline = track.stuck_on, track.stuck_deadline
        assert last is not None and deadline is not None
        if closed_by is None:
            message = f"parcel {track.waybill_no} ({track.status}) has had no scan since {last['event_time'].isoformat()}"
        else:
            message = (
                f"parcel {track.waybill_no} scanned again ({closed_by['scan']['scan_type']}) "
                f"at {closed_by['event_time'].isoformat()}"
            )
        return ALERT, self._alert(
            f"{STUCK}/{track.waybill_no}/{last['event_time'].isoformat()}", STUCK, status,
            identification(track.waybill_no, track.parent_waybill_no), last, at, deadline, message,
            last_scan=last, closed_by_time=closed_by["event_time"] if closed_by else None,
        )

    def _alert(
        self, name: str, kind: str, status: str, ident: Record, scan: Record, at: datetime,
        deadline: datetime, message: str, pickup_time: Optional[datetime] = None,
        last_scan: Optional[Record] = None, closed_by_time: Optional[datetime] = None,
    ) -> Record:
        return {
            "alert_id": str(uuid.uuid5(WAYBILL_NAMESPACE, name)),
            "kind": kind,
            "status": status,
            "identification": ident,
            "outlet_id": scan["outlet_id"],
            "courier_id": scan["courier_id"],
            "merchant_id": self.order_info["merchant_id"] if self.order_info else None,
            "pickup_time": pickup_time,
            "last_scan": last_scan,
            "deadline": deadline,
            "closed_by_time": closed_by_time,
            "event_time": at,
            "message": message,
            "emitted_at": _now(),
        }

    def _change(self, change: str, at: datetime) -> Output:
        return CHANGE, {"change": change, "waybill_no": self.waybill_no, "at": at, "opened_at": self.first_event_at}

    def opened(self) -> Output:
        """The ``opened`` state change of a new shipment."""
        return self._change(OPENED, self.first_event_at)


def alert_event_id(alert: Record) -> str:
    """The id of one ``WaybillAlert`` record, unique and the same on every run: an alert's OPEN
    and CLOSED records share their ``alert_id``, so the status is part of it.

    >>> alert_event_id({"alert_id": "5f0c...", "status": "CLOSED"})
    '5f0c...:CLOSED'
    """
    return f"{alert['alert_id']}:{alert['status']}"


def _now() -> datetime:
    return datetime.now(timezone.utc)
