"""The subscriber push: who wants which events, and one CloudEvents message per (event, subscriber).

A subscription (JSON configuration, :func:`load_subscriptions`) names a subscriber, the
delivery target its messages go to, the CloudEvents content mode, a filter, optionally an
account digest (:mod:`pipeline.fanout.digests`), and the authorisation it relies on
(:mod:`pipeline.fanout.authorisation`; required)::

    [{"subscriber_id": "acme", "target": "acme-hook", "format": "cloudevents-structured",
      "filter": {"event_kinds": ["TRACK_SCAN", "WAYBILL_ALERT"], "scan_types": [],
                 "merchants": ["M-001"], "outlets": [], "regions": ["310000"]},
      "digest": {"account": "M-001", "every_minutes": 60,
                 "notable": ["EXCEPTION", "STUCK", "REAL_NAME_MISSING"]},
      "authorisation": {"id": "AUTH-M001-1", "account": "M-001",
                        "scope": ["TRACK_SCAN", "WAYBILL_ALERT", "DIGEST"],
                        "granted": "2026-01-01T00:00:00Z", "expires": null, "revoked": null}}]

The authorisation's account must be the one the subscription pushes: its digest's account,
and, for its events, the only merchant of its filter; an authorisation of every account
(``"*"``) serves a subscription without a merchant filter and without a digest. Whether a
message may go out is judged when it is pushed (:mod:`pipeline.fanout.authorise`).

Filter semantics: every non-empty list must hold the event's value (AND across fields, OR
within a list); an empty or absent list matches anything; an event that has no value for a
field (an order has no scan type) does not match a non-empty list of that field.

The stage works on :class:`SubscribableEvent` records, built by pure functions from a
de-duplicated order event (:func:`from_order_event`), a courier event
(:func:`from_courier_event`, :func:`from_identified`) and a ``WaybillAlert``
(:func:`from_alert`). :class:`MatchSubscriptions` turns each into one
:class:`~pipeline.delivery.records.DeliveryRequest` per matching subscriber: a CloudEvents 1.0
message whose id, ``f"{event_id}:{subscriber_id}"``, is the same on every retry.

Example: an EXCEPTION scan of merchant M-001 in region 310000 goes to "acme" above (kind,
merchant and region match, any scan type) as type ``com.waybill.courier.track_scan``, subject
the waybill number, time the scan's event time, data ``{event_id, identification, event}``.
Before delivery the job puts each subject's messages to a target in order and adds
``waybill_seq``, ``prev_event_id`` and ``out_of_order`` to the data
(:func:`pipeline.stages.ordered_outputs.order_subscriber_messages`, docs/ordering.md).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.authorisation import ALL_ACCOUNTS, Authorisation, parse_authorisation
from pipeline.model import schemas
from pipeline.model.dead_letter import METRICS_NAMESPACE
from pipeline.model.json_records import to_json
from pipeline.stages.identify import identification
from pipeline.stages.shipment import REAL_NAME_MISSING, STUCK, alert_event_id

_LOGGER = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "data" / "subscriptions.json"
SOURCE = "/waybill-pipeline"
STRUCTURED = "cloudevents-structured"
BINARY = "cloudevents-binary"
FORMATS = (STRUCTURED, BINARY)

ORDER = "ORDER"
TRACK_SCAN = "TRACK_SCAN"
ORDER_INFO = "ORDER_INFO"
REAL_NAME_REGISTRATION = "REAL_NAME_REGISTRATION"
WAYBILL_ALERT = "WAYBILL_ALERT"
# CloudEvents ``type`` of each event kind.
EVENT_TYPES = {
    ORDER: "com.waybill.order",
    TRACK_SCAN: "com.waybill.courier.track_scan",
    ORDER_INFO: "com.waybill.courier.order_info",
    REAL_NAME_REGISTRATION: "com.waybill.courier.real_name_registration",
    WAYBILL_ALERT: "com.waybill.waybill_alert",
}
SCAN_TYPES = ("PICKUP", "DEPART", "ARRIVE", "DISPATCH", "DELIVERED", "EXCEPTION")
EXCEPTION = "EXCEPTION"
NOTABLE_KINDS = (EXCEPTION, STUCK, REAL_NAME_MISSING)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IDENTIFICATION = f"{schemas.NAMESPACE}.Identification"
_WAYBILL_ALERT_SCHEMA = f"{schemas.NAMESPACE}.WaybillAlert"


class SubscribableEvent(NamedTuple):
    """One event a subscriber may receive, with the attributes the filters look at.

    Attributes:
        kind: one of :data:`EVENT_TYPES`' keys.
        event_id: unique per event (an alert's OPEN and CLOSED records differ).
        subject: the waybill number, or the order id of an order event.
        event_time: the event's time (aware, UTC); the CloudEvents ``time``.
        source: the record as the pipeline holds it (an OrderEvent, a CourierEvent, a
            WaybillAlert); :attr:`record`, the CloudEvents ``data``, is made from it only for the
            events a subscription matches (making the JSON form of a courier event costs far more
            than matching it, and most events match none).
        merchant_id, outlet_id, region, scan_type: what the filters match; None when unknown.
        status: an order's status, or an alert's OPEN / CLOSED.
        alert_kind: STUCK or REAL_NAME_MISSING for an alert.
        detail: a short text for people: an exception scan's reason, an alert's message.
    """

    kind: str
    event_id: str
    subject: str
    event_time: datetime
    source: dict[str, Any]
    merchant_id: Optional[str] = None
    outlet_id: Optional[str] = None
    region: Optional[str] = None
    scan_type: Optional[str] = None
    status: Optional[str] = None
    alert_kind: Optional[str] = None
    detail: Optional[str] = None

    @property
    def record(self) -> dict[str, Any]:
        """The CloudEvents ``data``: the source record in the JSON form of
        :mod:`pipeline.model.json_records`; for a courier event ``{event_id, identification,
        event}`` (the supervision record without ``pushed_at``)."""
        if self.kind == ORDER:
            return to_json(schemas.ORDER_EVENT, self.source)
        if self.kind == WAYBILL_ALERT:
            return to_json(_WAYBILL_ALERT_SCHEMA, self.source)
        event = self.source
        return {
            "event_id": event["event_id"],
            "identification": to_json(_IDENTIFICATION, identification(event["waybill_no"], event["parent_waybill_no"])),
            "event": to_json(schemas.COURIER_EVENT, event),
        }


def from_order_event(order: dict[str, Any]) -> SubscribableEvent:
    """A de-duplicated ``OrderEvent``; data is the order in its JSON form."""
    return SubscribableEvent(
        kind=ORDER, event_id=order["event_id"], subject=order["order_id"], event_time=order["event_time"],
        source=order, merchant_id=order["merchant_id"], status=order["status"],
    )


def from_courier_event(event: dict[str, Any], merchant_id: Optional[str] = None) -> SubscribableEvent:
    """A validated courier event; ``merchant_id`` is its shipment's merchant when known (an
    ORDER_INFO names its own)."""
    payload, kind = event["payload"], event["event_type"]
    if kind == ORDER_INFO:
        merchant_id = payload["merchant_id"]
    return SubscribableEvent(
        kind=kind, event_id=event["event_id"], subject=event["waybill_no"], event_time=event["event_time"],
        source=event, merchant_id=merchant_id, outlet_id=event["outlet_id"],
        region=payload.get("region") if kind == TRACK_SCAN else None,
        scan_type=payload["scan_type"] if kind == TRACK_SCAN else None,
        detail=payload.get("exception_reason") if kind == TRACK_SCAN else None,
    )


def from_identified(identified: tuple[str, dict[str, Any]], merchant_id: Optional[str] = None) -> SubscribableEvent:
    """``(waybill_no, {event_id, identification, event})`` as :class:`IdentifyWaybills` emits it."""
    return from_courier_event(identified[1]["event"], merchant_id)


def from_alert(alert: dict[str, Any]) -> SubscribableEvent:
    """A ``WaybillAlert``; its event id is :func:`~pipeline.stages.shipment.alert_event_id`,
    ``f"{alert_id}:{status}"`` (OPEN and CLOSED share the alert id); region is that of the
    stuck parcel's last scan (None for real-name alerts)."""
    last_scan = alert.get("last_scan")
    return SubscribableEvent(
        kind=WAYBILL_ALERT, event_id=alert_event_id(alert),
        subject=alert["identification"]["waybill_no"], event_time=alert["event_time"],
        source=alert, merchant_id=alert["merchant_id"],
        outlet_id=alert["outlet_id"], region=last_scan["scan"]["region"] if last_scan else None,
        status=alert["status"], alert_kind=alert["kind"], detail=alert["message"],
    )


