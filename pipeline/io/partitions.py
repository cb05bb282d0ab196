"""Which queue a shipment's messages go to: the ordering key of a per-waybill record, and the
partition of a destination (a topic or a folder) that the key selects.

The key of a record is the ``waybill_id`` of its shipment: the master waybill's for a piece of
a multi-piece shipment, the waybill's own otherwise. So every message about one shipment (its
supervision records, real-name and stuck-parcel alerts, views and view changes) carries one key: an ordering-enabled Pub/Sub subscription hands them over in publish order, and with N
partitions they all land in the same one.

Example: ``WB0001`` and its piece ``WB0001-2`` share the key ``waybill_id("WB0001")``; with 4
partitions both go to ``supervision-p<partition(key, 4)>``, on every run and every worker.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping

from pipeline.model import schemas
from pipeline.stages.identify import waybill_id
from pipeline.stages.lifecycle import WAYBILL_ALERT, WAYBILL_VIEW, WAYBILL_VIEW_CHANGE

MAX_PARTITIONS = 64
KeyOf = Callable[[Mapping[str, Any]], str]


def partition(key: str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: CRC-32 of its UTF-8 bytes, modulo.

    The same in every process, run and runner (Python's ``hash()`` of a str is salted per process).

    >>> key = waybill_id("WB0001")
    >>> key, partition(key, 4), partition(key, 1)
    ('afbb4ad4-2f71-5603-ac21-6c4a8d6beaf2', 2, 0)
    """
    return zlib.crc32(key.encode("utf-8")) % partitions


def partition_topic(topic: str, index: int) -> str:
    """Partition ``index`` of a topic: ``<topic>-p<index>``.

    >>> partition_topic("projects/p/topics/supervision", 3)
    'projects/p/topics/supervision-p3'
    """
    return f"{topic}-p{index}"


# The partition folders inside an output folder, as a glob pattern.
PARTITION_FOLDERS = "p[0-9]*"


def partition_folder(folder: str, index: int) -> str:
    """Partition ``index`` of a folder: ``<folder>/p<index>``.

    >>> partition_folder("supervision", 0)
    'supervision/p0'
    """
    return f"{folder.rstrip('/')}/p{index}"


def identified_shipment(record: Mapping[str, Any]) -> str:
    """The shipment key of a record with an ``identification`` (SupervisionRecord, WaybillAlert)."""
    identification = record["identification"]
    return str(identification["master_waybill_id"] or identification["waybill_id"])


def numbered_shipment(record: Mapping[str, Any]) -> str:
    """The shipment key of a record whose ``waybill_no`` is the master's (WaybillView, WaybillViewChange)."""
    return waybill_id(record["waybill_no"])


# The per-waybill messages, by Avro schema, and how to find their shipment key. Other outputs
# (orders, daily statistics, stock, receipts, dead letters, and the waybill state changes, the
# job's own bookkeeping in files) have no key and no partitions.
SHIPMENT_KEYS: dict[str, KeyOf] = {
    schemas.SUPERVISION_RECORD: identified_shipment,
    WAYBILL_ALERT: identified_shipment,
    WAYBILL_VIEW: numbered_shipment,
    WAYBILL_VIEW_CHANGE: numbered_shipment,
}
