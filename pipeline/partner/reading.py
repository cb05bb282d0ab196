"""Receive, decrypt, check and store one partner file; hand its valid rows on to be credited.

:class:`ReadPartnerFileFn` takes a matched file and works in this order:

1. its SHA-256 (of the bytes as received);
2. ``verify_file``: decrypted and checked as a whole (header, trailer, count, checksum, and
   with ``max_invalid_percent`` the share of rows that break a rule); nothing is credited from a
   file that fails, and a file whose partner and file id were processed completely before
   (:mod:`pipeline.partner.archive`) is refused as ``already_processed``;
3. the original is archived unchanged (refused files too);
4. read again row by row: each valid row becomes a credit request, each rejected row gets its
   final outcome.

Any error while reading a file, expected or not, refuses that file alone (an exception file
says why); the other files of the run go on.
"""
from __future__ import annotations

import enum
import logging
from datetime import datetime, timezone
from typing import Any, Iterator, Optional, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record
from pipeline.partner import archive
from pipeline.partner import file_format as partner_format
from pipeline.partner.feedback import FileSummary, RowOutcome, Status, partners_from, row_line
from pipeline.partner.file_format import FileInfo, FileRejected, Row

_LOGGER = logging.getLogger(__name__)

TARGET_ID = "points"
ALREADY_PROCESSED = "already_processed"  # the problem code of a file id processed completely before
UNREADABLE = "unreadable"  # the problem code of a file that could not be read or archived


class PartnerFileOutput(str, enum.Enum):
    """Outputs of :class:`ReadPartnerFileFn`: lists of credit requests (main), each valid row
    ``(event_id, (path, row_no, txn_id, member_id, points))``, each rejected row ``(path,
    RowOutcome)``, each file's ``(path, FileSummary)``, and dead letters."""

    CREDITS = "credits"
    VALID = "valid"
    REJECTED = "rejected"
    FILES = "files"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


def count(name: str, value: int = 1) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"partner_{name}").inc(value)


def credit_payload(event_id: str, row: Row, file_id: str) -> dict[str, Any]:
    """What the points API gets for one row (one element of the POSTed JSON array)."""
    return {"idempotency_key": event_id, "partner_id": row.partner_id, "file_id": file_id, "member_id": row.member_id,
            "points": row.points, "txn_id": row.txn_id, "txn_time": row.txn_time}


