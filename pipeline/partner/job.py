"""Partner files: decrypt, check, credit in adaptive batches, answer every file with feedback.

``python -m pipeline.partner --help`` runs it (:mod:`pipeline.local.partner_cli`). The stage,
:class:`CreditPartnerFiles`, takes the matched files (``fileio.MatchFiles`` in batch,
``fileio.MatchContinuously`` in streaming)::

    file ─► ReadPartnerFiles ─┬─ refused file ─────────────────────────────► exception file
      (verify: decrypt all,   ├─ rejected rows ──────────────────┐
       count, checksum; then  ├─ valid rows (event_id -> row) ───┤ JoinOutcomes   GroupByFile
       read rows + row rules) └─ lists of credit requests        │      │              │
                                 ─► SpreadCredits ─► CreditPoints (delivery layer's  ▼
                                    DeliverBatchFn: adaptive chunks, retries) ─► receipts/dead
                                    letters ─► per-row outcome ─► ... ─► BuildFeedback ─► WriteFeedback

Crediting: one request per valid row, ``event_id = "<partner_id>:<txn_id>"`` (also the
payload's ``idempotency_key``), sent to a batch-endpoint :class:`DeliveryTarget` (one POST per
chunk, a JSON array). The chunk size adapts between the target's ``min_batch`` and
``max_batch`` (AIMD, :mod:`pipeline.delivery.adaptive_batch`). A rerun of the same file, or of
a run stopped half-way, sends every valid row again under the same key: the points API
credits a key once, so nothing is credited twice and nothing is missed.

Why not ``DeliverMessages``: its ``BatchElements`` starts every bundle at one element and
doubles (12,000 rows go as requests of 1, 1, 2, 4, ..., 2048, 4096, 3808 rows), far below the
2,500-row floor; here the file reader hands ``DeliverBatchFn`` lists of ``split_rows`` rows
and the adaptive size cuts them into chunks.
"""
from __future__ import annotations

import argparse
import enum
import logging
import os
import uuid
from typing import Any, Iterable, Iterator, Optional, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.value_provider import StaticValueProvider
from apache_beam.utils.timestamp import Timestamp

from pipeline.delivery.deliver import DeliverBatchFn
from pipeline.delivery.records import DeliveryOutput, DeliveryRequest, delivery_request
from pipeline.delivery.retries import RetryPolicy
from pipeline.delivery.targets import DeliveryTarget
from pipeline.io.sinks import WriteJsonLines
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record
from pipeline.partner import file_format as partner_format
from pipeline.partner.feedback import (
    FeedbackDoc,
    FeedbackSink,
    FileSummary,
    feedback_doc,
    output_name,
    partners_from,
    row_line,
)
from pipeline.partner.file_format import FileRejected, Row

_LOGGER = logging.getLogger(__name__)

TARGET_ID = "points"


class PartnerFileOutput(str, enum.Enum):
    """Outputs of :class:`ReadPartnerFileFn`: lists of credit requests (main), each valid row, each
    rejected row, each file's summary, and dead letters."""

    CREDITS = "credits"
    VALID = "valid"
    REJECTED = "rejected"
    FILES = "files"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


class PartnerOutput(str, enum.Enum):
    """Outputs of :class:`CreditPartnerFiles`."""

    RECEIPTS = "receipts"
    FEEDBACK = "feedback"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


def _count(name: str, value: int = 1) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"partner_{name}").inc(value)


