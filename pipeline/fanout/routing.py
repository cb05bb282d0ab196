"""Unit routing: each order event -> one delivery request per business unit of its business_code.

The routing table is a JSON file (default: the packaged ``pipeline/data/routing.json``)::

    {"routes": {"B2C": ["erp", "wms"], "C2C": ["erp"], "COLD_CHAIN": ["erp", "wms", "coldchain"]}}

Each unit is a delivery target id (see :mod:`pipeline.delivery.targets`). A code mapped to
several units fans out: one :class:`~pipeline.delivery.records.DeliveryRequest` per unit. An
order whose code has no route is dead-lettered (stage ``route``, kind ``unknown_business_code``).

Idempotency key: a request's ``event_id`` is ``"<order event_id>:<unit>"``. The order's
event_id is unique per event (the job de-duplicates on it) and a unit id cannot contain ``:``,
so a retry or a re-run of the same order to the same unit carries the same key, and two units
never share one. The payload keeps the order's own ``event_id``.

Payload (UTF-8 JSON): the order in its JSON form (:mod:`pipeline.model.json_records`: RFC 3339 UTC
timestamps), each line enriched with ``manufacturer_id`` and ``product_name`` from the catalog
(null for a SKU the catalog does not list: counted under ``routing_unknown_skus``, not dead-
lettered), plus ``unit``::

    {"event_id": "ord-1", "order_id": "O-1", "merchant_id": "M-1", "business_code": "B2C",
     "status": "PAID", "lines": [{"sku": "SKU-0001", "quantity": 2, "price_cents": 990,
     "manufacturer_id": "MFR-21", "product_name": "Product 0001"}], "waybill_no": null,
     "event_time": "2026-11-21T01:30:00.000Z", "unit": "wms"}

Before delivery the job puts each order's messages to a unit in order and adds
``waybill_seq``, ``prev_event_id`` and ``out_of_order`` to the payload
(:func:`pipeline.stages.ordered_outputs.order_unit_messages`, docs/ordering.md).

Catalog reload: the catalog (:func:`pipeline.model.catalog.load_catalog`, local or gs://) is held
once per worker process (:mod:`pipeline.fanout.worker_copies`). In batch it is read once. In
streaming it is read again when ``catalog_reload_seconds`` have passed since the last read, by
the first order that finds it stale, so a catalog file replaced while the job runs reaches orders
processed from one interval later on, without a restart. Example, interval 300 s: read at
08:00:00; the file is replaced at 08:01; orders until 08:05:00 still get the old data; the first
order after it reads the file again and it and later orders get the new data. A file that cannot
be read or parsed at a reload is logged and counted (``catalog_reload_failures``) and the
previous catalog is kept.
"""
from __future__ import annotations

import enum
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.delivery.targets import TARGET_ID_PATTERN
from pipeline.fanout.worker_copies import worker_copy
from pipeline.model import json_records, schemas
from pipeline.model.catalog import DEFAULT_CATALOG, CatalogItem, load_catalog
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record

DEFAULT_ROUTING = Path(__file__).resolve().parents[1] / "data" / "routing.json"


class RoutingOutput(str, enum.Enum):
    """Outputs of :class:`RouteOrders`."""

    REQUESTS = "requests"
    DEAD_LETTER = DEAD_LETTER_OUTPUT

RoutingTable = dict[str, tuple[str, ...]]  # business_code -> unit target ids, in table order


def parse_routing_table(text: str, source: str = "routing table") -> RoutingTable:
    """The routes of a routing table's JSON text.

    Raises:
        ValueError: naming the file, the code and the bad value.

    >>> parse_routing_table('{"routes": {"B2C": ["erp", "wms"]}}')
    {'B2C': ('erp', 'wms')}
    >>> parse_routing_table('{"routes": {"B2C": []}}')
    Traceback (most recent call last):
    ...
    ValueError: routing table: routes['B2C'] must be a non-empty list of unit target ids, got []
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not JSON ({error}); expected {{\"routes\": {{\"<code>\": [\"<unit>\", ...]}}}}") from error
    if not isinstance(obj, dict) or set(obj) != {"routes"} or not isinstance(obj["routes"], dict):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{source}: expected an object with one key, routes, holding an object; got {got}")
    table: RoutingTable = {}
    for code, units in obj["routes"].items():
        if not code.strip():
            raise ValueError(f"{source}: a business code must be a non-empty string, got {code!r}")
        if not isinstance(units, list) or not units:
            raise ValueError(f"{source}: routes[{code!r}] must be a non-empty list of unit target ids, got {units!r}")
        for unit in units:
            if not isinstance(unit, str) or not TARGET_ID_PATTERN.match(unit):
                raise ValueError(
                    f"{source}: routes[{code!r}] has {unit!r}, not a target id "
                    "(1-64 letters, digits or _.-, starting with a letter or digit)"
                )
        if len(set(units)) != len(units):
            raise ValueError(f"{source}: routes[{code!r}] lists a unit twice: {units!r}")
        table[code] = tuple(units)
    return table


def load_routing_table(path: str) -> RoutingTable:
    """:func:`parse_routing_table` of a local or ``gs://`` file."""
    with FileSystems.open(path) as handle:
        return parse_routing_table(handle.read().decode("utf-8"), source=path)


