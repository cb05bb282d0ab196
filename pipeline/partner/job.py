"""Partner files: receive, decrypt, check, store, credit in adaptive batches, answer every file.

``python -m pipeline.partner --help`` runs it (:mod:`pipeline.local.partner_cli`). The stage,
:class:`CreditPartnerFiles`, takes the matched files (``fileio.MatchFiles`` in batch,
``fileio.MatchContinuously`` in streaming)::

    file ─► ReadPartnerFiles ─┬─ file summaries (refused or verified; archived) ──────┐
      (pipeline.partner.      ├─ rejected rows (final outcome) ───────────────────────┤ GroupByFile
       reading)               ├─ valid rows (event_id -> row) ─┐                      │     │
                              └─ lists of credit requests      │ JoinDeliveries ──────┘     ▼
                                 ─► SpreadCredits ─► CreditPoints (delivery layer:    AnswerFiles (look-up,
                                    adaptive chunk size and concurrency, retries)      answer, COMPLETE mark,
                                    ─► receipts / dead letters ───┘                    send) ─► store, receipts

Crediting: one request per valid row, ``event_id = "<partner_id>:<txn_id>"`` (also the
payload's ``idempotency_key``), sent to a batch-endpoint :class:`DeliveryTarget` (one POST per
chunk, a JSON array). A rerun of the same file, or of a run stopped half-way, sends every valid
row again under the same key: the points API credits a key once, so nothing is credited twice.
Each row's outcome is then what the points API holds, asked per file
(:mod:`pipeline.partner.reconcile`), never the delivery's answers alone.

Why not ``DeliverMessages`` for the credits: its ``BatchElements`` starts every bundle at one
element and doubles (12,000 rows go as requests of 1, 1, 2, 4, ..., 2048, 4096, 3808 rows), far
below the 2,500-row floor; here the file reader hands ``DeliverBatchFn`` lists of ``split_rows``
rows and the adaptive size cuts them into chunks.

Outputs: each run writes ``<output_dir>/runs/<run_id>/`` (``feedback/``, ``partner_receipts/``,
``feedback_receipts/``, ``partner_dead_letter/``), so runs never mix; the archive
(``<output_dir>/archive/``) and the store outlive runs.
"""
from __future__ import annotations

import argparse
import enum
import logging
import os
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.timestamp import Timestamp

from pipeline.delivery.deliver import DeliverBatchFn, DeliverMessages
from pipeline.delivery.records import DeliveryOutput
from pipeline.delivery.retries import RetryPolicy
from pipeline.delivery.targets import DeliveryTarget
from pipeline.io.sinks import WriteJsonLines
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT
from pipeline.partner.answer import AnswerFileFn, AnswerOutput, feedback_webhooks, row_deliveries
from pipeline.partner.feedback import partners_from
from pipeline.partner.reading import TARGET_ID, PartnerFileOutput, ReadPartnerFileFn
from pipeline.partner.store import StoreOutcomes

_LOGGER = logging.getLogger(__name__)


class PartnerOutput(str, enum.Enum):
    """Outputs of :class:`CreditPartnerFiles`."""

    RECEIPTS = "receipts"  # the points API's
    FEEDBACK_RECEIPTS = "feedback_receipts"  # answers sent to partners
    FILE_RECORDS = "file_records"
    ROW_RECORDS = "row_records"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


def new_run_id() -> str:
    """A run id that sorts by start time, to the millisecond: ``20261207T033000123Z-1a2b3c``."""
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:6]}"


def run_dir(output_dir: str, run_id: str) -> str:
    return FileSystems.join(output_dir, "runs", run_id)


class LogProgressFn(beam.DoFn):
    """Logs each credited chunk as its receipt comes (live on every runner, FnApiRunner included)."""

    def setup(self) -> None:
        self._rows = 0
        self._chunks = 0

    def process(self, receipt: dict[str, Any]) -> None:
        self._rows += len(receipt["delivered_ids"])
        self._chunks += 1
        _LOGGER.info(
            "chunk %d: %d rows, %d accepted, %d failed, %d attempt(s), %d ms; %d rows accepted by this worker so far",
            self._chunks, receipt["batch_size"], len(receipt["delivered_ids"]), len(receipt["failed_ids"]),
            receipt["attempts"], receipt["latency_ms"], self._rows)


