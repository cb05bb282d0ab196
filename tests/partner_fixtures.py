"""Partner files for tests: a key configuration, rows with known flaws, encrypted files, a job
run against a points API, and its answers."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Optional

from pipeline.local import partner_cli
from pipeline.local.points_api import PointsApi
from pipeline.partner import file_format as partner_format
from pipeline.partner.feedback import partners_from, read_feedback
from pipeline.partner.keys import Partner

PARTNER = "ACME-BANK"
MEMBERS = [f"M{i:06d}" for i in range(1, 501)]
KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
WHEN = "2026-11-21T07:59:00+08:00"


def write_config(folder: Path, **acme: object) -> Path:
    """``folder/partner_keys.json``: ACME-BANK (members M000001..M000500, ``acme`` added to its
    entry) and SKY-AIR."""
    (folder / "members.txt").write_text("\n".join(MEMBERS) + "\n")
    config = {
        PARTNER: {"keys": {"k1": KEY}, "members_file": "members.txt", "max_points": 10_000, **acme},
        "SKY-AIR": {"keys": {"s1": OTHER_KEY}, "members": ["S1"]},
    }
    path = folder / "partner_keys.json"
    path.write_text(json.dumps(config))
    return path


def flawed_rows(count: int, prefix: str = "TX") -> tuple[list[str], dict[int, str]]:
    """``count`` rows (D fields) and {row_no: reason} of those built to break a rule."""
    rows, flaws = [], {}
    for n in range(1, count + 1):
        member, points, txn, when = MEMBERS[n % len(MEMBERS)], str(1 + n % 900), f"{prefix}-{n:07d}", WHEN
        if n % 50 == 0:
            member, flaws[n] = "M999999", "unknown_member"
        elif n % 77 == 0:
            points, flaws[n] = "0", "bad_points"
        elif n % 91 == 0:
            points, flaws[n] = "20000", "points_over_limit"
        elif n % 97 == 0:
            when, flaws[n] = "21/11/2026 07:59", "bad_txn_time"
        elif n % 103 == 0 and n - 1 not in flaws:  # a copy of a rejected row is no duplicate
            txn, flaws[n] = f"{prefix}-{n - 1:07d}", "duplicate_txn_id"
        elif n % 211 == 0:
            txn, flaws[n] = "", "missing_txn_id"
        rows.append(f"{PARTNER},{member},{points},{txn},{when}")
    return rows, flaws


def encrypted(rows: list[str], key_id: str = "k1", key: str = KEY, partner: str = PARTNER,
              lines: Optional[list[str]] = None, file_id: str = "F-1") -> bytes:
    """A partner file of ``rows`` (or of the text ``lines`` as they are)."""
    out = io.BytesIO()
    text = lines if lines is not None else list(partner_format.partner_file_lines(partner, file_id, "2026-11-21T08:00:00Z", rows))
    target = Partner(partner, {key_id: base64.b64decode(key)}, key_id)
    partner_format.encrypt_text(text, out, target)
    return out.getvalue()


def run_job(inbox: Path, keys: Path, api: PointsApi, out: Path, *extra: str) -> None:
    partner_cli.run([
        f"--inbox={inbox}", f"--partner_keys={keys}", f"--points_api={api.url}", f"--output_dir={out}",
        "--slow_seconds=0.2", "--max_attempts=4", "--retry_seconds=10", "--runner=FnApiRunner", *extra,
    ])


def last_run(out: Path) -> Path:
    """The folder of the latest run writing into ``out``."""
    return sorted((out / "runs").iterdir())[-1]


def feedback_of(out: Path, keys: Path, name: str) -> list[str]:
    """The text of answer ``name`` of the latest run."""
    with (last_run(out) / "feedback" / name).open("rb") as stream:
        return read_feedback(stream, partners_from(str(keys)))


def statuses(lines: list[str]) -> dict[int, tuple[str, str]]:
    """{row_no: (status, reason)} of a feedback's R lines."""
    return {int(f[1]): (f[5], f[6]) for f in (line.split(",") for line in lines if line.startswith("R,"))}
