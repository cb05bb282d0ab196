"""The partner-file job's command line: ``python -m pipeline.partner [options]`` (``--help`` lists them).

Runs :func:`pipeline.partner.job.build` to the end in batch, or watches the inbox in streaming
until Ctrl-C or ``--run_seconds``; on Dataflow it submits the job and returns. Also writes a
sample partner (``--write_sample``) and decrypts a feedback file (``--read_feedback``).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline.delivery.secret_refs import REFERENCE_FORMS, parse_ref
from pipeline.io.sinks import is_local_path
from pipeline.local import accounting
from pipeline.local.cli import configure_logging
from pipeline.local.runner_choice import LOCAL_RUNNER, STOCK_STREAMING_RUNNER, resolve_runner, runs_in_process
from pipeline.option_checks import check_config_file, refuse_unknown
from pipeline.partner import file_format as partner_format
from pipeline.partner import keys as partner_keys
from pipeline.partner.feedback import partners_from
from pipeline.partner.job import build, new_run_id, run_dir, store_uri
from pipeline.partner.keys import FEEDBACK_PREFIX
from pipeline.partner.store import describe, find_rows, parse_store

SAMPLE_SECRET = "points_api.secret"  # the points API's signing secret in a --write_sample folder
BATCH_ROWS = (2500, 5000)  # the batch bounds the points API takes unless --allow_any_batch_bounds
MAX_CONCURRENCY = 64  # the most batches in flight --max_concurrency may ask for


def argument_parser() -> argparse.ArgumentParser:
    """The tool's own options; what it does not know (--runner, --streaming, --project, ...) goes to
    Beam. Not a ``PipelineOptions`` subclass: Beam parses every subclass together, and the job's
    ``WaybillOptions`` already has ``--output_dir`` with another meaning."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.partner", description=(
        "Credit loyalty points from encrypted partner files through the delivery layer, in batches whose size and "
        "number in flight adapt to the points API; settle every row with what the points API holds; answer every file "
        "with an encrypted feedback (or exception) file, send it to the partner, and keep every file and row outcome in "
        "a store. Beam's own options are accepted too: --streaming (watch --inbox), --runner (default: the DirectRunner), "
        "--project, ..."))
    parser.add_argument("--inbox", default=None, help="partner files to read: a file, a folder (its *.wbpf "
                        "files) or a glob; local or gs://. In streaming, watched for new files. No default.")
    parser.add_argument("--partner_keys", default=None, help="the partner key configuration, a JSON file "
                        "(format in docs/partner-files.md); read at launch and by the workers, its keys never part of the job "
                        "graph. No default.")
    parser.add_argument("--points_api", default=None, help="URL the credits are POSTed to (a JSON array per "
                        "batch, Standard Webhooks headers). No default.")
    parser.add_argument("--points_api_secret_ref", default=None, help="where the points API's whsec_<base64> "
                        f"signing secret is: {REFERENCE_FORMS}; read by the workers, never a value on the command "
                        "line. Default: unsigned.")
    parser.add_argument("--output_dir", default="output", help="each run writes runs/<run id>/ here (feedback/, "
                        "partner_receipts/, feedback_receipts/, partner_dead_letter/); archive/ keeps every received "
                        "file. Default: output.")
    parser.add_argument("--store", default=None, help="where every file and row outcome is kept: sqlite:<path> "
                        "(local runs) or bigquery:<project>.<dataset> (Dataflow). Default: sqlite:<output_dir>/store.sqlite.")
    parser.add_argument("--reconcile_seconds", type=float, default=300.0, help="how long the points API may take to "
                        "answer the look-ups of one file before its unconfirmed rows are reported not_credited. Default: 300.")
    parser.add_argument("--max_invalid_percent", type=float, default=None, help="refuse a whole file (exception file, "
                        "nothing credited) when more than this percent of its rows break a row rule. Default: never.")
    parser.add_argument("--find_txn", default=None, help="print what happened to this txn_id (every file and run that "
                        "held it) from the --store, and exit.")
    parser.add_argument("--file", default=None, help="with --find_txn, only in this file (its file id or name).")
    parser.add_argument("--poll_seconds", type=float, default=10.0, help="with --streaming, how often the inbox "
                                                                         "is listed. Default: 10.")
    parser.add_argument("--run_seconds", type=float, default=0.0, help="with --streaming on this machine, stop "
                                                                       "after this long; 0 runs until Ctrl-C. Default: 0.")
    parser.add_argument("--min_batch", type=int, default=2500, help="smallest batch of rows. Default: 2500.")
    parser.add_argument("--max_batch", type=int, default=5000, help="largest batch of rows. Default: 5000.")
    parser.add_argument("--allow_any_batch_bounds", action="store_true", help="accept --min_batch/--max_batch "
                        f"outside {BATCH_ROWS[0]}..{BATCH_ROWS[1]} (bounds agreed with the points API). Default: off.")
    parser.add_argument("--min_concurrency", type=int, default=1, help="fewest batches in flight at once; the "
                        "number adapts between this and --max_concurrency as the batch size does. Default: 1.")
    parser.add_argument("--max_concurrency", type=int, default=4, help=f"most batches in flight at once (at most "
                        f"{MAX_CONCURRENCY}). Default: 4.")
    parser.add_argument("--slow_seconds", type=float, default=2.0, help="an answer slower than this shrinks the "
                                                                        "batches. Default: 2.0.")
    parser.add_argument("--max_attempts", type=int, default=6, help="attempts per batch. Default: 6.")
    parser.add_argument("--retry_seconds", type=float, default=120.0, help="time budget per batch, retries "
                                                                           "included. Default: 120.")
    parser.add_argument("--split_rows", type=int, default=50_000, help="rows per work item handed to the "
                                                                       "delivery layer. Default: 50000.")
    parser.add_argument("--write_sample", default=None, help="write a sample into this folder (keys, members, "
                        "the points API's signing secret, inbox/ with one encrypted file, some rows invalid), print "
                        "how to run it, and exit.")
    parser.add_argument("--sample_rows", type=int, default=10_000, help="rows of the --write_sample file. "
                                                                        "Default: 10000.")
    parser.add_argument("--read_feedback", default=None, help="decrypt and print a feedback or exception file "
                                                              "(needs --partner_keys), and exit.")
    return parser


