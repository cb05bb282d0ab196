"""Topic and folder targets split into partitions: the ``partitions`` key, and a folder target's
lines written to ``<folder>/p<i>/`` by the ordering key of their request (topic targets:
``test_topic_ordering.py``)."""
from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.delivery.deliver import DeliverMessages
from pipeline.delivery.records import delivery_request
from pipeline.delivery.targets import DeliveryTarget, load_targets
from pipeline.io.partitions import partition


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ({"target_id": "erp", "url": "http://127.0.0.1:1/h", "partitions": 2},
         r"delivery target 'erp': key\(s\) \['partitions'\] do not apply to a url target"),
        ({"target_id": "erp", "folder": "units/erp", "partitions": 0}, r"target erp: partitions must be a whole number from 1 to 64, got 0"),
        ({"target_id": "wms", "topic": "projects/p/topics/t", "partitions": 65}, r"got 65"),
        ({"target_id": "wms", "topic": "projects/p/topics/t", "partitions": "4"}, r"got '4'"),
        ({"target_id": "wms", "topic": "projects/p/topics/t", "partitions": 2.0}, r"got 2.0"),
    ],
)
def test_partitions_is_a_whole_number_from_1_to_64_on_topic_and_folder_targets(obj: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_targets(json.dumps([obj]))


def test_a_partitioned_folder_target_writes_each_orders_lines_to_its_one_partition(tmp_path: Path) -> None:
    orders = [f"ORD-{i}" for i in range(12)]
    requests = [
        delivery_request("erp", f"{order}-e{n}", {"event_id": f"{order}-e{n}", "order": order, "n": n}, ordering_key=order)
        for n in range(3) for order in orders
    ]
    unkeyed = delivery_request("erp", "digest-1", {"event_id": "digest-1", "n": 0})

    p = TestPipeline()
    _ = p | beam.Create([*requests, unkeyed]) | DeliverMessages(
        [DeliveryTarget("erp", folder="units/erp", partitions=4)], streaming=False, output_dir=str(tmp_path)
    )
    p.run().wait_until_finish()

    where: dict[str, list[tuple[str, int]]] = {}
    for path in sorted((tmp_path / "units" / "erp").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            payload = json.loads(line)
            where.setdefault(payload.get("order", payload["event_id"]), []).append((path.parent.name, payload["n"]))
    assert not list((tmp_path / "units" / "erp").glob("*.jsonl"))  # nothing outside the partitions
    assert len({folder for lines in where.values() for folder, _ in lines}) > 1
    assert {key: sorted(lines) for key, lines in where.items()} == {
        **{order: [(f"p{partition(order, 4)}", n) for n in range(3)] for order in orders},
        "digest-1": [(f"p{partition('digest-1', 4)}", 0)],
    }