class ReadPartnerFileFn(beam.DoFn):
    """A matched file -> lists of credit requests (main) and the tagged outputs of
    :class:`PartnerFileOutput`. Memory: one 64 KiB segment, the txn_ids of the file, and one
    list of ``split_rows`` requests.

    Args:
        partner_keys: path of the partner key configuration (read on the workers).
        split_rows: rows per list of credit requests.
        archive_dir: where received files are archived (:mod:`pipeline.partner.archive`).
        max_invalid_percent: refuse a file with more than this share of invalid rows; None never.
    """

    def __init__(self, partner_keys: str, split_rows: int, archive_dir: str, max_invalid_percent: Optional[float]) -> None:
        self.partner_keys = partner_keys
        self.split_rows = split_rows
        self.archive_dir = archive_dir
        self.max_invalid_percent = max_invalid_percent

    def setup(self) -> None:
        self._partners = partners_from(self.partner_keys)

    def _open(self, path: str) -> Any:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def process(self, metadata: FileMetadata) -> Iterator[Union[list[DeliveryRequest], beam.pvalue.TaggedOutput]]:
        path = metadata.path
        name = path.rstrip("/").rsplit("/", 1)[-1]
        count("files_read")
        received_at = datetime.fromtimestamp(metadata.last_updated_in_seconds or 0, timezone.utc).isoformat(timespec="seconds")
        summary = self._receive(path, name, received_at)
        yield beam.pvalue.TaggedOutput(PartnerFileOutput.FILES.value, (path, summary))
        if summary.problem is not None:
            _LOGGER.warning("partner file %s refused (%s): %s", name, summary.problem, summary.message)
            count("files_refused")
            yield beam.pvalue.TaggedOutput(PartnerFileOutput.DEAD_LETTER.value, dead_letter_record(
                b"", {"file": path, "reason": summary.problem}, f"partner_file:{name}", Stage.DECODE,
                ErrorKind.UNREADABLE_FILE, f"{summary.problem}: {summary.message}"))
            return
        _LOGGER.info("partner file %s (%s, file id %s) verified and archived: %d rows", name, summary.partner_id,
                     summary.file_id, summary.row_count)
        yield from self._rows(path, name, summary)

    def _receive(self, path: str, name: str, received_at: str) -> FileSummary:
        """Checks and archives the file; a refused file's summary names the problem."""
        sha256 = info = None
        try:
            sha256 = archive.file_sha256(path)
            with self._open(path) as stream:
                info = partner_format.verify_file(stream, self._partners, self.max_invalid_percent)
            problem = self._processed_before(info)
        except FileRejected as error:
            problem = (error.code.value, str(error), error.partner_id)
        except Exception as error:  # anything else about this file refuses it alone
            _LOGGER.exception("partner file %s could not be read", name)
            problem = (UNREADABLE, f"{type(error).__name__}: {error}", None)
        partner_id = info.partner_id if info else (problem[2] if problem else None)
        file_id = info.file_id if info else ""
        archived = ""
        if sha256 is not None:
            try:
                archived = archive.archive_file(path, self.archive_dir, sha256, partner_id, file_id or None)
            except Exception as error:
                problem = problem or (UNREADABLE, f"could not archive it: {type(error).__name__}: {error}", partner_id)
        if problem is not None:
            return FileSummary(name, partner_id, file_id, 0, problem[0], problem[1], sha256 or "", received_at, archived)
        assert info is not None
        return FileSummary(name, info.partner_id, info.file_id, info.row_count, None, "", sha256 or "", received_at, archived)

    def _processed_before(self, info: FileInfo) -> Optional[tuple[str, str, Optional[str]]]:
        done = archive.completed(self.archive_dir, info.partner_id, info.file_id)
        if done is None:
            return None
        return (ALREADY_PROCESSED, f"file id {info.file_id} of {info.partner_id} was processed completely at "
                f"{done.get('processed_at')} (answer {done.get('answer')}); nothing in it is credited again", info.partner_id)

    def _rows(self, path: str, name: str, summary: FileSummary) -> Iterator[Union[list[DeliveryRequest], beam.pvalue.TaggedOutput]]:
        batch: list[DeliveryRequest] = []
        with self._open(path) as stream:
            for item in partner_format.read_rows(stream, self._partners):
                count("rows_read")
                if isinstance(item, Row):
                    event_id = f"{item.partner_id}:{item.txn_id}"
                    batch.append(delivery_request(TARGET_ID, event_id, credit_payload(event_id, item, summary.file_id)))
                    yield beam.pvalue.TaggedOutput(PartnerFileOutput.VALID.value, (
                        event_id, (path, item.row_no, item.txn_id, item.member_id, str(item.points))))
                    if len(batch) >= self.split_rows:
                        yield batch
                        batch = []
                    continue
                outcome = RowOutcome(item.row_no, item.txn_id, item.member_id, item.points, Status.REJECTED, item.reason, item.message)
                yield beam.pvalue.TaggedOutput(PartnerFileOutput.REJECTED.value, (path, outcome))
                yield beam.pvalue.TaggedOutput(PartnerFileOutput.DEAD_LETTER.value, dead_letter_record(
                    row_line(outcome).encode("utf-8"), {"file": path, "row_no": str(item.row_no), "reason": item.reason},
                    f"partner_file:{name}", Stage.VALIDATE, ErrorKind.INVALID_VALUE, f"{item.reason}: {item.message}",
                    event_id=f"{summary.partner_id}:{item.txn_id}" if item.txn_id else None))
        if batch:
            yield batch
