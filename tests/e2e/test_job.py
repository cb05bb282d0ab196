"""The command-line contract, end to end: ``python -m pipeline ...`` on files and synthetic traffic, on the
local runner as ``./run_local.sh`` runs it (stock Beam runs are in test_stock_beam_paths)."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Response

from pipeline.config import DEFAULT_TARGETS
from pipeline.io import synthetic
from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model import schemas
from pipeline.model.json_records import from_json
from pipeline.model.messages import Encoding
from pipeline.stages.lifecycle import WAYBILL_VIEW, WAYBILL_VIEW_CHANGE
from tests.paths import FIXTURES
from tests.unit.stages.test_incremental_views import applied

EXPECTED_DEAD_LETTERS = collections.Counter(
    {"not_json": 2, "missing_field": 3, "unknown_enum": 1, "bad_timestamp": 2, "payload_mismatch": 1,
     "absurd_timestamp": 1, "unknown_schema": 1, "wrong_type": 1}
)


def run(argv: list[str]) -> Any:
    """``python -m pipeline`` in this process, on the local runner unless ``argv`` names another."""
    return cli.run([f"--runner={LOCAL_RUNNER}", *argv])


def read_output(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["batch", "streaming"])
def test_replaying_the_edge_case_file(tmp_path: Path, mode: list[str]) -> None:
    result = run(["--source=file", f"--input={FIXTURES / 'edge_cases.jsonl'}", f"--output_dir={tmp_path}", *mode])
    assert (result.inputs, result.pushed, result.orders, result.dead_lettered, result.duplicates) == (19, 4, 1, 12, 2)
    assert result.balanced
    supervision = read_output(tmp_path / "supervision")
    assert sorted(r["event_id"] for r in supervision) == ["ev-001", "ev-010", "ev-016", "ev-020"]
    assert all(r["event_id"] == r["event"]["event_id"] and r["identification"]["waybill_id"] for r in supervision)
    piece = next(r for r in supervision if r["event_id"] == "ev-016")
    assert piece["identification"]["master_waybill_no"] == "WB20261121010"
    dead = read_output(tmp_path / "deadletter")
    assert collections.Counter(d["error_kind"] for d in dead) == EXPECTED_DEAD_LETTERS
    assert all(d["source"].startswith("file:") and d["message"] for d in dead)
    assert [o["event_id"] for o in read_output(tmp_path / "orders")] == ["ord-008"]
    assert json.loads((tmp_path / "accounting.json").read_text())["inputs"] == 19


def test_synthetic_streaming_run_accounts_for_every_input(tmp_path: Path) -> None:
    profile = synthetic.TrafficProfile(events=1500, seed=5, day=date(2026, 11, 21))
    result = run(["--source=synthetic", "--events=1500", "--seed=5", "--day=2026-11-21", f"--output_dir={tmp_path}", "--streaming"])
    expected = collections.Counter(m.expected for m in synthetic.generate(profile, Encoding.AVRO))
    assert result.inputs == 1500 and result.balanced
    assert result.duplicates == expected[synthetic.DUPLICATE]
    assert result.pushed + result.orders == expected[synthetic.VALID]
    dead = read_output(tmp_path / "deadletter")
    assert collections.Counter(d["error_kind"] for d in dead) == {
        k: v for k, v in expected.items() if k not in (synthetic.VALID, synthetic.DUPLICATE)
    }
    supervision_ids = [r["event_id"] for r in read_output(tmp_path / "supervision")]
    assert len(supervision_ids) == len(set(supervision_ids)) == result.pushed


def test_avro_container_files(tmp_path: Path) -> None:
    profile = synthetic.TrafficProfile(events=400, seed=2, day=date(2026, 11, 21))
    synthetic.write_avro_containers(tmp_path / "in", synthetic.generate(profile, Encoding.AVRO))
    result = run(["--source=file", f"--input={tmp_path}/in-*.avro", f"--output_dir={tmp_path / 'out'}"])
    assert result.balanced and result.pushed > 200 and result.orders > 50
    assert {d["error_kind"] for d in read_output(tmp_path / "out" / "deadletter")} <= {"absurd_timestamp", "payload_mismatch", "invalid_value"}


def test_a_corrupt_container_dead_letters_the_rest_and_the_job_goes_on(tmp_path: Path) -> None:
    profile = synthetic.TrafficProfile(events=300, seed=2, day=date(2026, 11, 21))
    (courier, _) = synthetic.write_avro_containers(tmp_path / "in", synthetic.generate(profile, Encoding.AVRO))
    data = courier.read_bytes()
    courier.write_bytes(data[: len(data) * 2 // 3])
    result = run(["--source=file", f"--input={courier}", f"--output_dir={tmp_path / 'out'}"])
    assert result.balanced and result.dead_letter_kinds.get("unreadable_file") == 1


def test_help_explains_every_option_and_bad_options_say_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    run(["--help"])
    text = capsys.readouterr().out
    for option in ("--source", "--input", "--events", "--seed", "--output_dir", "--dedup_horizon_hours", "--streaming", "--runner"):
        assert option in text
    with pytest.raises(ValueError, match="--source=file needs --input=PATH"):
        run(["--source=file"])
    with pytest.raises(ValueError, match="--time_zone must be an IANA zone"):
        run(["--time_zone=Mars/Olympus"])
    with pytest.raises(ValueError, match="--streaming on Beam's stock DirectRunner.*the accounting .* would be wrong"):
        run(["--runner=DirectRunner", "--streaming"])


def test_module_entry_point_exits_zero_when_balanced(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--events=300", "--day=2026-11-21", f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "balanced: nothing lost, nothing counted twice" in done.stdout


def test_several_synthetic_days_print_live_waybill_states_by_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounting = run(["--days=3", "--events=600", "--day=2026-11-10", f"--output_dir={tmp_path}"])

    assert accounting.balanced and accounting.inputs == 3 * 600
    printed = capsys.readouterr().out
    by_day = [line.strip() for line in printed.split("waybill states by day (event time):")[1].splitlines()[1:]]
    # The three days of traffic come first, then the days on which their states retire.
    assert [line[:10] for line in by_day[:3]] == ["2026-11-08", "2026-11-09", "2026-11-10"]
    assert all(" opened " in line and "live at 06 12 18 24 h:" in line for line in by_day[:3])


def test_incremental_views_balance_and_rebuild_each_final_view(tmp_path: Path) -> None:
    accounting = run(["--events=600", "--day=2026-11-21", "--waybill_views=incremental", f"--output_dir={tmp_path}"])

    assert accounting.balanced and accounting.written["waybill_changes"] > 0
    views = [from_json(WAYBILL_VIEW, line) for line in read_output(tmp_path / "waybills")]
    changes = [from_json(WAYBILL_VIEW_CHANGE, line) for line in read_output(tmp_path / "waybill_changes")]
    assert all(fastavro.validation.validate(c, schemas.parsed(WAYBILL_VIEW_CHANGE), strict=True) for c in changes)
    # Batch: every shipment ends with its final view. Per waybill: version 1 and the final one are full,
    # the changes between them rebuild the version before the final one, which the final one repeats.
    by_waybill = collections.defaultdict(list)
    for record in views + changes:
        by_waybill[record["waybill_no"]].append(record)
    for waybill_no, records in by_waybill.items():
        first, *between, final = sorted(records, key=lambda r: (r["generation"], r["version"]))
        assert "base_version" not in first and first["version"] == 1 and final["is_final"], waybill_no
        held = first
        for change in between:
            held = applied(held, change)
        header = ("version", "as_of", "is_final", "final_reason", "emitted_at")
        assert {k: v for k, v in held.items() if k not in header} == {k: v for k, v in final.items() if k not in header}


def test_units_subscribers_and_supervision_over_a_signed_webhook_are_delivered_and_accounted(tmp_path: Path) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    received: list[tuple[bytes, dict[str, str]]] = []

    def hook(request: Any) -> Response:
        received.append((request.get_data(), dict(request.headers)))
        return Response("ok", status=200)

    server.expect_request("/supervision", method="POST").respond_with_handler(hook)
    server.start()
    try:
        (tmp_path / "regulator.secret").write_text(secret + "\n")  # read by the workers, at setup
        targets = json.loads(DEFAULT_TARGETS.read_text()) + [
            {"target_id": "regulator", "url": server.url_for("/supervision"),
             "secret_ref": f"file:{tmp_path / 'regulator.secret'}", "max_batch": 50}
        ]
        (tmp_path / "targets.json").write_text(json.dumps(targets))
        result = run([
            "--events=800", "--seed=3", "--day=2026-11-21", f"--output_dir={tmp_path / 'out'}",
            f"--delivery_targets={tmp_path / 'targets.json'}", "--supervision_target=regulator",
        ])
    finally:
        server.clear()
        server.stop()

    assert result.balanced
    assert all(d.balanced for d in result.deliveries.values()), result.deliveries
    verifier = Webhook(secret)
    signed = [(verifier.verify(body, headers), headers["Webhook-Id"]) for body, headers in received]
    records = [(body, hook_id) for body, hook_id in signed if "alert_id" not in body]
    alerts = [(body, hook_id) for body, hook_id in signed if "alert_id" in body]
    # Supervision: every pushed record once, signed, webhook-id = the event's id.
    ids = [body["event_id"] for body, _ in records]
    assert len(ids) == len(set(ids)) == result.pushed
    assert all(hook_id == body["event_id"] for body, hook_id in records)
    # Real-name alerts, OPEN and CLOSED, go the same way: each once, webhook-id = alert_id:status;
    # STUCK alerts do not (they stay in alerts/ and go to subscribers).
    real_name = [a for a in read_output(tmp_path / "out" / "alerts") if a["kind"] == "REAL_NAME_MISSING"]
    assert real_name  # this synthetic day has OPEN ones (CLOSED: see the lifecycle_alerts test below)
    assert sorted(hook_id for _, hook_id in alerts) == sorted(f"{a['alert_id']}:{a['status']}" for a in real_name)
    assert all(hook_id == f"{body['alert_id']}:{body['status']}" and body["kind"] == "REAL_NAME_MISSING"
               for body, hook_id in alerts)
    assert result.deliveries["regulator"].delivered == result.pushed + len(real_name)
    assert read_output(tmp_path / "out" / "supervision_compliance") == []  # delivered, not written to files
    # Units: every order to erp (all codes route there), fan-out to wms for most; files agree.
    assert result.deliveries["erp"].delivered == result.orders == len(read_output(tmp_path / "out" / "units" / "erp"))
    assert 0 < result.deliveries["wms"].delivered < result.orders
    # Subscribers: M-002's digest account gets its final digest (batch), a CloudEvent.
    digests = read_output(tmp_path / "out" / "subscribers" / "merchant-m002-digest")
    assert [(d["specversion"], d["type"], d["subject"]) for d in digests] == [("1.0", "com.waybill.account_digest", "M-002")]
    receipts = read_output(tmp_path / "out" / "receipts")
    assert sum(len(r["delivered_ids"]) for r in receipts if r["target_id"] == "regulator") == len(records) + len(alerts)


def _folder_targets_and_subscriptions(tmp_path: Path) -> list[str]:
    """Two alert subscribers with folder targets, one filtering on a merchant, one on an outlet;
    the options that configure them."""
    targets = json.loads(DEFAULT_TARGETS.read_text()) + [
        {"target_id": "sub-merchant", "folder": "subscribers/merchant-m007"},
        {"target_id": "sub-outlet", "folder": "subscribers/outlet-out003"},
    ]
    alerts = {"scope": ["WAYBILL_ALERT"], "granted": "2026-01-01T00:00:00Z"}
    subscriptions = [
        {"subscriber_id": "merchant-m007", "target": "sub-merchant",
         "filter": {"event_kinds": ["WAYBILL_ALERT"], "merchants": ["M-007"]},
         "authorisation": {"id": "AUTH-M007", "account": "M-007", **alerts}},
        {"subscriber_id": "outlet-out003", "target": "sub-outlet",
         "filter": {"event_kinds": ["WAYBILL_ALERT"], "outlets": ["OUT-003"]},
         "authorisation": {"id": "AUTH-ALL-ALERTS", "account": "*", **alerts}},
    ]
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    (tmp_path / "subscriptions.json").write_text(json.dumps(subscriptions))
    return [f"--delivery_targets={tmp_path / 'targets.json'}", f"--subscriptions={tmp_path / 'subscriptions.json'}"]


def test_stuck_alerts_reach_merchant_and_outlet_subscribers_and_real_name_alerts_the_supervision_files(
    tmp_path: Path,
) -> None:
    # tests/fixtures/lifecycle_alerts.jsonl, three waybills (batch: every timer fires at the end):
    #   WB...101  merchant M-007, outlet OUT-003, registered, last scan DEPART 10:00: STUCK a day later
    #   WB...102  merchant M-008, outlet OUT-004, picked up 09:30, registered 10:30 (deadline 10:00):
    #             REAL_NAME_MISSING OPEN and CLOSED; delivered, never stuck
    #   WB...103  no ORDER_INFO (no merchant), outlet OUT-003, registered, PICKUP 11:10: STUCK
    result = run([
        "--source=file", f"--input={FIXTURES / 'lifecycle_alerts.jsonl'}",
        f"--output_dir={tmp_path / 'out'}", *_folder_targets_and_subscriptions(tmp_path),
    ])

    assert result.balanced and result.pushed == 10
    assert all(d.balanced for d in result.deliveries.values()), result.deliveries

    def delivered(folder: str) -> list[tuple[str, str, str, str, str | None]]:
        return sorted((e["type"], e["subject"], e["data"]["kind"], e["data"]["status"], e["data"]["merchant_id"])
                      for e in read_output(tmp_path / "out" / "subscribers" / folder))

    # The merchant filter matches the alert of the waybill whose ORDER_INFO named M-007; the
    # outlet filter matches it too, and the alert of the waybill that has no merchant.
    stuck_101 = ("com.waybill.waybill_alert", "WB20261121101", "STUCK", "OPEN", "M-007")
    assert delivered("merchant-m007") == [stuck_101]
    assert delivered("outlet-out003") == [stuck_101, ("com.waybill.waybill_alert", "WB20261121103", "STUCK", "OPEN", None)]
    # The supervision push's files get the real-name alerts, OPEN and CLOSED, and only those.
    compliance = sorted((a["identification"]["waybill_no"], a["kind"], a["status"])
                        for a in read_output(tmp_path / "out" / "supervision_compliance"))
    assert compliance == [("WB20261121102", "REAL_NAME_MISSING", "CLOSED"), ("WB20261121102", "REAL_NAME_MISSING", "OPEN")]
    assert sorted(a["kind"] for a in read_output(tmp_path / "out" / "alerts")) == ["REAL_NAME_MISSING"] * 2 + ["STUCK"] * 2
