"""The benchmark harness measures the same work in every row (no timings are checked here)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import beam_costs
from benchmarks.floor import run_floor
from benchmarks.naive_beam import COUNTS
from benchmarks.run import QUICK, measure_state, table
from benchmarks.scans import SCANS_PER_WAYBILL, VIEW_MODES, measure_scans
from benchmarks.stages import Inputs, measure_graph, measure_naive
from benchmarks.workload import build_workload, first_day, traffic
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE
from tests.paths import ROOT

SAME = (*COUNTS, "lines", "delivered", "daily_totals")
# Every output folder of the graph that 400 synthetic messages reach.
FOLDERS = {
    "alerts", "deadletter", "orders", "stats", "subscribers/merchant-m001", "subscribers/merchant-m002-digest",
    "stock", "supervision", "supervision_compliance", "units/customs", "units/erp", "units/inventory", "units/wms",
    "waybill_states", "waybills",
}


def test_the_floor_the_naive_peer_and_the_whole_graph_do_the_same_work() -> None:
    messages = traffic(1, 400, first_day(1))
    workload = build_workload([m.message for m in messages])
    with tempfile.TemporaryDirectory() as folder:
        floor = run_floor(workload.messages, Path(folder), DEFAULT_TIME_ZONE).facts(Path(folder))
        assert (Path(folder) / "current_view.sqlite").stat().st_size > 0
    with tempfile.TemporaryDirectory() as folder:
        inputs = Inputs(workload, Path(folder))
        naive = measure_naive(inputs, DEFAULT_TIME_ZONE).facts
        whole = measure_graph(inputs).facts
    assert floor["inputs"] == 400 and floor["pushed"] > 0 and floor["duplicates"] > 0 and floor["delivered"] > 0
    assert set(floor["lines"]) == FOLDERS
    assert {k: naive[k] for k in SAME} == {k: floor[k] for k in SAME}
    assert {k: whole[k] for k in SAME} == {k: floor[k] for k in SAME}
    assert whole["balanced"]


def test_the_table_shows_each_row_against_the_floor() -> None:
    row = {"events": 1000, "cpu_us_per_event": 50.0, "events_per_s": 20_000.0, "ratio_to_floor": 1.0}
    results = {
        "machine": {"cpus": 2, "processor": "x86_64", "python": "3.11", "beam": "2.77.0"}, "repeats": 3,
        "batch": [{**row, "name": "floor"}, {**row, "name": "naive beam", "events_per_s": 10_000.0},
                  {**row, "name": "whole graph", "cpu_us_per_event": 500.0, "ratio_to_floor": 10.0}],
        "sizes": {"scans": 1_200},
        "scans": [
            {"mode": "full", "per_waybill": n, "messages": 1_200 + 2 * 1_200 // n, "graph_cpu_us_per_event": us,
             "ratio_to_first": us / 1_000.0, "view_bytes": view_mb * 1e6, "bytes_per_view": 1_000.0 * n / 6,
             "loop_cpu_us_per_event": 80.0, "state_bytes_per_waybill": 1_000 + 112 * n,
             "cell_bytes_per_waybill": 1_000 + 10 * n}
            for n, us, view_mb in ((6, 1_000.0, 2.0), (200, 1_500.0, 30.0))
        ],
        "state": {"messages": 1000, "messages_per_shipment": 13.16, "bytes": {
            "tombstone of a closed shipment": {"keys": 76, "mean": 578.1, "max": 579}}},
        "streaming": None,
        "memory": {"events_per_day": QUICK.memory_events_per_day, "ratio_last_to_first": 1.05,
                   "by_days": {"1": {"peak_rss_mb": 200.0}, "5": {"peak_rss_mb": 210.0}}},
        "memory_10x": {"base_day": 150, "events_per_day": 1_500, "ratio_last_to_first": 1.5,
                       "by_days": {"1": {"peak_rss_mb": 220.0}, "5": {"peak_rss_mb": 330.0}}},
    }
    text = table(results)
    assert "| whole graph | 500 | 20,000 | 10.0 |" in text
    assert "Whole graph: 10.0× the floor's CPU per event (target: at most 10×), 2.00× the naive peer's events/s" in text
    assert "| cost as shipments grow, 1,200 scans, full views | messages | graph µs CPU/event | × 6 scans |" in text
    assert "| 200 scans/waybill | 1,212 | 1,500 | 1.50 | 30.0 | 33,333 | 80 | 23,400 | 3,000 |" in text
    assert "| state per key, synthetic day of 1,000 messages (13.2 per shipment) | keys |" in text
    assert "| tombstone of a closed shipment | 76 | 578 | 579 |" in text
    assert "(skipped: no Pub/Sub emulator)" in text
    assert "| 5 days / 1 day | 1.05× |" in text
    assert "| streaming graph, 10× a 150-message day (1,500 messages/day), 1 run | peak RSS |" in text
    assert "| 5 days / 1 day | 1.50× |" in text
    results["streaming"] = {
        "backlog_events": 10_000, "events_per_s": 1_500.0, "startup_events": 100, "startup_seconds": 2.5,
        "sustained_events_per_s": 2_400.0, "latency_rate": 500.0, "delay_p50_s": 0.4, "delay_p99_s": 0.9,
    }
    text = table(results)
    assert "| 10,000 backlog, end to end | 1,500 events/s |" in text
    assert "| 100 backlog (the job's start and last outputs) | 2.50 s |" in text
    assert "| 10,000 backlog, start subtracted (sustained) | 2,400 events/s |" in text


def test_the_scans_rows_grow_in_bytes_and_state_with_the_scans_per_waybill() -> None:
    rows = measure_scans(scans=400, repeats=1, fixed_cpu_s=0.0)
    assert [(r["mode"], r["per_waybill"]) for r in rows] == [(m.name, n) for m in VIEW_MODES for n in SCANS_PER_WAYBILL]
    for row in rows:
        waybills = 400 // row["per_waybill"]
        # Each waybill: its scans, its registration and its ORDER_INFO; a view per scan and per deadline.
        assert (row["waybills"], row["messages"]) == (waybills, waybills * (row["per_waybill"] + 2))
        assert row["views"] == row["loop_views"] >= waybills * row["per_waybill"]
        assert row["graph_cpu_us_per_event"] > 0 and row["loop_cpu_us_per_event"] > 0
    full = [row for row in rows if row["mode"] == "full"]
    incremental = [row for row in rows if row["mode"] == "incremental"]
    assert full[0]["ratio_to_first"] == incremental[0]["ratio_to_first"] == 1.0
    for smaller, larger in zip(full, full[1:]):
        assert larger["bytes_per_view"] > 3 * smaller["bytes_per_view"]
        assert larger["state_bytes_per_waybill"] > 3 * smaller["state_bytes_per_waybill"]
    # A view change carries what changed: its bytes do not grow with the track, nor does the cell
    # read at every event (the scans are in a bag beside it).
    assert incremental[-1]["bytes_per_view"] < 1.5 * incremental[0]["bytes_per_view"]
    for row in rows:
        assert row["cell_bytes_per_waybill"] < 1_500 + 20 * row["per_waybill"] < row["state_bytes_per_waybill"] * 2


def test_a_tombstone_is_smaller_than_its_live_shipment_and_a_dedup_entry_holds_a_digest() -> None:
    state = measure_state(build_workload([m.message for m in traffic(1, 400, first_day(1))]))
    sizes = state["bytes"]
    assert sizes["live shipment"]["keys"] == sizes["tombstone of a closed shipment"]["keys"] == state["shipments"] > 0
    assert sizes["tombstone of a closed shipment"]["max"] < sizes["live shipment"]["mean"]
    assert sizes["de-duplication entry"]["keys"] == state["courier_events"]
    assert 32 < sizes["de-duplication entry"]["mean"] < 100  # the event_id and its SHA-256


def test_a_child_of_a_large_process_reports_its_own_peak_memory() -> None:
    held = bytearray(600 * 2**20)  # the parent's RSS: ru_maxrss would report at least this
    held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page
    child = subprocess.run(
        [sys.executable, "-c", "from benchmarks.memory import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    assert 0 < float(child.stdout) < 450


def test_beam_costs_prints_a_row_per_element_shape_and_refuses_no_elements(capsys: pytest.CaptureFixture[str]) -> None:
    beam_costs.main(["--elements", "200"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| FnApiRunner, 200 elements |")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert set(rows) == set(beam_costs.ELEMENTS)
    with pytest.raises(SystemExit) as exit_info:
        beam_costs.main(["--elements", "0"])
    assert exit_info.value.code == 2