def check_delivery_bounds(options: argparse.Namespace) -> None:
    """Refuses batch bounds outside ``BATCH_ROWS`` (unless ``--allow_any_batch_bounds``) and
    concurrency bounds outside 1..``MAX_CONCURRENCY``, or a minimum above its maximum.

    >>> check_delivery_bounds(argparse.Namespace(min_batch=2500, max_batch=6000, allow_any_batch_bounds=False,
    ...                                          min_concurrency=1, max_concurrency=4))
    Traceback (most recent call last):
    ValueError: --min_batch and --max_batch must be within 2500..5000, got 2500 and 6000; give --allow_any_batch_bounds for bounds agreed with the points API
    """
    low, high = BATCH_ROWS
    if not 1 <= options.min_batch <= options.max_batch:
        raise ValueError(f"--min_batch and --max_batch must satisfy 1 <= min <= max, got {options.min_batch} "
                         f"and {options.max_batch}")
    if not options.allow_any_batch_bounds and not low <= options.min_batch <= options.max_batch <= high:
        raise ValueError(f"--min_batch and --max_batch must be within {low}..{high}, got {options.min_batch} and "
                         f"{options.max_batch}; give --allow_any_batch_bounds for bounds agreed with the points API")
    if not 1 <= options.min_concurrency <= options.max_concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"--min_concurrency and --max_concurrency must satisfy 1 <= min <= max <= {MAX_CONCURRENCY}, "
                         f"got {options.min_concurrency} and {options.max_concurrency}")


