"""Crediting a partner file to a points API that shows pressure: fixed against adaptive batches.

``python -m benchmarks.partner_credit`` writes a partner inbox of ``--rows`` rows
(:func:`pipeline.local.partner_cli.write_sample`: about 3 rows in 50 break a row rule), starts
the local points API in this process with a capacity (:class:`pipeline.local.points_api.CapacityPlan`:
a 429 over ``--capacity_rows`` rows in flight, answers slower as rows in flight grow, some 500s),
and runs ``python -m pipeline.partner`` on the local runner against it once per setting:

- ``fixed 2500 x 1``: 2,500 rows a request, one request at a time;
- ``fixed 5000 x 4``: 5,000 rows a request, four at a time;
- ``adaptive``: 2,500 to 5,000 rows and 1 to 4 requests at once, adapted (the job's defaults).

Each setting gets a fresh API. The figures are the API's own: rows credited (distinct keys
applied), requests, 429s, 5xx, the most rows and requests in flight, and the seconds from its
first request to the last credit's answer (``credit s``); ``job s`` is the job's wall time,
start-up and feedback included. ``feedback`` is the sum of the ``credited`` totals of the run's
feedback files, decrypted as the partner reads them: it must equal ``credited``, what the API
holds. One run per setting: the timings are of this machine in this run.

Example::

    python -m benchmarks.partner_credit --rows 50000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.local.partner_cli import SAMPLE_SECRET, write_sample
from pipeline.local.points_api import CapacityPlan, Fault, PointsApi
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.partner import file_format as partner_format
from pipeline.partner.feedback import partners_from, read_feedback
from pipeline.partner.file_format import Row

ROOT = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_S = 900


@dataclass(frozen=True)
class Setting:
    """Batch and concurrency bounds of one run (min = max: fixed)."""

    name: str
    min_batch: int
    max_batch: int
    min_concurrency: int
    max_concurrency: int

    def options(self) -> list[str]:
        return [f"--min_batch={self.min_batch}", f"--max_batch={self.max_batch}",
                f"--min_concurrency={self.min_concurrency}", f"--max_concurrency={self.max_concurrency}"]


SETTINGS = (
    Setting("fixed 2500 x 1", 2500, 2500, 1, 1),
    Setting("fixed 5000 x 4", 5000, 5000, 4, 4),
    Setting("adaptive", 2500, 5000, 1, 4),
)


@dataclass(frozen=True)
class Outcome:
    """What the points API saw of one run."""

    setting: str
    valid_rows: int
    credited: int  # distinct keys the API applied
    credited_twice: int  # keys applied more than once (must be 0)
    feedback_credited: int  # the credited totals of the run's feedback files (must equal credited)
    requests: int
    throttled: int  # 429s
    server_errors: int  # 5xx
    max_rows_in_flight: int
    max_requests_in_flight: int
    credit_s: float  # the API's first request -> the answer of its last credit
    job_s: float
    exit_code: int


class TimedPlan:
    """A fault plan that notes, per request number, when it arrived and when its answer is due."""

    def __init__(self, plan: CapacityPlan) -> None:
        self.plan = plan
        self.times: dict[int, tuple[float, float]] = {}

    def __call__(self, number: int, rows: int) -> Fault:
        fault = self.plan(number, rows)
        now = time.monotonic()
        self.times[number] = (now, now + fault.delay_s)
        return fault


def valid_rows(inbox: Path, keys: Path) -> int:
    """The rows of the inbox's files that pass the row rules: what a run must credit."""
    partners = partners_from(str(keys))
    count = 0
    for path in sorted(inbox.glob("*.wbpf")):
        with path.open("rb") as stream:
            count += sum(isinstance(item, Row) for item in partner_format.read_rows(stream, partners))
    return count