@dataclasses.dataclass(frozen=True)
class Filter:
    """Which events a subscriber wants; an empty set matches anything (module docstring)."""

    event_kinds: frozenset[str] = frozenset()
    scan_types: frozenset[str] = frozenset()
    merchants: frozenset[str] = frozenset()
    outlets: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()

    def matches(self, event: SubscribableEvent) -> bool:
        wanted = (
            (self.event_kinds, event.kind), (self.scan_types, event.scan_type), (self.merchants, event.merchant_id),
            (self.outlets, event.outlet_id), (self.regions, event.region),
        )
        return all(not values or value in values for values, value in wanted)


@dataclasses.dataclass(frozen=True)
class Digest:
    """A running digest of one merchant account (see :mod:`pipeline.fanout.digests`)."""

    account: str
    every_minutes: float = 60.0
    notable: frozenset[str] = frozenset(NOTABLE_KINDS)


@dataclasses.dataclass(frozen=True)
class Subscription:
    """One subscriber: where its messages go, in which CloudEvents mode, which events, which
    digest, under which authorisation.

    ``send_events`` False makes a digest-only subscription. ``authorisation`` is None only in a
    subscription built in code (the configuration requires one): nothing of it is pushed.
    """

    subscriber_id: str
    target: str
    format: str = STRUCTURED
    filter: Filter = Filter()
    digest: Optional[Digest] = None
    send_events: bool = True
    authorisation: Optional[Authorisation] = None


