"""Feedback and exception files for partners: their text, and writing them.

Every input file gets one answer, named after it:

* ``<name>.feedback.wbpf`` (``<name>.wbpf`` answered): the file was read; one R line per row,
  in file order, then totals::

      H,1,ACME-BANK,FEEDBACK,ACME-20261121-001.wbpf,ACME-20261121-001,2026-11-21T09:00:00Z
      R,1,TX-000001,M000001,150,credited,,
      R,2,TX-000002,M999999,20,rejected,unknown_member,member 'M999999' is not a known member of ACME-BANK
      R,3,TX-000003,M000003,75,already_credited,credited_from_file,ACME-20261120-004
      R,4,TX-000004,M000004,60,not_credited,delivery_failed,gave up on http://... after 6 attempt(s) ...
      T,4,1,1,1,1,<sha256 hex of the R lines, each with its \\n>

  (``T,<rows>,<credited>,<rejected>,<already_credited>,<not_credited>,<checksum>``. Each status
  is what the points API holds, asked after crediting (:mod:`pipeline.partner.reconcile`): a
  ``credited`` row was credited from this file, an ``already_credited`` one from the file named,
  a ``not_credited`` one not at all, and may be sent again in a new file: its txn_id keeps it
  from being credited twice.)
* ``<name>.exception.wbpf``: the file was refused as a whole; nothing in it was credited::

      H,1,ACME-BANK,EXCEPTION,ACME-20261121-001.wbpf,,2026-11-21T09:00:00Z
      E,undecryptable,segment 0 does not decrypt with key 'k2026' of 'ACME-BANK': wrong key ...
      T,0,0,0,0,0,<sha256 hex of the E line with its \\n>

Both are encrypted like input files, with the partner's ``feedback_key``. A file whose partner is
not configured (or that is no partner file at all) cannot be encrypted for anyone: its exception
is written in clear as ``<name>.exception.txt`` (the reason only, never row data) for the operator.
Messages have their commas replaced by ``;`` so that every line splits on commas.
"""
from __future__ import annotations

import enum
import functools
import hashlib
from datetime import datetime, timezone
from typing import BinaryIO, Iterable, Mapping, NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.partner import file_format as partner_format
from pipeline.partner import keys as partner_keys
from pipeline.partner.archive import write_whole
from pipeline.partner.keys import Partner


class Status(str, enum.Enum):
    """A row's outcome, in the order of the T line's totals."""

    CREDITED = "credited"
    REJECTED = "rejected"
    ALREADY_CREDITED = "already_credited"
    NOT_CREDITED = "not_credited"


CREDITED_FROM_FILE = "credited_from_file"  # the reason of an already_credited row; the message is the file id


class FileSummary(NamedTuple):
    """What reading one input file gave: its facts, or why it was refused (``problem``)."""

    name: str  # the input file's base name
    partner_id: Optional[str]
    file_id: str
    row_count: int
    problem: Optional[str] = None  # a FileProblem value, or another stable code
    message: str = ""
    sha256: str = ""  # of the file's bytes as received
    received_at: str = ""  # ISO 8601 UTC: when the file was last written
    archived_as: str = ""


class RowOutcome(NamedTuple):
    """The final outcome of one row (one R line and one row of the store)."""

    row_no: int
    txn_id: str
    member_id: str
    points: str
    status: Status
    reason: str = ""
    message: str = ""
    credited_from: str = ""  # the file id the points API credited the txn from
    batch_id: str = ""  # the delivery batch the row went in


class FeedbackDoc(NamedTuple):
    """One answer: its name without extension, the partner to encrypt for, its text lines, and
    its totals by status (``{}`` for an exception)."""

    name: str
    partner_id: Optional[str]
    lines: list[str]
    totals: Mapping[Status, int]

    @property
    def complete(self) -> bool:
        """A feedback whose every row has its final outcome (none ``not_credited``)."""
        return bool(self.totals) and not self.totals.get(Status.NOT_CREDITED)


def clean(text: str) -> str:
    """A field value that cannot break a line apart."""
    return text.replace(",", ";").replace("\n", " ").replace("\r", " ")


def row_line(row: RowOutcome) -> str:
    """One R line.

    >>> row_line(RowOutcome(2, "TX-2", "M9", "20", Status.REJECTED, "unknown_member", "member 'M9', unknown"))
    "R,2,TX-2,M9,20,rejected,unknown_member,member 'M9'; unknown"
    """
    return ",".join(["R", str(row.row_no), clean(row.txn_id), clean(row.member_id), clean(row.points),
                     row.status.value, row.reason, clean(row.message)])


def utc_now() -> str:
    """Now, as ISO 8601 UTC to the second: ``2026-11-21T09:00:00Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _closed(head: str, body: list[str], totals: list[int]) -> list[str]:
    digest = hashlib.sha256()
    for line in body:
        digest.update(line.encode("utf-8") + b"\n")
    return [head, *body, ",".join(["T", *map(str, totals), digest.hexdigest()])]


def feedback_doc(summary: FileSummary, rows: Iterable[RowOutcome]) -> FeedbackDoc:
    """The answer to one input file: a feedback of ``rows`` or, for a refused file, an exception."""
    partner = summary.partner_id or ""
    stem = summary.name.removesuffix(".wbpf")
    if summary.problem is not None:
        head = f"H,{partner_format.VERSION},{clean(partner)},EXCEPTION,{clean(summary.name)},{clean(summary.file_id)},{utc_now()}"
        lines = _closed(head, [f"E,{summary.problem},{clean(summary.message)}"], [0] * (1 + len(Status)))
        return FeedbackDoc(f"{stem}.exception", summary.partner_id, lines, {})
    ordered = sorted(rows)
    totals = {status: 0 for status in Status}
    for row in ordered:
        totals[row.status] += 1
    head = f"H,{partner_format.VERSION},{clean(partner)},FEEDBACK,{clean(summary.name)},{clean(summary.file_id)},{utc_now()}"
    lines = _closed(head, [row_line(row) for row in ordered], [len(ordered), *totals.values()])
    return FeedbackDoc(f"{stem}.feedback", summary.partner_id, lines, totals)


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


def answer_name(doc: FeedbackDoc, partners: Mapping[str, Partner]) -> str:
    """``.wbpf`` when the doc can be encrypted for its partner, ``.txt`` (exceptions only) when not."""
    return f"{doc.name}.wbpf" if doc.partner_id in partners else f"{doc.name}.txt"


def write_answer(doc: FeedbackDoc, folder: str, partners: Mapping[str, Partner]) -> str:
    """Writes ``doc`` into ``folder`` (encrypted for its partner, or in clear for no partner) as a
    whole file; returns its path."""
    path = FileSystems.join(folder, answer_name(doc, partners))
    partner = partners.get(doc.partner_id or "")

    def write(out: BinaryIO) -> None:
        if partner is not None:
            partner_format.encrypt_text(doc.lines, out, partner)
        else:
            out.write("".join(line + "\n" for line in doc.lines).encode("utf-8"))

    write_whole(path, write)
    return path


def read_feedback(stream: BinaryIO, partners: Mapping[str, Partner]) -> list[str]:
    """The text lines of a feedback or exception file (encrypted or clear), as a partner reads them."""
    start = stream.read(len(partner_format.MAGIC))
    stream.seek(0)
    if start != partner_format.MAGIC:
        return stream.read().decode("utf-8").splitlines()
    _, _, segments = partner_format.decrypt(stream, partner_format.key_lookup(partners))
    return [line.decode("utf-8") for line in partner_format.lines_of(segments)]