def run_setting(setting: Setting, root: Path, valid: int, capacity_rows: int) -> Outcome:
    """Runs the job once against a fresh points API; the figures are the API's."""
    plan = TimedPlan(CapacityPlan(capacity_rows=capacity_rows))
    output = root / setting.name.replace(" ", "_")
    secret = (root / SAMPLE_SECRET).read_text().strip()
    with PointsApi(plan, max_requests=100_000, secret=secret) as api:
        args = [sys.executable, "-m", "pipeline.partner", f"--inbox={root / 'inbox'}",
                f"--partner_keys={root / 'partner_keys.json'}", f"--points_api={api.url}",
                f"--points_api_secret_ref=file:{root / SAMPLE_SECRET}", f"--output_dir={output}",
                f"--runner={LOCAL_RUNNER}", *setting.options()]
        started = time.monotonic()
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
        job_s = time.monotonic() - started
        if done.returncode != 0:
            print(f"{setting.name}: the job exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr)
        requests = list(api.requests)
        counts = list(api.applied.values())
    applying = [plan.times[r.number] for r in requests if r.applied and r.number in plan.times]
    first = min((arrived for arrived, _ in plan.times.values()), default=0.0)
    return Outcome(
        setting=setting.name, valid_rows=valid, credited=len(counts), credited_twice=sum(1 for n in counts if n > 1),
        feedback_credited=feedback_credited(output, root / "partner_keys.json"),
        requests=len(requests), throttled=sum(1 for r in requests if r.status == 429),
        server_errors=sum(1 for r in requests if r.status >= 500), max_rows_in_flight=plan.plan.max_in_flight_rows,
        max_requests_in_flight=plan.plan.max_in_flight_requests,
        credit_s=max((due for _, due in applying), default=first) - first, job_s=job_s, exit_code=done.returncode,
    )


def feedback_credited(output: Path, keys: Path) -> int:
    """The ``credited`` totals of every feedback file the runs into ``output`` wrote (the T lines)."""
    partners = partners_from(str(keys))
    total = 0
    for path in output.glob("runs/*/feedback/*.feedback.wbpf"):
        with path.open("rb") as stream:
            total += int(read_feedback(stream, partners)[-1].split(",")[2])
    return total


def measure(workdir: Path, rows: int, capacity_rows: int) -> list[Outcome]:
    """Writes the inbox under ``workdir`` and runs every setting against it."""
    write_sample(str(workdir), rows)
    valid = valid_rows(workdir / "inbox", workdir / "partner_keys.json")
    return [run_setting(setting, workdir, valid, capacity_rows) for setting in SETTINGS]


def table(outcomes: list[Outcome]) -> str:
    """The figures, one row per setting."""
    head = (f"{'setting':<16}{'credit s':>9}{'job s':>7}{'rows/s':>8}{'credited':>10}{'valid':>8}{'requests':>9}"
            f"{'feedback':>10}{'429':>6}{'5xx':>5}{'max rows in flight':>20}{'max requests in flight':>24}")
    lines = [head]
    for o in outcomes:
        rate = o.credited / o.credit_s if o.credit_s else 0.0
        lines.append(f"{o.setting:<16}{o.credit_s:>9.1f}{o.job_s:>7.1f}{rate:>8,.0f}{o.credited:>10,}{o.valid_rows:>8,}"
                     f"{o.requests:>9}{o.feedback_credited:>10,}{o.throttled:>6}{o.server_errors:>5}{o.max_rows_in_flight:>20,}"
                     f"{o.max_requests_in_flight:>24}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partner_credit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the partner file. Default: 50000.")
    parser.add_argument("--capacity_rows", type=int, default=10_000, help="rows the points API takes in flight "
                        "at once. Default: 10000.")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table.")
    parser.add_argument("--workdir", type=Path, default=None, help="where the inbox and outputs go. Default: a "
                        "temporary folder.")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="partner-credit-"))
    outcomes = measure(workdir, args.rows, args.capacity_rows)
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], indent=2))
    else:
        print(f"{args.rows:,} rows, points API capacity {args.capacity_rows:,} rows in flight, in {workdir}\n"
              f"{table(outcomes)}")
    everything = all(o.exit_code == 0 and o.credited == o.valid_rows == o.feedback_credited and not o.credited_twice
                     for o in outcomes)
    return 0 if everything else 1


if __name__ == "__main__":
    sys.exit(main())