def subscription_from_config(obj: Any, index: int = 0) -> Subscription:
    """A subscription from its JSON object.

    Raises:
        ValueError: naming the subscription (its id, else its position) and the bad field.
    """
    name = f"subscription #{index}"
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected an object, got {obj!r:.60}")
    if isinstance(obj.get("subscriber_id"), str):
        name = f"subscription {obj['subscriber_id']!r}"
    _check_keys(
        name, "", obj, ("subscriber_id", "target", "format", "filter", "digest", "send_events", "authorisation")
    )
    for key in ("subscriber_id", "target"):
        if not isinstance(obj.get(key), str) or not _ID.match(obj[key]):
            raise ValueError(
                f"{name}: {key} must be 1-64 letters, digits or _.- (starting with a letter or digit), got {obj.get(key)!r}"
            )
    fmt = obj.get("format", STRUCTURED)
    if fmt not in FORMATS:
        raise ValueError(f"{name}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    send_events = obj.get("send_events", True)
    if not isinstance(send_events, bool):
        raise ValueError(f"{name}: send_events must be true or false, got {send_events!r}")
    if not send_events and obj.get("digest") is None:
        raise ValueError(f"{name}: send_events is false and there is no digest: the subscription would send nothing")
    subscription = Subscription(
        subscriber_id=obj["subscriber_id"], target=obj["target"], format=fmt,
        filter=_filter(name, obj.get("filter") or {}),
        digest=_digest(name, obj["digest"]) if obj.get("digest") is not None else None,
        send_events=send_events,
        authorisation=parse_authorisation(obj.get("authorisation"), name, EVENT_TYPES),
    )
    _check_account(name, subscription)
    return subscription


def _check_account(name: str, subscription: Subscription) -> None:
    """The authorisation covers the account the subscription pushes (module docstring)."""
    assert subscription.authorisation is not None
    account, digest = subscription.authorisation.account, subscription.digest
    if digest is not None and digest.account != account:
        raise ValueError(f"{name}: digest.account {digest.account!r} is not the account of authorisation "
                         f"{subscription.authorisation.id!r}, {account!r}")
    merchants = sorted(subscription.filter.merchants)
    if subscription.send_events and account != ALL_ACCOUNTS and merchants != [account]:
        raise ValueError(f"{name}: filter.merchants must be [{account!r}], the account of authorisation "
                         f"{subscription.authorisation.id!r}, got {merchants}")


def _filter(name: str, obj: Any) -> Filter:
    fields = [f.name for f in dataclasses.fields(Filter)]
    _check_keys(name, "filter.", obj, fields)
    known = {"event_kinds": tuple(EVENT_TYPES), "scan_types": SCAN_TYPES}
    values = {field: _strings(name, f"filter.{field}", obj.get(field), known.get(field)) for field in fields}
    return Filter(**values)


def _digest(name: str, obj: Any) -> Digest:
    _check_keys(name, "digest.", obj, ("account", "every_minutes", "notable"))
    account, every = obj.get("account"), obj.get("every_minutes", 60)
    if not isinstance(account, str) or not account.strip():
        raise ValueError(f"{name}: digest.account must be a merchant id such as 'M-001', got {account!r}")
    if isinstance(every, bool) or not isinstance(every, (int, float)) or every <= 0:
        raise ValueError(f"{name}: digest.every_minutes must be a positive number, got {every!r}")
    notable = obj.get("notable")
    if notable is None:
        kinds = frozenset(NOTABLE_KINDS)
    elif isinstance(notable, list):
        kinds = _strings(name, "digest.notable", [n.upper() if isinstance(n, str) else n for n in notable], NOTABLE_KINDS)
    else:
        raise ValueError(f"{name}: digest.notable must be a list, got {notable!r}")
    return Digest(account=account, every_minutes=float(every), notable=kinds)


def _check_keys(name: str, prefix: str, obj: Any, known: Iterable[str]) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: {prefix.rstrip('.') or 'it'} must be an object, got {obj!r:.60}")
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(prefix + k for k in unknown)}; known: {', '.join(known)}")


