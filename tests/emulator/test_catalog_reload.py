"""Unit routing in a streaming job on the emulator: a replaced catalog applies without a restart."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.fanout.routing import RouteOrders
from pipeline.local.emulator import PubsubEmulator
from pipeline.local.runner import install, pubsub_io
from pipeline.model import json_records, schemas
from pipeline.model.catalog import write_catalog
from tests.pubsub_fixtures import TopicAndSubscription, running
from tests.unit.fanout.test_routing import ROUTES, item, order

_SEEN: list[tuple[str, str]] = []  # (event_id, product_name) of what the job routed, in this process


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.jsonl"
    write_catalog(path, [item("SKU-1", "MFR-01", "Kettle"), item("SKU-2", "MFR-02", "Toaster")])
    return path


def _record(request: Any) -> None:
    _SEEN.append((request.event_id, json.loads(request.payload)["lines"][0]["product_name"]))


def test_a_streaming_job_picks_up_a_replaced_catalog_without_a_restart(
    pubsub_emulator: PubsubEmulator, pubsub_topics: Callable[[str], TopicAndSubscription], catalog: Path,
) -> None:
    source = pubsub_topics("orders")
    install([pubsub_io.ADJUSTMENT])
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(streaming=True))
    (
        p
        | beam.io.ReadFromPubSub(subscription=source.subscription)
        | beam.Map(lambda data: json_records.from_json(schemas.ORDER_EVENT, json.loads(data)))
        | "Route" >> RouteOrders(ROUTES, str(catalog), streaming=True, catalog_reload_seconds=1)
    )["requests"] | beam.Map(_record)
    _SEEN.clear()
    publisher = pubsub_emulator.publisher()

    def publish_and_wait(event_id: str) -> Any:
        payload = json_records.to_json(schemas.ORDER_EVENT, order(event_id, "C2C"))
        publisher.publish(source.topic, json.dumps(payload).encode()).result(30)
        deadline = time.monotonic() + 40
        while not any(e == f"{event_id}:erp" for e, _ in _SEEN) and time.monotonic() < deadline:
            time.sleep(0.1)
        return dict(_SEEN).get(f"{event_id}:erp")

    with running(p):
        assert publish_and_wait("before") == "Kettle"
        write_catalog(catalog, [item("SKU-1", "MFR-09", "Kettle v2")])  # replaced while the job runs
        time.sleep(1.5)  # longer than the 1 s reload interval
        assert publish_and_wait("after") == "Kettle v2"
