"""Which waybill each per-waybill output belongs to, and where its sequence fields go.

Each function returns the :class:`~pipeline.stages.ordering.OrderPerWaybill` of one kind of
output; the fields are ``waybill_seq``, ``prev_event_id`` and ``out_of_order``
(:class:`~pipeline.stages.ordering.Sequence`).

========================  ==============================  =========================================
output                    the waybill                     the fields, and the id in prev_event_id
========================  ==============================  =========================================
supervision records       ``identification.waybill_no``   record fields; the record's ``event_id``
(SupervisionRecord)       (a piece is its own waybill)
compliance alerts         ``identification.waybill_no``   record fields; ``<alert_id>:<status>``
(WaybillAlert)            (the master waybill)
unit messages             ``order_id`` (an order has no   top-level payload keys; the request id,
                          waybill_no until it ships)      ``<order event_id>:<unit>``
subscriber messages       the CloudEvent ``subject``      keys of the CloudEvent's ``data``; the
                          (waybill_no, or an order's      CloudEvent ``id``,
                          order_id)                       ``<event_id>:<subscriber_id>``
========================  ==============================  =========================================

Unit and subscriber messages are sequenced per delivery target: the destination is the
receiver, whatever produced the message. Their waybill (and the waybill_no of a supervision
target's requests) is also the request's ``ordering_key``: a webhook gets each one's messages in
order, a topic target publishes it as the Pub/Sub ordering key.
"""
from __future__ import annotations

import json
from typing import Any

from pipeline.delivery.records import DeliveryRequest
from pipeline.model.json_records import compact_json
from pipeline.stages.ordering import OrderPerWaybill, Reordering, Sequence
from pipeline.stages.shipment import alert_event_id

SUPERVISION = "supervision"
SUPERVISION_COMPLIANCE = "supervision_compliance"
UNITS = "units"
SUBSCRIBERS = "subscribers"
_STRUCTURED = "application/cloudevents+json"


def order_supervision(reordering: Reordering) -> OrderPerWaybill:
    """``(waybill_no, identified event)`` pairs, as :class:`~pipeline.stages.identify.IdentifyWaybills`
    emits them; the fields join the identified event (and so the SupervisionRecord)."""
    return OrderPerWaybill(
        SUPERVISION, key=lambda pair: pair[0], event_id=lambda pair: pair[1]["event_id"],
        stamp=lambda pair, sequence: (pair[0], {**pair[1], **sequence._asdict()}), reordering=reordering,
    )


def order_compliance_alerts(reordering: Reordering) -> OrderPerWaybill:
    """WaybillAlerts for the supervision push."""
    return OrderPerWaybill(
        SUPERVISION_COMPLIANCE, key=lambda alert: alert["identification"]["waybill_no"], event_id=alert_event_id,
        stamp=lambda alert, sequence: {**alert, **sequence._asdict()}, reordering=reordering,
    )


def order_unit_messages(reordering: Reordering) -> OrderPerWaybill:
    """Requests of :class:`~pipeline.fanout.routing.RouteOrders` (an order JSON payload)."""
    return OrderPerWaybill(
        UNITS, key=lambda request: _key(request.target_id, _order_id(request)),
        event_id=lambda request: request.event_id,
        stamp=lambda request, sequence: _stamped_payload(request, sequence)._replace(ordering_key=_order_id(request)),
        reordering=reordering,
    )


def order_subscriber_messages(reordering: Reordering) -> OrderPerWaybill:
    """Requests of :class:`~pipeline.fanout.subscriptions.MatchSubscriptions` (CloudEvents, structured
    or binary)."""
    return OrderPerWaybill(
        SUBSCRIBERS, key=lambda request: _key(request.target_id, cloud_event_subject(request)),
        event_id=lambda request: request.event_id,
        stamp=lambda request, sequence: _stamped_data(request, sequence)._replace(ordering_key=cloud_event_subject(request)),
        reordering=reordering,
    )


def cloud_event_subject(request: DeliveryRequest) -> str:
    """The ``subject`` of a CloudEvents request: in the envelope (structured mode) or the
    ``ce-subject`` header (binary mode)."""
    if request.headers.get("content-type") == _STRUCTURED:
        subject: str = json.loads(request.payload)["subject"]
        return subject
    return request.headers["ce-subject"]


def _order_id(request: DeliveryRequest) -> str:
    order_id: str = json.loads(request.payload)["order_id"]
    return order_id


def _key(target_id: str, waybill: str) -> str:
    return f"{target_id}\x1f{waybill}"


def _stamped_payload(request: DeliveryRequest, sequence: Sequence) -> DeliveryRequest:
    return _with_payload(request, {**json.loads(request.payload), **sequence._asdict()})


def _stamped_data(request: DeliveryRequest, sequence: Sequence) -> DeliveryRequest:
    body = json.loads(request.payload)
    if request.headers.get("content-type") == _STRUCTURED:
        return _with_payload(request, {**body, "data": {**body["data"], **sequence._asdict()}})
    return _with_payload(request, {**body, **sequence._asdict()})


def _with_payload(request: DeliveryRequest, body: Any) -> DeliveryRequest:
    return request._replace(payload=compact_json(body))