class CreditPartnerFiles(beam.PTransform):
    """``FileMetadata`` of partner files -> the outputs of :class:`PartnerOutput`.

    Args:
        partner_keys: path of the partner key configuration (read on the workers).
        target: the points API, a batch-endpoint target (its batch bounds are the row bounds).
        feedback_dir: the run's folder for answers.
        archive_dir: where received files are archived and marked complete.
        run_id: this run's id.
        streaming: whether the pipeline runs in streaming.
        split_rows: rows per list handed to the delivery layer (chunks are cut from it).
        reconcile_seconds: the time the points API look-ups of one file may take.
        max_invalid_percent: refuse a file with more invalid rows than this; None never.
        seed: seeds the retry jitter (tests).
    """

    def __init__(self, partner_keys: str, target: DeliveryTarget, feedback_dir: str, archive_dir: str, run_id: str,
                 streaming: bool = False, split_rows: int = 50_000, reconcile_seconds: float = 300.0,
                 max_invalid_percent: Optional[float] = None, seed: Optional[int] = None) -> None:
        super().__init__()
        if not target.batch_endpoint:
            raise ValueError(f"target {target.target_id}: partner credits need batch_endpoint=True")
        self.partner_keys = partner_keys
        self.target = target
        self.feedback_dir = feedback_dir
        self.archive_dir = archive_dir
        self.run_id = run_id
        self.streaming = streaming
        self.split_rows = split_rows
        self.reconcile_seconds = reconcile_seconds
        self.max_invalid_percent = max_invalid_percent
        self.seed = seed
        self.feedback_webhooks = feedback_webhooks(partners_from(partner_keys))

    def expand(self, files: beam.PCollection) -> dict[str, beam.PCollection]:
        read = files | "ReadPartnerFiles" >> beam.ParDo(ReadPartnerFileFn(
            self.partner_keys, self.split_rows, self.archive_dir, self.max_invalid_percent)).with_outputs(
            *(part.value for part in PartnerFileOutput if part is not PartnerFileOutput.CREDITS),
            main=PartnerFileOutput.CREDITS.value)
        delivered = (
            read[PartnerFileOutput.CREDITS.value]
            | "SpreadCredits" >> beam.Reshuffle()
            | "CreditPoints" >> beam.ParDo(DeliverBatchFn({TARGET_ID: self.target}, uuid.uuid4().hex, self.seed)).with_outputs(
                DeliveryOutput.DEAD_LETTER.value, main=DeliveryOutput.RECEIPTS.value)
        )
        receipts = delivered[DeliveryOutput.RECEIPTS.value]
        failed = delivered[DeliveryOutput.DEAD_LETTER.value]
        _ = receipts | "LogProgress" >> beam.ParDo(LogProgressFn())
        deliveries = {
            "rows": read[PartnerFileOutput.VALID.value],
            "sent": receipts | "SentKeys" >> beam.FlatMap(_sent_keys),
            "failures": failed | "FailedKeys" >> beam.Map(lambda d: (d["event_id"], (d["error_kind"], d["message"]))),
        } | "JoinDeliveries" >> beam.CoGroupByKey() | "RowDeliveries" >> beam.FlatMap(row_deliveries)
        answered = {
            "file": read[PartnerFileOutput.FILES.value], "valid": deliveries, "rejected": read[PartnerFileOutput.REJECTED.value],
        } | "GroupByFile" >> beam.CoGroupByKey() | "AnswerFiles" >> beam.ParDo(AnswerFileFn(
            self.partner_keys, self.target, self.reconcile_seconds, self.feedback_dir, self.archive_dir, self.run_id,
            self.seed)).with_outputs(*(part.value for part in AnswerOutput if part is not AnswerOutput.RECEIPTS),
                                     main=AnswerOutput.RECEIPTS.value)
        feedback_receipts = [answered[AnswerOutput.RECEIPTS.value]]
        dead = [read[PartnerFileOutput.DEAD_LETTER.value], failed, answered[AnswerOutput.DEAD_LETTER.value]]
        if self.feedback_webhooks:
            sent = answered[AnswerOutput.WEBHOOK_ANSWERS.value] | "SendFeedback" >> DeliverMessages(
                self.feedback_webhooks, self.streaming, seed=self.seed)
            feedback_receipts.append(sent[DeliveryOutput.RECEIPTS.value])
            dead.append(sent[DeliveryOutput.DEAD_LETTER.value])
        return {
            PartnerOutput.RECEIPTS.value: receipts,
            PartnerOutput.FEEDBACK_RECEIPTS.value: feedback_receipts | "AllFeedbackReceipts" >> beam.Flatten(),
            PartnerOutput.FILE_RECORDS.value: answered[AnswerOutput.FILE_RECORDS.value],
            PartnerOutput.ROW_RECORDS.value: answered[AnswerOutput.ROW_RECORDS.value],
            PartnerOutput.DEAD_LETTER.value: dead | "AllDeadLetters" >> beam.Flatten(),
        }


