"""day_report: the page built from small hand-made records.

The records: pickups for 2026-11-21 (Asia/Shanghai) early 3, early 5, on time 6, a late
correction 7 and the final 7; orders for 2026-11-20 final 2. Two delivery targets, one of them
named like a script tag, with two receipts of 10 and 30 ms for erp. One STUCK alert opened and
closed. Two shipments opened at 08:00 and 09:00 UTC, the first retired at 10:00.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pipeline.local.accounting import Accounting, Check, TargetDeliveries
from pipeline.local.day_report import build, read_accounting_file, write_report
from pipeline.local.waybill_report import live_counts

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script>"


def elements(page: str, css_class: str) -> list[dict[str, Any]]:
    """The attributes of every element of ``page`` whose class is ``css_class``."""
    found: list[dict[str, Any]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if dict(attrs).get("class") == css_class:
                found.append(dict(attrs))

    Collect().feed(page)
    return found


def stat(day: str, metric: str, value: int, timing: str, pane: int | None, minutes: int) -> dict[str, Any]:
    return {"day": day, "time_zone": "Asia/Shanghai", "metric": metric, "dimension": "total", "key": "all",
            "value": value, "timing": timing, "pane_index": pane, "is_final": pane is None,
            "computed_at": T0 + timedelta(minutes=minutes)}


STATS = [
    stat("2026-11-21", "pickups", 7, "LATE", None, 90),  # the final record first: order does not matter
    stat("2026-11-21", "pickups", 3, "EARLY", 0, 0),
    stat("2026-11-21", "pickups", 5, "EARLY", 1, 10),
    stat("2026-11-21", "pickups", 6, "ON_TIME", 2, 20),
    stat("2026-11-21", "pickups", 7, "LATE", 3, 30),
    stat("2026-11-20", "orders", 2, "LATE", None, 5),
]
ACCOUNTING = Accounting(
    inputs=10, pushed=6, orders=2, dead_lettered=1, duplicates=1, dead_letter_kinds={"not_avro": 1},
    deliveries={"erp": TargetDeliveries(requested=2, delivered=2, retried=1), HOSTILE: TargetDeliveries(1, 1)},
    checks=(Check("delivery target erp: requested = delivered + dead-lettered", 2, 2),),
)
RECEIPTS = [{"target_id": "erp", "latency_ms": ms, "attempts": 1 + (ms > 20)} for ms in (10, 30)]
ALERTS = [{"kind": "STUCK", "status": status, "emitted_at": T0, "event_time": T0, "outlet_id": "OUT-1",
           "identification": {"waybill_no": "WB1"}, "message": f"parcel WB1 {status}"} for status in ("OPEN", "CLOSED")]
CHANGES = [{"change": "opened", "at": T0}, {"change": "opened", "at": T0 + timedelta(hours=1)},
           {"change": "retired", "at": T0 + timedelta(hours=2)}]


def test_each_metric_shows_its_newest_pane_and_a_marker_per_pane() -> None:
    page = build(ACCOUNTING, STATS, RECEIPTS, ALERTS, CHANGES)
    metrics = {(m["data-day"], m["data-metric"]): (m["data-value"], m["data-status"]) for m in elements(page, "metric")}
    assert metrics == {("2026-11-21", "pickups"): ("7", "final"), ("2026-11-20", "orders"): ("2", "final")}
    assert page.index("2026-11-21 (Asia/Shanghai)") < page.index("2026-11-20 (Asia/Shanghai)")  # the latest day first
    assert page.count("<title>early: ") == 2 and page.count("<title>on time: 6") == 1
    assert page.count("<title>late correction: 7") == 1 and page.count("<title>final: ") == 2
    assert "All identities hold" in page and "Report of the days 2026-11-20 to 2026-11-21" in page
    assert "dead letters: not_avro</td><td>1</td>" in page and "<details" not in page  # no folder checks here


def test_delivery_rows_carry_the_accounting_and_the_receipts_latency() -> None:
    page = build(ACCOUNTING, STATS, RECEIPTS, ALERTS, CHANGES)
    rows = {row["data-target"]: row for row in elements(page, "target")}
    erp = rows["erp"]
    figures = ("data-requested", "data-delivered", "data-retried", "data-dead-lettered")
    assert [erp[name] for name in figures] == ["2", "2", "1", "0"]
    # erp: batches 2, median 20 ms, p95 30 ms, max 30 ms, max attempts 2
    assert "<td>2</td><td>20</td><td>30</td><td>30</td><td>2</td>" in page
    assert "none for: &lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_hostile_target_id_is_escaped_everywhere() -> None:
    page = build(ACCOUNTING, STATS, RECEIPTS, ALERTS, CHANGES)
    assert "<script" not in page
    assert HOSTILE in {row["data-target"] for row in elements(page, "target")}  # the parser unescapes it


def test_alerts_are_counted_per_kind_and_live_waybills_drawn_hourly() -> None:
    page = build(ACCOUNTING, STATS, RECEIPTS, ALERTS, CHANGES)
    assert elements(page, "alert-kind") == [{"class": "alert-kind", "data-kind": "STUCK", "data-open": "1",
                                             "data-closed": "1"}]
    assert "16:00: 1 live" in page and "17:00: 2 live" in page and "18:00: 1 live" in page  # Asia/Shanghai
    assert live_counts(CHANGES, [T0 - timedelta(hours=1), T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]) \
        == [0, 1, 2, 1]


def test_a_run_without_statistics_or_accounting_says_so() -> None:
    page = build(None, [], [], [], [])
    assert "No daily statistics in this output." in page
    assert "No accounting for this output: its balance is unknown." in page
    assert "All identities hold" not in page
    assert "No alerts" in page and "No waybill state changes" in page and "No deliveries" in page


def test_a_run_that_does_not_balance_is_never_called_balanced() -> None:
    broken = dataclasses.replace(ACCOUNTING, checks=(Check("stats/ lines = records written", 4, 5),))
    page = build(broken, STATS, [], [], [])
    assert "NOT BALANCED" in page and "All identities hold" not in page
    assert "<details open>" in page  # the folder that differs is shown


def test_the_page_is_written_and_rebuilt_from_accounting_json(tmp_path: Path) -> None:
    (tmp_path / "accounting.json").write_text(json.dumps(dataclasses.asdict(ACCOUNTING)))
    assert read_accounting_file(tmp_path) == ACCOUNTING
    path = write_report(tmp_path, read_accounting_file(tmp_path))
    assert path == tmp_path / "report.html"
    assert "No daily statistics in this output." in path.read_text() and "http" not in path.read_text()
    assert read_accounting_file(tmp_path / "missing") is None
