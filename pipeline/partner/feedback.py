"""Feedback and exception files for partners: their text, and the encrypting file sink.

Every input file gets one answer in the outbox, named after it:

* ``<name>.feedback.wbpf`` (``<name>.wbpf`` answered): the file was read; one R line per row,
  in file order, then totals::

      H,1,ACME-BANK,FEEDBACK,ACME-20261121-001.wbpf,ACME-20261121-001,2026-11-21T09:00:00Z
      R,1,TX-000001,M000001,150,credited,,
      R,2,TX-000002,M999999,20,rejected,unknown_member,member 'M999999' is not a known member of ACME-BANK
      R,3,TX-000003,M000003,75,failed,delivery_failed,gave up on http://... after 6 attempt(s) ...
      T,3,1,1,1,<sha256 hex of the R lines, each with its \\n>

  (``T,<rows>,<credited>,<rejected>,<failed>,<checksum>``; a ``failed`` row was not credited
  and may be sent again in a new file: its txn_id keeps it from being credited twice.)
* ``<name>.exception.wbpf``: the file was refused as a whole; nothing in it was credited::

      H,1,ACME-BANK,EXCEPTION,ACME-20261121-001.wbpf,,2026-11-21T09:00:00Z
      E,undecryptable,segment 0 does not decrypt with key 'k2026' of 'ACME-BANK': wrong key ...
      T,0,0,0,0,<sha256 hex of the E line with its \\n>

Both are encrypted like input files, with the partner's ``feedback_key``. A file whose partner is
not configured (or that is no partner file at all) cannot be encrypted for anyone: its exception
is written in clear as ``<name>.exception.txt`` (the reason only, never row data) for the operator.
Messages have their commas replaced by ``;`` so that every line splits on commas.
"""
from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterable, Mapping, NamedTuple, Optional

from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from pipeline.partner import file_format as partner_format
from pipeline.partner import keys as partner_keys
from pipeline.partner.keys import Partner

STATUSES = ("credited", "rejected", "failed")


class FileSummary(NamedTuple):
    """What reading one input file gave: its facts, or why it was refused (``problem``)."""

    name: str  # the input file's base name
    partner_id: Optional[str]
    file_id: str
    row_count: int
    problem: Optional[str] = None  # a FileProblem value
    message: str = ""


class FeedbackDoc(NamedTuple):
    """One output file: its name in the outbox, the partner to encrypt for, its text lines."""

    name: str
    partner_id: Optional[str]
    lines: list[str]


def clean(text: str) -> str:
    """A field value that cannot break a line apart."""
    return text.replace(",", ";").replace("\n", " ").replace("\r", " ")


def row_line(row_no: int, txn_id: str, member_id: str, points: str, status: str, reason: str = "", message: str = "") -> str:
    """One R line.

    >>> row_line(2, "TX-2", "M9", "20", "rejected", "unknown_member", "member 'M9', unknown")
    "R,2,TX-2,M9,20,rejected,unknown_member,member 'M9'; unknown"
    """
    return ",".join(["R", str(row_no), clean(txn_id), clean(member_id), clean(points), status, reason, clean(message)])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _closed(head: str, body: list[str], totals: list[int]) -> list[str]:
    digest = hashlib.sha256()
    for line in body:
        digest.update(line.encode("utf-8") + b"\n")
    return [head, *body, ",".join(["T", *map(str, totals), digest.hexdigest()])]


def feedback_doc(summary: FileSummary, rows: Iterable[tuple[int, str]]) -> FeedbackDoc:
    """The answer to one input file: a feedback (``rows`` are ``(row_no, R line)``) or an exception."""
    partner = summary.partner_id or ""
    stem = summary.name.removesuffix(".wbpf")
    if summary.problem is not None:
        head = f"H,{partner_format.VERSION},{clean(partner)},EXCEPTION,{clean(summary.name)},{clean(summary.file_id)},{_now()}"
        lines = _closed(head, [f"E,{summary.problem},{clean(summary.message)}"], [0, 0, 0, 0])
        return FeedbackDoc(f"{stem}.exception", summary.partner_id, lines)
    body = [line for _, line in sorted(rows)]
    counts = {status: 0 for status in STATUSES}
    for line in body:
        counts[line.split(",", 6)[5]] += 1
    head = f"H,{partner_format.VERSION},{clean(partner)},FEEDBACK,{clean(summary.name)},{clean(summary.file_id)},{_now()}"
    return FeedbackDoc(f"{stem}.feedback", summary.partner_id, _closed(head, body, [len(body), *counts.values()]))


@functools.lru_cache(maxsize=8)
def partners_from(path: str) -> Mapping[str, Partner]:
    """The partner configuration at ``path`` (local or ``gs://``), read once per process.

    A ``members_file`` is read relative to the configuration's folder unless it is absolute.
    """

    def read_text(name: str) -> str:
        with FileSystems.open(name) as stream:
            return stream.read().decode("utf-8")

    def read_members_file(name: str) -> str:
        if "://" not in name and not name.startswith("/") and "/" in path:
            name = FileSystems.join(path.rsplit("/", 1)[0], name)
        return read_text(name)

    return partner_keys.load_partners(read_text(path), read_members_file)


def output_name(doc: FeedbackDoc, partners: Mapping[str, Partner]) -> str:
    """``.wbpf`` when the doc can be encrypted for its partner, ``.txt`` (exceptions only) when not."""
    return f"{doc.name}.wbpf" if doc.partner_id in partners else f"{doc.name}.txt"


class FeedbackSink(fileio.FileSink):
    """Writes :class:`FeedbackDoc` records, encrypted for their partner (``fileio.WriteToFiles``).

    Args:
        partner_keys: the path of the partner key configuration (read on the worker, so that
            no key is ever part of the pipeline graph).
    """

    def __init__(self, partner_keys: str) -> None:
        self.partner_keys = partner_keys
        self._out: Optional[BinaryIO] = None

    def open(self, fh: BinaryIO) -> None:
        self._out = fh

    def write(self, record: Any) -> None:
        if self._out is None:
            raise RuntimeError("FeedbackSink.write() called before open()")
        doc: FeedbackDoc = record
        partner = partners_from(self.partner_keys).get(doc.partner_id or "")
        if partner is not None:
            partner_format.encrypt_text(doc.lines, self._out, partner)
        else:
            self._out.write("".join(line + "\n" for line in doc.lines).encode("utf-8"))

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()


def read_feedback(stream: BinaryIO, partners: Mapping[str, Partner]) -> list[str]:
    """The text lines of a feedback or exception file (encrypted or clear), as a partner reads them."""
    start = stream.read(len(partner_format.MAGIC))
    stream.seek(0)
    if start != partner_format.MAGIC:
        return stream.read().decode("utf-8").splitlines()
    _, _, segments = partner_format.decrypt(stream, partner_format.key_lookup(partners))
    return [line.decode("utf-8") for line in partner_format.lines_of(segments)]
