"""Account digests next to a recount from the run's other outputs.

A digest's ``totals`` count every subscribable event of its account. The same figures can be
counted from what the job wrote elsewhere: the account's orders (``orders/``), the courier
events of its shipments (``supervision/``, a shipment's merchant being the one its ORDER_INFO
names, for the pieces of a multi-piece shipment too) and its alerts (``alerts/``). Courier
events dead-lettered as late for a closed shipment are pushed to supervision but tracked by no
lifecycle, so they are left out. The last digest of each digest subscriber (highest
``sequence``) must equal the recount when the run has sent everything it had.

::

    python -m benchmarks.digests --count <output folder>             # any finished run
    python -m benchmarks.digests --events 1500 --days 2 --shuffle 7  # run the job (batch) on a
                                                                     # shuffled multi-day file
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

DIGEST_TYPE = "com.waybill.account_digest"
LATE_FOR_CLOSED = "late_for_closed_waybill"


def _records(folder: Path) -> Iterator[dict[str, Any]]:
    """The JSON Lines records of an output folder (its partition folders included)."""
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    """A courier event's payload without its Avro JSON union wrapper."""
    (inner,) = event["payload"].values()
    return dict(inner)


def recount(output_dir: Path) -> dict[str, Counter[str]]:
    """``{account: flat counts}`` (the keys of a digest's totals: ``events``,
    ``orders_by_status.PAID``, ...) from the orders, supervision records and alerts written."""
    counts: dict[str, Counter[str]] = {}
    late = {d["event_id"] for d in _records(output_dir / "deadletter") if d["error_kind"] == LATE_FOR_CLOSED}
    for order in _records(output_dir / "orders"):
        counts.setdefault(order["merchant_id"], Counter()).update(["events", f"orders_by_status.{order['status']}"])
    courier = [r for r in _records(output_dir / "supervision") if r["event_id"] not in late]
    merchant_of = {
        r["identification"]["master_waybill_no"] or r["identification"]["waybill_no"]: _payload(r["event"])["merchant_id"]
        for r in courier if r["event"]["event_type"] == "ORDER_INFO"
    }
    for record in courier:
        event = record["event"]
        merchant = merchant_of.get(record["identification"]["master_waybill_no"] or record["identification"]["waybill_no"])
        if merchant is None:
            continue
        kind = event["event_type"]
        key = {"TRACK_SCAN": f"scans_by_type.{_payload(event).get('scan_type')}", "ORDER_INFO": "waybills_registered",
               "REAL_NAME_REGISTRATION": "real_name_registrations"}[kind]
        counts.setdefault(merchant, Counter()).update(["events", key])
    for alert in _records(output_dir / "alerts"):
        if alert["merchant_id"] is not None:
            opened = "opened" if alert["status"] == "OPEN" else "closed"
            counts.setdefault(alert["merchant_id"], Counter()).update(["events", f"alerts_{opened}.{alert['kind']}"])
    return counts


def flat(totals: dict[str, Any]) -> Counter[str]:
    """A digest's ``totals`` as flat counts, zeros left out (``{"scans_by_type": {"PICKUP": 3}}``
    -> ``{"scans_by_type.PICKUP": 3}``)."""
    out: Counter[str] = Counter()
    for group, value in totals.items():
        if isinstance(value, dict):
            out.update({f"{group}.{name}": n for name, n in value.items() if n})
        elif value:
            out[group] = value
    return out


def last_digests(output_dir: Path) -> dict[str, dict[str, Any]]:
    """``{subscriber_id: data of its digest with the highest sequence}`` from ``subscribers/``."""
    last: dict[str, dict[str, Any]] = {}
    for message in _records(output_dir / "subscribers"):
        if message.get("type") == DIGEST_TYPE:
            data = message["data"]
            if data["sequence"] > last.get(data["subscriber_id"], {"sequence": 0})["sequence"]:
                last[data["subscriber_id"]] = data
    return last


def compare(output_dir: Path) -> dict[str, tuple[Counter[str], Counter[str]]]:
    """``{subscriber_id: (its last digest's totals, the recount of its account)}``, flat."""
    recounted = recount(output_dir)
    return {s: (flat(d["totals"]), recounted.get(d["account"], Counter())) for s, d in sorted(last_digests(output_dir).items())}


def table(compared: dict[str, tuple[Counter[str], Counter[str]]]) -> str:
    """Each figure of each subscriber's last digest next to its recount."""
    rows = [f"{'subscriber':24} {'figure':36} {'digest':>7} {'recount':>7}"]
    for subscriber, (digest, counted) in compared.items():
        for key in sorted(set(digest) | set(counted)):
            mark = "" if digest[key] == counted[key] else "  <- differs"
            rows.append(f"{subscriber:24} {key:36} {digest[key]:7,} {counted[key]:7,}{mark}")
    return "\n".join(rows)


def shuffled_input(path: Path, events: int, days: int, seed: int, last_day: str = "2026-11-21") -> None:
    """``days`` synthetic days of ``events`` each (without malformed messages) as one JSON Lines
    file, its lines in a random order (``seed``)."""
    from datetime import date, timedelta

    from pipeline.io import synthetic
    from pipeline.model.messages import Encoding

    end = date.fromisoformat(last_day)
    lines = []
    for i in range(days):
        profile = synthetic.TrafficProfile(events=events, seed=seed + i, day=end - timedelta(days=days - 1 - i),
                                           malformed_share=0.0)
        lines += [m.message.data.decode("utf-8") for m in synthetic.generate(profile, Encoding.JSON)]
    random.Random(seed).shuffle(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_job(input_path: Path, output_dir: Path, extra: Optional[list[str]] = None) -> None:
    """``python -m pipeline`` (the local runner, batch) on a file; raises if it does not balance."""
    from pipeline.local import cli
    from pipeline.local.runner_choice import LOCAL_RUNNER

    result = cli.run([f"--runner={LOCAL_RUNNER}", "--source=file", f"--input={input_path}", f"--output_dir={output_dir}",
                      *(extra or [])])
    if not result.balanced:
        raise SystemExit("the run did not balance; see its accounting above")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=Path, default=None, help="compare in this output folder instead of running "
                        "the job. Default: run the job.")
    parser.add_argument("--events", type=int, default=1500, help="synthetic messages per day. Default: 1500.")
    parser.add_argument("--days", type=int, default=2, help="days of traffic. Default: 2.")
    parser.add_argument("--shuffle", type=int, default=1, help="seed of the traffic and of its order. Default: 1.")
    args, extra = parser.parse_known_args(argv)
    if args.count is not None:
        print(table(compare(args.count)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-digests-") as folder:
        shuffled_input(Path(folder) / "input.jsonl", args.events, args.days, args.shuffle)
        run_job(Path(folder) / "input.jsonl", Path(folder) / "output", extra)
        print(table(compare(Path(folder) / "output")))


if __name__ == "__main__":
    main()