class ReadPartnerFileFn(beam.DoFn):
    """A matched file -> lists of credit requests (main), and tagged: ``valid`` (event_id, row
    reference), ``rejected`` (file, (row_no, R line)), ``files`` (file, FileSummary), ``dead_letter``.

    The file is read twice: first decrypted and checked as a whole (nothing is credited from a
    file that fails), then read row by row. Memory: one 64 KiB segment, the txn_ids of the file,
    and one list of ``split_rows`` requests.
    """

    def __init__(self, partner_keys: str, split_rows: int) -> None:
        self.partner_keys = partner_keys
        self.split_rows = split_rows

    def setup(self) -> None:
        self._partners = partners_from(self.partner_keys)

    def _open(self, path: str) -> Any:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def process(self, metadata: FileMetadata) -> Iterator[Union[list[DeliveryRequest], beam.pvalue.TaggedOutput]]:
        path = metadata.path
        name = path.rstrip("/").rsplit("/", 1)[-1]
        _count("files_read")
        try:
            with self._open(path) as stream:
                info = partner_format.verify_file(stream, self._partners)
        except (FileRejected, OSError) as error:
            code = error.code.value if isinstance(error, FileRejected) else "unreadable"
            partner_id = error.partner_id if isinstance(error, FileRejected) else None
            _LOGGER.warning("partner file %s refused (%s): %s", name, code, error)
            _count("files_refused")
            yield beam.pvalue.TaggedOutput(PartnerFileOutput.FILES.value, (path, FileSummary(name, partner_id, "", 0, code, str(error))))
            yield beam.pvalue.TaggedOutput(PartnerFileOutput.DEAD_LETTER.value, dead_letter_record(
                b"", {"file": path, "reason": code}, f"partner_file:{name}", Stage.DECODE, ErrorKind.UNREADABLE_FILE,
                f"{code}: {error}"))
            return
        _LOGGER.info("partner file %s (%s, file id %s) verified: %d rows", name, info.partner_id, info.file_id, info.row_count)
        yield beam.pvalue.TaggedOutput(PartnerFileOutput.FILES.value, (path, FileSummary(name, info.partner_id, info.file_id, info.row_count)))
        batch: list[DeliveryRequest] = []
        with self._open(path) as stream:
            for item in partner_format.read_rows(stream, self._partners):
                _count("rows_read")
                if isinstance(item, Row):
                    event_id = f"{item.partner_id}:{item.txn_id}"
                    batch.append(delivery_request(TARGET_ID, event_id, credit_payload(event_id, item)))
                    yield beam.pvalue.TaggedOutput(PartnerFileOutput.VALID.value, (event_id, (path, item.row_no, item.txn_id, item.member_id, str(item.points))))
                    if len(batch) >= self.split_rows:
                        yield batch
                        batch = []
                    continue
                _count("rows_rejected")
                line = row_line(item.row_no, item.txn_id, item.member_id, item.points, "rejected", item.reason, item.message)
                yield beam.pvalue.TaggedOutput(PartnerFileOutput.REJECTED.value, (path, (item.row_no, line)))
                yield beam.pvalue.TaggedOutput(PartnerFileOutput.DEAD_LETTER.value, dead_letter_record(
                    line.encode("utf-8"), {"file": path, "row_no": str(item.row_no), "reason": item.reason},
                    f"partner_file:{name}", Stage.VALIDATE, ErrorKind.INVALID_VALUE, f"{item.reason}: {item.message}",
                    event_id=f"{info.partner_id}:{item.txn_id}" if item.txn_id else None))
        if batch:
            yield batch


def credit_payload(event_id: str, row: Row) -> dict[str, Any]:
    """What the points API gets for one row (one element of the POSTed JSON array)."""
    return {"idempotency_key": event_id, "partner_id": row.partner_id, "member_id": row.member_id,
            "points": row.points, "txn_id": row.txn_id, "txn_time": row.txn_time}


def _row_outcomes(joined: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[str, tuple[int, str]]]:
    """A valid row and what delivery said about its key -> (file, (row_no, R line)).

    Credited when any request with the key was delivered (the same txn_id in two files of one
    run is credited once, and both rows say so); else failed with the delivery layer's reason.
    """
    _, grouped = joined
    outcomes = list(grouped["outcomes"])
    credited = any(status == "credited" for status, _, _ in outcomes)
    failure = next((o for o in outcomes if o[0] == "failed"), ("failed", "no_outcome", "no delivery outcome came back"))
    for path, row_no, txn_id, member_id, points in grouped["rows"]:
        if credited:
            _count("rows_credited")
            yield path, (row_no, row_line(row_no, txn_id, member_id, points, "credited"))
        else:
            _count("rows_failed")
            yield path, (row_no, row_line(row_no, txn_id, member_id, points, *failure))