def _strings(name: str, field: str, value: Any, known: Optional[Iterable[str]]) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name}: {field} must be a list of non-empty strings, got {value!r:.80}")
    if known is not None:
        bad = [v for v in value if v not in set(known)]
        if bad:
            raise ValueError(f"{name}: {field}: unknown value(s) {', '.join(map(repr, bad))}; known: {', '.join(known)}")
    return frozenset(value)


def load_subscriptions(text: str) -> tuple[Subscription, ...]:
    """Subscriptions from the text of a JSON configuration (a list of objects).

    Raises:
        ValueError: not JSON, not a list, a bad subscription, or a repeated subscriber_id.
    """
    try:
        objs = json.loads(text)
    except ValueError as error:
        raise ValueError(f"the subscription configuration is not JSON: {error}") from error
    if not isinstance(objs, list):
        raise ValueError(f"a subscription configuration is a JSON list of objects, got {type(objs).__name__}")
    subscriptions = tuple(subscription_from_config(obj, i) for i, obj in enumerate(objs))
    seen: set[str] = set()
    for sub in subscriptions:
        if sub.subscriber_id in seen:
            raise ValueError(f"subscription {sub.subscriber_id!r} is configured twice")
        seen.add(sub.subscriber_id)
    return subscriptions


def read_subscriptions(path: str | Path | None = None) -> tuple[Subscription, ...]:
    """Subscriptions from a JSON file; None reads the bundled ``pipeline/data/subscriptions.json``."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        subscriptions = load_subscriptions(file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{file}: {error}") from error
    _LOGGER.info("%d subscription(s) read from %s", len(subscriptions), file)
    return subscriptions


def check_targets(subscriptions: Iterable[Subscription], target_ids: Iterable[str]) -> None:
    """Raises ValueError naming every subscription whose target is not configured."""
    known = set(target_ids)
    missing = [f"{s.subscriber_id!r} -> {s.target!r}" for s in subscriptions if s.target not in known]
    if missing:
        raise ValueError(f"subscription target(s) not configured: {', '.join(missing)}; known targets: {sorted(known)}")


def cloud_event_request(
    subscription: Subscription, event_id: str, event_type: str, subject: str, time: datetime, data: dict[str, Any],
    source: str = SOURCE,
) -> DeliveryRequest:
    """A CloudEvents 1.0 message for ``subscription``; its id (and idempotency key) is
    ``f"{event_id}:{subscriber_id}"``.

    Structured mode: the body is the JSON envelope, header ``content-type:
    application/cloudevents+json``. Binary mode: the body is ``data`` as JSON, the attributes
    are ``ce-*`` headers and ``content-type`` is ``application/json``.
    """
    ce_id = f"{event_id}:{subscription.subscriber_id}"
    attributes = {
        "id": ce_id, "source": source, "type": event_type, "subject": subject, "time": time,
        "datacontenttype": "application/json",
    }
    event = CloudEvent(attributes, data)
    message = to_binary(event, JSONFormat()) if subscription.format == BINARY else to_structured(event, JSONFormat())
    return DeliveryRequest(subscription.target, ce_id, message.body, dict(message.headers))


def cloud_event_type(request: DeliveryRequest) -> str:
    """The ``type`` of a :func:`cloud_event_request`: in the envelope (structured mode) or the
    ``ce-type`` header (binary mode)."""
    if request.headers.get("content-type", "").startswith("application/cloudevents+json"):
        event_type: str = json.loads(request.payload)["type"]
        return event_type
    return request.headers["ce-type"]


def subscriber_of(request: DeliveryRequest) -> str:
    """The subscriber a :func:`cloud_event_request` is for: its id ends with ``:<subscriber_id>``
    (a subscriber id has no ``:``)."""
    return request.event_id.rpartition(":")[2]


def event_request(
    subscription: Subscription, event: SubscribableEvent, source: str = SOURCE, data: Optional[dict[str, Any]] = None
) -> DeliveryRequest:
    """The message of one subscribable event for one subscriber; ``data`` is ``event.record``,
    when the caller has already made it."""
    return cloud_event_request(
        subscription, event.event_id, EVENT_TYPES[event.kind], event.subject, event.event_time,
        event.record if data is None else data, source,
    )


class MatchSubscriptionsFn(beam.DoFn):
    """A subscribable event -> one DeliveryRequest per subscription it matches."""

    def __init__(self, subscriptions: Iterable[Subscription], source: str) -> None:
        super().__init__()
        self._subscriptions = tuple(s for s in subscriptions if s.send_events)
        self._source = source
        self._matched = {
            s.subscriber_id: Metrics.counter(METRICS_NAMESPACE, f"matched_{s.subscriber_id}") for s in self._subscriptions
        }

    def process(self, event: SubscribableEvent) -> Iterator[DeliveryRequest]:
        matched = [s for s in self._subscriptions if s.filter.matches(event)]
        data = event.record if matched else None  # made once, however many subscribers match
        for subscription in matched:
            self._matched[subscription.subscriber_id].inc()
            yield event_request(subscription, event, self._source, data)


class MatchSubscriptions(beam.PTransform):
    """Subscribable events -> DeliveryRequests, one per (event, matching subscriber).

    Counts ``matched_<subscriber_id>`` per subscriber. Digest-only subscriptions
    (``send_events`` false) get nothing here. Feed the output to :class:`DeliverMessages`.

    Args:
        subscriptions: the configured subscriptions (:func:`read_subscriptions`).
        source: the CloudEvents ``source`` attribute.
    """

    def __init__(self, subscriptions: Iterable[Subscription], source: str = SOURCE) -> None:
        super().__init__()
        self.subscriptions = tuple(subscriptions)
        self.source = source

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return events | "MatchSubscribers" >> beam.ParDo(MatchSubscriptionsFn(self.subscriptions, self.source))


class CollectSubscribableEvents(beam.PTransform):
    """``{'orders': OrderEvents, 'courier': (courier event, merchant_id or None) pairs,
    'alerts': WaybillAlerts}`` -> one PCollection of :class:`SubscribableEvent`.

    ``courier`` is what :class:`TrackWaybillLifecycles` emits as ``events_with_merchant``;
    any of the three keys may be left out.
    """

    def expand(self, inputs: Mapping[str, beam.PCollection]) -> beam.PCollection:
        unknown = sorted(set(inputs) - {"orders", "courier", "alerts"})
        if unknown:
            raise ValueError(f"CollectSubscribableEvents takes 'orders', 'courier' and 'alerts', got {unknown}")
        parts = []
        if "orders" in inputs:
            parts.append(inputs["orders"] | "OrdersToSubscribable" >> beam.Map(from_order_event))
        if "courier" in inputs:
            parts.append(inputs["courier"] | "CourierToSubscribable" >> beam.MapTuple(from_courier_event))
        if "alerts" in inputs:
            parts.append(inputs["alerts"] | "AlertsToSubscribable" >> beam.Map(from_alert))
        if not parts:
            raise ValueError("CollectSubscribableEvents needs at least one of 'orders', 'courier' and 'alerts'")
        return tuple(parts) | "AllSubscribableEvents" >> beam.Flatten()