def _sent_keys(receipt: dict[str, Any]) -> Iterator[tuple[str, tuple[bool, str]]]:
    """``(event_id, (delivered, batch_id))`` for every key a receipt names."""
    for event_id in receipt["delivered_ids"]:
        yield event_id, (True, receipt["batch_id"])
    for event_id in receipt["failed_ids"]:
        yield event_id, (False, receipt["batch_id"])


def points_target(options: argparse.Namespace) -> DeliveryTarget:
    """The points API as a batch-endpoint delivery target (its signing secret by reference; batch size and
    batches in flight adapt within the options' bounds)."""
    return DeliveryTarget(
        TARGET_ID, options.points_api, options.points_api_secret_ref, batch_endpoint=True,
        min_batch=options.min_batch, max_batch=options.max_batch, slow_latency_s=options.slow_seconds,
        min_concurrency=options.min_concurrency, max_concurrency=options.max_concurrency,
        read_timeout_s=max(30.0, 4 * options.slow_seconds),
        retry=RetryPolicy(max_attempts=options.max_attempts, max_total_s=options.retry_seconds),
    )


def inbox_pattern(inbox: str) -> str:
    """A folder means its ``*.wbpf`` files (upload as ``*.part``, then rename: a file half
    written would be refused as truncated); a file or a glob is taken as it is."""
    if inbox.endswith("/") or ("://" not in inbox and os.path.isdir(inbox)):
        return FileSystems.join(inbox.rstrip("/"), "*.wbpf")
    return inbox


def build(p: beam.Pipeline, options: argparse.Namespace, streaming: bool, run_id: str) -> dict[str, beam.PCollection]:
    """The job: match the inbox, credit, answer; the run's outputs under ``runs/<run_id>/``."""
    pattern = inbox_pattern(options.inbox)
    if streaming:
        files = p | "WatchInbox" >> fileio.MatchContinuously(
            pattern, interval=options.poll_seconds, start_timestamp=Timestamp.now(), apply_windowing=True)
    else:
        files = p | "MatchInbox" >> fileio.MatchFiles(pattern)
    here = run_dir(options.output_dir, run_id)
    out = files | "CreditPartnerFiles" >> CreditPartnerFiles(
        options.partner_keys, points_target(options), FileSystems.join(here, "feedback"),
        FileSystems.join(options.output_dir, "archive"), run_id, streaming, options.split_rows,
        options.reconcile_seconds, options.max_invalid_percent)
    for name, output, schema in (("partner_receipts", PartnerOutput.RECEIPTS, "DeliveryReceipt"),
                                 ("feedback_receipts", PartnerOutput.FEEDBACK_RECEIPTS, "DeliveryReceipt"),
                                 ("partner_dead_letter", PartnerOutput.DEAD_LETTER, "DeadLetter")):
        out[output.value] | f"Write_{name}" >> WriteJsonLines(FileSystems.join(here, name), schema, streaming)
    {"files": out[PartnerOutput.FILE_RECORDS.value], "rows": out[PartnerOutput.ROW_RECORDS.value]} | (
        "Store" >> StoreOutcomes(store_uri(options)))
    return out


def store_uri(options: argparse.Namespace) -> str:
    """``--store``, by default ``sqlite:<output_dir>/store.sqlite``."""
    return options.store or f"sqlite:{FileSystems.join(options.output_dir, 'store.sqlite')}"