def _feedback(joined: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[FeedbackDoc]:
    path, grouped = joined
    for summary in list(grouped["file"])[:1]:
        doc = feedback_doc(summary, grouped["lines"])
        _count("exception_files" if summary.problem else "feedback_files")
        _LOGGER.info("partner file %s: answer %s (%s)", summary.name, doc.name, doc.lines[-1].rsplit(",", 1)[0])
        yield doc


class LogProgressFn(beam.DoFn):
    """Logs each credited chunk as its receipt comes (live on every runner, FnApiRunner included)."""

    def setup(self) -> None:
        self._rows = 0
        self._chunks = 0

    def process(self, receipt: dict[str, Any]) -> None:
        self._rows += len(receipt["delivered_ids"])
        self._chunks += 1
        _LOGGER.info(
            "chunk %d: %d rows, %d credited, %d failed, %d attempt(s), %d ms; %d rows credited by this worker so far",
            self._chunks, receipt["batch_size"], len(receipt["delivered_ids"]), len(receipt["failed_ids"]),
            receipt["attempts"], receipt["latency_ms"], self._rows)


class CreditPartnerFiles(beam.PTransform):
    """``FileMetadata`` of partner files -> ``{'receipts', 'dead_letter', 'feedback'}``.

    Args:
        partner_keys: path of the partner key configuration (read on the workers).
        target: the points API, a batch-endpoint target (its batch bounds are the row bounds).
        outbox: the folder feedback and exception files are written to.
        split_rows: rows per list handed to the delivery layer (chunks are cut from it).
        seed: seeds the retry jitter (tests).
    """

    def __init__(self, partner_keys: str, target: DeliveryTarget, outbox: str, split_rows: int = 50_000,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        if not target.batch_endpoint:
            raise ValueError(f"target {target.target_id}: partner credits need batch_endpoint=True")
        self.partner_keys = partner_keys
        self.target = target
        self.split_rows = split_rows
        self.seed = seed
        self.run_token = uuid.uuid4().hex
        self.write: beam.PTransform = fileio.WriteToFiles(
            path=outbox, destination=lambda doc: output_name(doc, partners_from(partner_keys)),
            sink=lambda destination: FeedbackSink(partner_keys),
            file_naming=lambda window, pane, shard, shards, compression, destination: destination, shards=1,
            temp_directory=StaticValueProvider(str, outbox.rstrip("/") + "_tmp"),  # not inside the partners' outbox
        )

    def expand(self, files: beam.PCollection) -> dict[str, beam.PCollection]:
        read = files | "ReadPartnerFiles" >> beam.ParDo(ReadPartnerFileFn(self.partner_keys, self.split_rows)).with_outputs(
            *(part.value for part in PartnerFileOutput if part is not PartnerFileOutput.CREDITS),
            main=PartnerFileOutput.CREDITS.value)
        targets = {TARGET_ID: self.target}
        delivered = (
            read[PartnerFileOutput.CREDITS.value]
            | "SpreadCredits" >> beam.Reshuffle()
            | "CreditPoints" >> beam.ParDo(DeliverBatchFn(targets, self.run_token, self.seed)).with_outputs(
                DeliveryOutput.DEAD_LETTER.value, main=DeliveryOutput.RECEIPTS.value)
        )
        receipts = delivered[DeliveryOutput.RECEIPTS.value]
        failed = delivered[DeliveryOutput.DEAD_LETTER.value]
        _ = receipts | "LogProgress" >> beam.ParDo(LogProgressFn())
        outcomes = (
            receipts | "CreditedKeys" >> beam.FlatMap(lambda r: [(e, ("credited", "", "")) for e in r["delivered_ids"]]),
            failed | "FailedKeys" >> beam.Map(lambda d: (d["event_id"], ("failed", d["error_kind"], d["message"]))),
        ) | "Outcomes" >> beam.Flatten()
        row_lines = {"rows": read[PartnerFileOutput.VALID.value], "outcomes": outcomes} | "JoinOutcomes" >> beam.CoGroupByKey() | (
            "RowLines" >> beam.FlatMap(_row_outcomes))
        lines = (row_lines, read[PartnerFileOutput.REJECTED.value]) | "AllRowLines" >> beam.Flatten()
        docs = {"file": read[PartnerFileOutput.FILES.value], "lines": lines} | "GroupByFile" >> beam.CoGroupByKey() | (
            "BuildFeedback" >> beam.FlatMap(_feedback))
        dead = (read[PartnerFileOutput.DEAD_LETTER.value], failed) | "AllDeadLetters" >> beam.Flatten()
        return {
            PartnerOutput.RECEIPTS.value: receipts,
            PartnerOutput.DEAD_LETTER.value: dead,
            PartnerOutput.FEEDBACK.value: docs | "WriteFeedback" >> self.write,
        }


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


def build(p: beam.Pipeline, options: argparse.Namespace, streaming: bool) -> dict[str, beam.PCollection]:
    """The job: match the inbox, credit, answer; receipts and dead letters as JSON Lines."""
    pattern = inbox_pattern(options.inbox)
    if streaming:
        files = p | "WatchInbox" >> fileio.MatchContinuously(
            pattern, interval=options.poll_seconds, start_timestamp=Timestamp.now(), apply_windowing=True)
    else:
        files = p | "MatchInbox" >> fileio.MatchFiles(pattern)
    out = files | "CreditPartnerFiles" >> CreditPartnerFiles(
        options.partner_keys, points_target(options), FileSystems.join(options.output_dir, "feedback"), options.split_rows)
    out[PartnerOutput.RECEIPTS.value] | "WriteReceipts" >> WriteJsonLines(
        FileSystems.join(options.output_dir, "partner_receipts"), "DeliveryReceipt", streaming)
    out[PartnerOutput.DEAD_LETTER.value] | "WriteDeadLetters" >> WriteJsonLines(
        FileSystems.join(options.output_dir, "partner_dead_letter"), "DeadLetter", streaming)
    return out
