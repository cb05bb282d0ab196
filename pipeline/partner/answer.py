"""Answer one partner file: settle each row's outcome with the points API, write the answer,
send it, mark the file complete, and record everything in the store.

:class:`AnswerFileFn` gets a file's summary, its rejected rows and how the delivery went for
each valid row. In order:

1. the points API is asked which of the file's keys it holds (:mod:`pipeline.partner.reconcile`):
   each valid row becomes ``credited``, ``already_credited`` or ``not_credited``;
2. the answer (feedback, or exception for a refused file) is written whole into the run's
   ``feedback/`` folder;
3. a feedback with no ``not_credited`` row marks the file complete in the archive (a later
   file with the same id is refused);
4. the answer is sent to the partner's ``feedback_target``: copied into a folder (with a
   receipt) or handed to the delivery layer for a signed webhook;
5. the file and each row go to the store.
"""
from __future__ import annotations

import base64
import enum
import hashlib
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.delivery.records import delivery_request
from pipeline.delivery.targets import DeliveryTarget
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, ErrorKind, Stage, dead_letter_record
from pipeline.partner import archive
from pipeline.partner.feedback import (
    CREDITED_FROM_FILE,
    FeedbackDoc,
    FileSummary,
    RowOutcome,
    Status,
    feedback_doc,
    partners_from,
    utc_now,
    write_answer,
)
from pipeline.partner.keys import Partner
from pipeline.partner.reading import count
from pipeline.partner.reconcile import CreditLookup, LookupFailed

UNCONFIRMED = "unconfirmed"  # the reason of a row the points API could not be asked about


class RowDelivery(NamedTuple):
    """A valid row and what the delivery layer said about its key."""

    row_no: int
    txn_id: str
    member_id: str
    points: str
    event_id: str
    delivered: bool
    batch_id: str
    failure_kind: str
    failure_message: str


class AnswerOutput(str, enum.Enum):
    """Outputs of :class:`AnswerFileFn`: receipts of answers copied to a partner's folder (main),
    store records, answers for a feedback webhook, dead letters."""

    RECEIPTS = "receipts"
    FILE_RECORDS = "file_records"
    ROW_RECORDS = "row_records"
    WEBHOOK_ANSWERS = "webhook_answers"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


def settle(row: RowDelivery, held: Mapping[str, str], file_id: str, unconfirmed: Optional[str]) -> RowOutcome:
    """A valid row's final outcome from what the points API holds (see :mod:`pipeline.partner.reconcile`).

    >>> row = RowDelivery(7, "TX-7", "M1", "50", "P:TX-7", False, "batch_1", "delivery_failed", "gave up")
    >>> settle(row, {"P:TX-7": "F-1"}, "F-1", None).status.value     # applied, its answer lost
    'credited'
    >>> settle(row, {"P:TX-7": "F-0"}, "F-1", None)[5:8]
    ('credited_from_file', 'F-0', 'F-0')
    >>> settle(row, {}, "F-1", None)[4:7]
    (<Status.NOT_CREDITED: 'not_credited'>, 'delivery_failed', 'gave up')
    """
    base = (row.row_no, row.txn_id, row.member_id, row.points)
    if unconfirmed is not None:
        said = "delivered" if row.delivered else f"not delivered ({row.failure_kind})"
        return RowOutcome(*base, Status.NOT_CREDITED, UNCONFIRMED, f"{unconfirmed}; the delivery said {said}; sending "
                          "it again in a new file is safe (same txn_id)", batch_id=row.batch_id)
    source = held.get(row.event_id)
    if source == file_id:
        return RowOutcome(*base, Status.CREDITED, credited_from=file_id, batch_id=row.batch_id)
    if source is not None:
        return RowOutcome(*base, Status.ALREADY_CREDITED, CREDITED_FROM_FILE, source, source, row.batch_id)
    if row.delivered:
        return RowOutcome(*base, Status.NOT_CREDITED, "not_held", "the points API accepted it but holds no credit for it",
                          batch_id=row.batch_id)
    return RowOutcome(*base, Status.NOT_CREDITED, row.failure_kind or "no_outcome",
                      row.failure_message or "no delivery outcome came back", batch_id=row.batch_id)