class RouteOrderFn(beam.DoFn):
    """An order event -> a request per unit (main output), or a dead letter (``dead_letter``).

    Args:
        routes: business_code -> unit target ids.
        catalog_path: the JSON Lines catalog, local or gs://.
        catalog_key: names the worker-local catalog copy (one per :class:`RouteOrders`).
        reload_seconds: how old the copy may get before it is read again; None: never.
        clock: seconds on a monotonic clock (tests may pass their own).
    """

    def __init__(
        self,
        routes: Mapping[str, tuple[str, ...]],
        catalog_path: str,
        catalog_key: str,
        reload_seconds: Optional[float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = dict(routes)
        self.catalog_path = catalog_path
        self.catalog_key = catalog_key
        self.reload_seconds = reload_seconds
        self.clock = clock

    def setup(self) -> None:
        self._catalog = worker_copy(self.catalog_key, "catalog", self.catalog_path, load_catalog, self.reload_seconds,
                                    self.clock)

    def process(self, order: dict[str, Any]) -> Iterator[Union[DeliveryRequest, beam.pvalue.TaggedOutput]]:
        record = json_records.to_json(schemas.ORDER_EVENT, order)
        code = order["business_code"]
        units = self.routes.get(code)
        if units is None:
            known = ", ".join(sorted(self.routes))
            message = f"no route for business_code {code!r}; routed codes: {known}; add it to the routing table"
            raw = json.dumps(record, ensure_ascii=False).encode("utf-8")
            yield beam.pvalue.TaggedOutput(RoutingOutput.DEAD_LETTER.value, dead_letter_record(
                raw, {"business_code": code}, "routing", Stage.ROUTE, ErrorKind.UNKNOWN_BUSINESS_CODE, message,
                event_id=order["event_id"],
            ))
            return
        catalog = self._catalog.current()
        record["lines"] = [self._enriched(line, catalog) for line in record["lines"]]
        for unit in units:
            Metrics.counter(METRICS_NAMESPACE, f"routed_to_{unit}").inc()
            yield delivery_request(unit, f"{order['event_id']}:{unit}", {**record, "unit": unit})

    @staticmethod
    def _enriched(line: dict[str, Any], catalog: Mapping[str, CatalogItem]) -> dict[str, Any]:
        item = catalog.get(line["sku"])
        if item is None:
            Metrics.counter(METRICS_NAMESPACE, "routing_unknown_skus").inc()
            return {**line, "manufacturer_id": None, "product_name": None}
        return {**line, "manufacturer_id": item["manufacturer_id"], "product_name": item["product_name"]}


class RouteOrders(beam.PTransform):
    """Order events -> ``{'requests': DeliveryRequest, 'dead_letter': DeadLetter records}``.

    Requests keep their order's element timestamp (event_time). Feed ``requests`` to
    :class:`pipeline.delivery.deliver.DeliverMessages` with a target configured for every unit.

    Args:
        routes: business_code -> unit target ids (:func:`load_routing_table`).
        catalog_path: the JSON Lines catalog, local or gs:// (read here once, so that a bad
            file fails at start, and by each worker).
        streaming: whether the pipeline runs in streaming mode (only then is the catalog reloaded).
        catalog_reload_seconds: in streaming, how often each worker reads the catalog again.

    Raises:
        ValueError: an unreadable catalog, or a reload interval that is not positive.
    """

    def __init__(
        self,
        routes: Mapping[str, tuple[str, ...]],
        catalog_path: str = str(DEFAULT_CATALOG),
        streaming: bool = False,
        catalog_reload_seconds: float = 300.0,
    ) -> None:
        super().__init__()
        if catalog_reload_seconds <= 0:
            raise ValueError(f"catalog_reload_seconds must be positive, got {catalog_reload_seconds}")
        load_catalog(catalog_path)
        self.routes = dict(routes)
        self.catalog_path = catalog_path
        self.reload_seconds: Optional[float] = catalog_reload_seconds if streaming else None
        self.catalog_key = uuid.uuid4().hex

    def expand(self, orders: beam.PCollection) -> dict[str, beam.PCollection]:
        routed = orders | "RouteEachOrder" >> beam.ParDo(
            RouteOrderFn(self.routes, self.catalog_path, self.catalog_key, self.reload_seconds)
        ).with_output_types(DeliveryRequest).with_outputs(
            RoutingOutput.DEAD_LETTER.value, main=RoutingOutput.REQUESTS.value
        )
        return {output.value: routed[output.value] for output in RoutingOutput}