def write_sample(folder: str, rows: int, seed: int = 7) -> Path:
    """A partner ``ACME-BANK`` (key, 2,000 members), the points API's signing secret
    (``points_api.secret``, readable by its owner only) and one encrypted file in ``folder/inbox``;
    about 3 rows in 50 break a rule. Keeps an existing ``partner_keys.json`` and secret. Returns the file."""
    root = Path(folder)
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    secret = root / SAMPLE_SECRET
    if not secret.exists():
        secret.touch(mode=0o600)
        secret.write_text("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode() + "\n")
    keys = root / "partner_keys.json"
    if not keys.exists():
        (root / "acme-members.txt").write_text("".join(f"M{i:06d}\n" for i in range(1, 2001)))
        config = {"ACME-BANK": {"keys": {"k1": partner_keys.new_key()}, "members_file": "acme-members.txt",
                                "max_points": 100_000}}
        keys.write_text(json.dumps(config, indent=2) + "\n")
    partner = partner_keys.load_partners(keys.read_text(), lambda name: (root / name).read_text())["ACME-BANK"]
    rng = random.Random(seed)
    lines = []
    for n in range(1, rows + 1):
        member, points, when = f"M{rng.randint(1, 2000):06d}", str(rng.randint(1, 5000)), "2026-11-21T07:59:00+08:00"
        flaw = rng.randrange(50)
        member, points, when = ("M999999" if flaw == 0 else member, "0" if flaw == 1 else points,
                                "yesterday" if flaw == 2 else when)
        lines.append(f"ACME-BANK,{member},{points},TX-{n:08d},{when}")
    target = root / "inbox" / f"ACME-{seed:04d}-{rows}.wbpf"
    with target.open("wb") as out:
        partner_format.encrypt_text(partner_format.partner_file_lines(
            "ACME-BANK", target.stem, "2026-11-21T08:00:00Z", lines), out, partner)
    return target


def progress(counters: dict[str, int]) -> str:
    """The run's totals from its counters, one line."""
    c = counters
    answers = c.get("partner_feedback_files", 0) + c.get("partner_exception_files", 0)
    return (f"files {c.get('partner_files_read', 0):,} (refused {c.get('partner_files_refused', 0):,}, answered "
            f"{answers:,}) | rows {c.get('partner_rows_read', 0):,}: credited {c.get('partner_rows_credited', 0):,}, "
            f"rejected {c.get('partner_rows_rejected', 0):,}, already credited {c.get('partner_rows_already_credited', 0):,}, "
            f"not credited {c.get('partner_rows_not_credited', 0):,} | answers sent to partners "
            f"{c.get('partner_answers_sent', 0) + _sum_of(c, f'delivery_delivered_{FEEDBACK_PREFIX}'):,}")


def _sum_of(counters: dict[str, int], prefix: str) -> int:
    return sum(value for name, value in counters.items() if name.startswith(prefix))


def problems(counters: dict[str, int]) -> list[str]:
    """What a finished batch run leaves to do: files without an answer, rows not credited."""
    found = []
    unanswered = counters.get("partner_files_read", 0) - counters.get("partner_feedback_files", 0) - counters.get(
        "partner_exception_files", 0)
    if unanswered:
        found.append(f"{unanswered:,} file(s) got no answer: see the log and partner_dead_letter/")
    not_sent = counters.get("partner_answers_not_sent", 0) + _sum_of(counters, f"delivery_dead_lettered_{FEEDBACK_PREFIX}")
    if not_sent:
        found.append(f"{not_sent:,} answer(s) not sent to their partner's feedback_target: see partner_dead_letter/")
    not_credited = counters.get("partner_rows_not_credited", 0)
    if not_credited:
        found.append(f"{not_credited:,} row(s) not credited (see the feedback): running the same inbox again sends "
                     "them again, and nothing is credited twice")
    return found


def _remove_empty_temp_folders(run_folder: str) -> None:
    """The file writers leave their emptied ``.temp*`` folders behind; a finished local run removes them."""
    for folder in Path(run_folder).glob("*/.temp*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def run(argv: Optional[list[str]] = None) -> PipelineResult | None:
    """Parses ``argv`` and runs: to the end in batch; in streaming until Ctrl-C or --run_seconds
    (a remote runner's job is submitted and left running)."""
    options, beam_args = argument_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    refuse_unknown(beam_args, PipelineOptions)
    if options.write_sample:
        sample = write_sample(options.write_sample, options.sample_rows)
        root = options.write_sample
        secret_ref = f"file:{root}/{SAMPLE_SECRET}"
        print(f"wrote {sample}, {root}/partner_keys.json and {root}/{SAMPLE_SECRET}. Try:\n"
              f"  python -m pipeline.local.points_api --port 8088 --faults --secret_ref {secret_ref} &\n"
              f"  python -m pipeline.partner --inbox {root}/inbox --partner_keys {root}/partner_keys.json "
              f"--points_api http://127.0.0.1:8088/credits --points_api_secret_ref {secret_ref} --output_dir {root}/out\n"
              f"  python -m pipeline.partner --partner_keys {root}/partner_keys.json "
              f"--read_feedback <the answer's path, printed by the run>")
        return None
    if options.find_txn:
        store = parse_store(store_uri(options))
        if not store.startswith("sqlite:"):
            raise ValueError(f"--find_txn reads a sqlite: store; query {store} with the SQL in docs/partner-store.md")
        found = find_rows(store.removeprefix("sqlite:"), options.find_txn, options.file)
        print(describe(found) if found else f"{options.find_txn}: in no file of {store}")
        return None
    missing = [f"--{name}" for name in ("partner_keys",) + (() if options.read_feedback else ("inbox", "points_api"))
               if not getattr(options, name)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (see --help)")
    check_delivery_bounds(options)
    check_config_file("--partner_keys", options.partner_keys)
    if options.inbox and is_local_path(options.inbox) and not os.path.exists(options.inbox):
        raise ValueError(f"--inbox {options.inbox}: no such file or folder")
    if options.points_api_secret_ref is not None:
        parse_ref(options.points_api_secret_ref, "--points_api_secret_ref")
    partners = partners_from(options.partner_keys)  # fails early on a bad configuration
    if options.read_feedback:
        from pipeline.partner.feedback import read_feedback
        with FileSystems.open(options.read_feedback, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            print("\n".join(read_feedback(stream, partners)))
        return None
    beam_options = PipelineOptions(beam_args)
    standard = beam_options.view_as(StandardOptions)
    standard.runner = resolve_runner(standard.runner, standard.streaming)
    if standard.streaming and standard.runner in (STOCK_STREAMING_RUNNER, LOCAL_RUNNER):
        raise ValueError(f"--streaming cannot run on {standard.runner}: Beam 2.77's streaming DirectRunner cannot run "
                         "the splittable DoFns of MatchContinuously; use --runner=DataflowRunner (or PrismRunner where "
                         "Prism is installed)")
    in_process = runs_in_process(standard.runner)
    if in_process != (parse_store(store_uri(options)).startswith("sqlite:")):
        raise ValueError(f"--store {store_uri(options)} does not fit {standard.runner}: sqlite:<path> is for local runs, "
                         "bigquery:<project>.<dataset> for Dataflow")
    run_id = new_run_id()
    p = beam.Pipeline(options=beam_options)
    build(p, options, standard.streaming, run_id)
    result = p.run()
    here = run_dir(options.output_dir, run_id)
    if not in_process:
        print(f"{standard.runner}: job submitted; it runs without this process and writes {here}", flush=True)
        return result
    if not standard.streaming:
        result.wait_until_finish()
        counters = accounting.read_counters(result)
        print(progress(counters), flush=True)
        print(f"run {run_id}: {here}", flush=True)
        for answer in sorted(m.path for found in FileSystems.match([FileSystems.join(here, "feedback", "*")])
                             for m in found.metadata_list):
            print(f"  answer: {answer}", flush=True)
        _remove_empty_temp_folders(here)
        for problem in problems(counters):
            print(f"attention: {problem}", flush=True)
        return result
    started = time.monotonic()
    try:
        while not options.run_seconds or time.monotonic() - started < options.run_seconds:
            print(progress(accounting.read_counters(result)), file=sys.stderr, flush=True)
            time.sleep(min(2.0, options.poll_seconds))
    except KeyboardInterrupt:
        pass
    result.cancel()  # on the DirectRunner wait_until_finish() never returns after cancel (Beam 2.77)
    print(progress(accounting.read_counters(result)), flush=True)
    return result


def main() -> None:
    """Exit status: 0 every file answered and every valid row credited (or already credited),
    1 rows not credited or files unanswered, 2 a bad option or configuration."""
    configure_logging()
    try:
        result = run()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if result is not None and result.state == "DONE" and problems(accounting.read_counters(result)):
        sys.exit(1)