class AnswerFileFn(beam.DoFn):
    """``(path, {"file": [FileSummary], "valid": [RowDelivery], "rejected": [RowOutcome]})`` ->
    the outputs of :class:`AnswerOutput`.

    Args:
        partner_keys: path of the partner key configuration (read on the workers).
        points_api: the points API target (for the look-up).
        reconcile_seconds: the time the look-ups of one file may take.
        feedback_dir: the run's ``feedback/`` folder.
        archive_dir: the archive (for the ``COMPLETE`` mark).
        run_id: this run's id (in the store).
        seed: seeds the look-up's retry jitter (tests).
    """

    def __init__(self, partner_keys: str, points_api: DeliveryTarget, reconcile_seconds: float, feedback_dir: str,
                 archive_dir: str, run_id: str, seed: Optional[int] = None) -> None:
        self.partner_keys = partner_keys
        self.lookup = CreditLookup(points_api, reconcile_seconds, seed)
        self.feedback_dir = feedback_dir
        self.archive_dir = archive_dir
        self.run_id = run_id

    def setup(self) -> None:
        self._partners = partners_from(self.partner_keys)
        self.lookup.open()

    def teardown(self) -> None:
        self.lookup.close()

    def process(self, joined: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Union[dict[str, Any], beam.pvalue.TaggedOutput]]:
        path, grouped = joined
        for summary in list(grouped["file"])[:1]:
            rows = self._outcomes(summary, list(grouped["valid"]), list(grouped["rejected"]))
            doc = feedback_doc(summary, rows)
            written = write_answer(doc, self.feedback_dir, self._partners)
            answer = written.rsplit("/", 1)[-1]
            processed_at = utc_now()
            if summary.partner_id and doc.complete:
                archive.mark_complete(self.archive_dir, summary.partner_id, summary.file_id, {
                    "sha256": summary.sha256, "answer": answer, "processed_at": processed_at, "run_id": self.run_id})
            self._count(doc)
            yield from self._send(summary, written, answer)
            yield beam.pvalue.TaggedOutput(AnswerOutput.FILE_RECORDS.value, {
                "sha256": summary.sha256 or f"unread:{summary.name}", "file_name": summary.name,
                "partner_id": summary.partner_id, "file_id": summary.file_id or None, "row_count": summary.row_count,
                "received_at": summary.received_at, "processed_at": processed_at, "run_id": self.run_id, "answer": answer,
                "problem": summary.problem, "archived_as": summary.archived_as,
                **{status.value: doc.totals.get(status, 0) for status in Status}})
            for row in rows:
                yield beam.pvalue.TaggedOutput(AnswerOutput.ROW_RECORDS.value, {
                    "partner_id": summary.partner_id, "file_id": summary.file_id, "row_no": row.row_no,
                    "file_name": summary.name, "sha256": summary.sha256, "txn_id": row.txn_id, "member_id": row.member_id,
                    "points": row.points, "outcome": row.status.value, "reason": row.reason, "message": row.message,
                    "credited_from_file": row.credited_from or None, "batch_id": row.batch_id or None,
                    "run_id": self.run_id, "processed_at": processed_at})

    def _outcomes(self, summary: FileSummary, valid: list[RowDelivery], rejected: list[RowOutcome]) -> list[RowOutcome]:
        if summary.problem is not None or not valid:
            return rejected
        unconfirmed = None
        held: Mapping[str, str] = {}
        try:
            held = self.lookup.held(row.event_id for row in valid)
        except LookupFailed as error:
            unconfirmed = str(error)
        return rejected + [settle(row, held, summary.file_id, unconfirmed) for row in valid]

    @staticmethod
    def _count(doc: FeedbackDoc) -> None:
        count("feedback_files" if doc.totals else "exception_files")
        for status, rows in doc.totals.items():
            count(f"rows_{status.value}", rows)

    def _send(self, summary: FileSummary, written: str, answer: str) -> Iterator[Union[dict[str, Any], beam.pvalue.TaggedOutput]]:
        """The answer to the partner's feedback target, if one is configured."""
        partner: Optional[Partner] = self._partners.get(summary.partner_id or "")
        if partner is None or not partner.feedback_target:
            return
        with FileSystems.open(written, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            content = stream.read()
        event_id = f"{partner.partner_id}:{answer}:{hashlib.sha256(content).hexdigest()[:16]}"
        target_id = partner.feedback_target_id
        if partner.feedback_folder is None:
            yield beam.pvalue.TaggedOutput(AnswerOutput.WEBHOOK_ANSWERS.value, delivery_request(target_id, event_id, {
                "partner_id": partner.partner_id, "file_name": summary.name, "answer": answer,
                "sha256": hashlib.sha256(content).hexdigest(), "content_base64": base64.b64encode(content).decode()}))
            return
        started, when = time.monotonic(), datetime.now(timezone.utc)
        error = None
        try:
            archive.write_whole(FileSystems.join(partner.feedback_folder, answer), lambda out: out.write(content))
        except Exception as failure:  # the partner's folder is out of reach: a dead letter, the run goes on
            error = f"could not copy {answer} into {partner.feedback_folder}: {type(failure).__name__}: {failure}"
            yield beam.pvalue.TaggedOutput(AnswerOutput.DEAD_LETTER.value, dead_letter_record(
                b"", {"target_id": target_id, "folder": partner.feedback_folder, "answer": written},
                f"delivery:{target_id}", Stage.DELIVER, ErrorKind.DELIVERY_FAILED, error, event_id=event_id))
        count("answers_not_sent" if error else "answers_sent")
        yield {"target_id": target_id, "batch_id": event_id, "delivered_ids": [] if error else [event_id],
               "failed_ids": [event_id] if error else [], "attempts": 1, "latency_ms": round((time.monotonic() - started) * 1000),
               "batch_size": 1, "started_at": when, "last_error": error}


def feedback_webhooks(partners: Mapping[str, Partner]) -> dict[str, DeliveryTarget]:
    """The partners' feedback webhooks as delivery targets, by target id."""
    hooks = (partner.feedback_webhook() for partner in partners.values())
    return {hook.target_id: hook for hook in hooks if hook is not None}


def row_deliveries(joined: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[str, RowDelivery]]:
    """A key's rows and what the delivery said about it -> ``(path, RowDelivery)`` per row.

    The same txn_id in two files of one run is one key: both rows get its delivery outcome
    (the look-up then tells which file it was credited from).
    """
    event_id, grouped = joined
    sent = list(grouped["sent"])
    delivered = any(ok for ok, _ in sent)
    batch = next((b for ok, b in sent if ok), sent[0][1] if sent else "")
    kind, message = next(iter(grouped["failures"]), ("", ""))
    for path, row_no, txn_id, member_id, points in grouped["rows"]:
        yield path, RowDelivery(row_no, txn_id, member_id, points, event_id, delivered, batch, kind, message)
