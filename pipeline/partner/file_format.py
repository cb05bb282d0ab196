"""Partner files: the encrypted envelope, the text inside it and the row rules. Pure Python
(``cryptography``), no Beam. The partner configuration is :mod:`pipeline.partner.keys`.

Envelope (binary; integers big-endian), the same for input, feedback and exception files::

    b"WBPF" | version 1 (1 byte) | len + partner_id (UTF-8) | len + key_id (UTF-8) | 7-byte nonce prefix
    then segments: 4-byte length + AES-256-GCM ciphertext (16-byte tag included), repeated

Plain text is cut into 64 KiB segments, each encrypted under the partner's key ``key_id`` with
nonce = prefix + segment number (4 bytes) + last flag (1 byte, 1 on the final segment) and the
header bytes as associated data (the STREAM construction, as in Tink's streaming AEAD). So a
wrong key, a flipped bit, a swapped partner id or segment fails to decrypt, and a file cut off
anywhere (even at a segment boundary) is reported truncated. Memory stays one segment.

The text inside (UTF-8, ``\\n`` line ends, comma-separated, no quoting: fields hold no commas)::

    H,1,ACME-BANK,ACME-20261121-001,2026-11-21T08:00:00Z          header: version, partner, file id, created
    D,ACME-BANK,M000001,150,TX-000001,2026-11-21T07:59:00+08:00   a row: partner, member, points, txn id, txn time
    T,1,<sha256 hex of the D lines, each with its \\n>             trailer: row count, checksum

Numbers are ASCII digits only (at most 18, no sign, no spaces inside); txn_time is RFC 3339
(``YYYY-MM-DDThh:mm:ss[.fraction]`` then ``Z`` or ``+hh:mm``/``-hh:mm``); no field holds bytes that
are not UTF-8, a control or invisible format character, or a line separator.
"""
from __future__ import annotations

import enum
import hashlib
import os
import re
import struct
import unicodedata
from datetime import datetime, timezone
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.partner.keys import Partner

MAGIC = b"WBPF"
VERSION = 1
SEGMENT_BYTES = 64 * 1024
_TAG = 16
_PREFIX = 7
_LENGTH = struct.Struct(">I")
MAX_DIGITS = 18  # of a row's points and the trailer's count: longer is a rejection, never a giant int
_WHOLE_NUMBER = re.compile(f"[0-9]{{1,{MAX_DIGITS}}}")
# Unicode categories no field may hold, and what the rejection calls them.
_UNSEEN = {"Cc": "control character", "Cf": "invisible format character", "Cs": "lone surrogate",
           "Zl": "line separator", "Zp": "paragraph separator"}
_ROW_FIELDS = ("partner", "member_id", "points", "txn_id", "txn_time")  # a D line's fields after the D
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                      r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")


class FileProblem(str, enum.Enum):
    """Stable reason codes of a rejected file (the reason of an exception file)."""

    NOT_A_PARTNER_FILE = "not_a_partner_file"
    UNKNOWN_PARTNER = "unknown_partner"
    UNKNOWN_KEY = "unknown_key"
    UNDECRYPTABLE = "undecryptable"
    TRUNCATED = "truncated"
    BAD_HEADER = "bad_header"
    BAD_TRAILER = "bad_trailer"
    ROW_COUNT_MISMATCH = "row_count_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    TOO_MANY_INVALID = "too_many_invalid"


class FileRejected(Exception):
    """The whole file is refused; ``code`` is a :class:`FileProblem` value, ``str(e)`` says why."""

    def __init__(self, code: FileProblem, message: str, partner_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.partner_id = partner_id


# ---------------------------------------------------------------- envelope


def _header(partner_id: str, key_id: str, prefix: bytes) -> bytes:
    parts = [MAGIC, bytes([VERSION])]
    for text in (partner_id, key_id):
        raw = text.encode("utf-8")
        parts += [bytes([len(raw)]), raw]
    return b"".join(parts + [prefix])


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class EnvelopeWriter:
    """Encrypts what is written to it into ``out``, one segment at a time; call :meth:`close`.

    >>> import io
    >>> out = io.BytesIO(); key = bytes(32)
    >>> with EnvelopeWriter(out, "ACME", "k1", key) as w: _ = w.write(b"hello")
    >>> b"".join(decrypt(io.BytesIO(out.getvalue()), lambda p, k: key)[2])
    b'hello'
    """

    def __init__(self, out: BinaryIO, partner_id: str, key_id: str, key: bytes) -> None:
        self._out = out
        self._prefix = os.urandom(_PREFIX)
        self._header = _header(partner_id, key_id, self._prefix)
        self._aead = AESGCM(key)
        self._buffer = bytearray()
        self._index = 0
        out.write(self._header)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > SEGMENT_BYTES:  # more follows: not the last segment
            self._seal(bytes(self._buffer[:SEGMENT_BYTES]), last=False)
            del self._buffer[:SEGMENT_BYTES]
        return len(data)

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()

    def __enter__(self) -> EnvelopeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seal(self, plain: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), plain, self._header)
        self._out.write(_LENGTH.pack(len(sealed)) + sealed)
        self._index += 1


def _read_exactly(stream: BinaryIO, size: int, what: str, partner_id: Optional[str] = None) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise FileRejected(FileProblem.TRUNCATED, f"file ends inside {what} ({len(data)} of {size} bytes)", partner_id)
    return data


def read_envelope_header(stream: BinaryIO) -> tuple[str, str, bytes]:
    """``(partner_id, key_id, header bytes)``; the stream is left at the first segment."""
    magic = stream.read(len(MAGIC) + 1)
    if magic[: len(MAGIC)] != MAGIC or len(magic) < len(MAGIC) + 1 or magic[-1] != VERSION:
        raise FileRejected(FileProblem.NOT_A_PARTNER_FILE, f"does not start with {MAGIC!r} version {VERSION}: {magic!r}")
    texts = []
    raw_parts = [magic]
    for what in ("partner id", "key id"):
        size = _read_exactly(stream, 1, what)
        raw = _read_exactly(stream, size[0], what)
        raw_parts += [size, raw]
        texts.append(raw.decode("utf-8", errors="replace"))
    prefix = _read_exactly(stream, _PREFIX, "the nonce prefix")
    return texts[0], texts[1], b"".join(raw_parts + [prefix])


def decrypt(stream: BinaryIO, key_for: Callable[[str, str], bytes]) -> tuple[str, str, Iterator[bytes]]:
    """``(partner_id, key_id, plain segments)``: reads the header now, decrypts lazily.

    Args:
        key_for: ``(partner_id, key_id) -> key``; raises :class:`FileRejected` when unknown.

    Raises (also while iterating):
        FileRejected: not a partner file, unknown partner or key, undecryptable, truncated.
    """
    partner_id, key_id, header = read_envelope_header(stream)
    aead = AESGCM(key_for(partner_id, key_id))
    prefix = header[-_PREFIX:]

    def segments() -> Iterator[bytes]:
        length = stream.read(_LENGTH.size)
        index = 0
        while True:
            if len(length) != _LENGTH.size:
                raise FileRejected(FileProblem.TRUNCATED, f"file ends before segment {index} ({len(length)}-byte length)", partner_id)
            (size,) = _LENGTH.unpack(length)
            if not _TAG <= size <= SEGMENT_BYTES + _TAG:
                raise FileRejected(FileProblem.UNDECRYPTABLE, f"segment {index} has an impossible length {size} (corrupted)", partner_id)
            sealed = _read_exactly(stream, size, f"segment {index}", partner_id)
            length = stream.read(_LENGTH.size)
            last = not length
            try:
                yield aead.decrypt(_nonce(prefix, index, last), sealed, header)
            except InvalidTag:
                raise _why_not(aead, prefix, index, last, sealed, header, key_id, partner_id) from None
            if last:
                return
            index += 1

    return partner_id, key_id, segments()


def _why_not(
    aead: AESGCM, prefix: bytes, index: int, last: bool, sealed: bytes, header: bytes, key_id: str, partner_id: str
) -> FileRejected:
    """A segment that does not open: cut off after it (it opens as a middle segment), or not ours."""
    if last:
        try:
            aead.decrypt(_nonce(prefix, index, False), sealed, header)
            return FileRejected(FileProblem.TRUNCATED, f"file ends after segment {index}, which is not the final one", partner_id)
        except InvalidTag:
            pass
    return FileRejected(
        FileProblem.UNDECRYPTABLE,
        f"segment {index} does not decrypt with key {key_id!r} of {partner_id!r}: wrong key, or the file is corrupted",
        partner_id,
    )


def encrypt_text(lines: Iterable[str], out: BinaryIO, partner: Partner, key_id: Optional[str] = None) -> None:
    """Writes ``lines`` (each without its ``\\n``) as an envelope for ``partner``."""
    kid = key_id or partner.feedback_key_id
    with EnvelopeWriter(out, partner.partner_id, kid, partner.keys[kid]) as writer:
        for line in lines:
            writer.write(line.encode("utf-8") + b"\n")


def lines_of(segments: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (without ``\\n``) of the plain text, across segment boundaries."""
    rest = b""
    for segment in segments:
        parts = (rest + segment).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


# ---------------------------------------------------------------- the text inside


class FileInfo(NamedTuple):
    """What the header and trailer of a verified file say, and how many rows break a row rule."""

    partner_id: str
    key_id: str
    file_id: str
    created_at: str
    row_count: int
    checksum: str
    invalid_rows: int = 0  # counted only when verify_file is given max_invalid_percent


class Row(NamedTuple):
    """A row that passed every row rule."""

    row_no: int  # 1 for the first D line
    partner_id: str
    member_id: str
    points: int
    txn_id: str
    txn_time: str


class RowRejection(NamedTuple):
    """A row that broke a rule: ``reason`` is a stable code, ``message`` says what and why."""

    row_no: int
    txn_id: str
    member_id: str
    points: str
    reason: str
    message: str


def key_lookup(partners: Mapping[str, Partner]) -> Callable[[str, str], bytes]:
    """``(partner_id, key_id) -> key`` over the configuration, rejecting unknown ones."""

    def key_for(partner_id: str, key_id: str) -> bytes:
        partner = partners.get(partner_id)
        if partner is None:
            raise FileRejected(FileProblem.UNKNOWN_PARTNER, f"partner {partner_id!r} is not configured")
        if key_id not in partner.keys:
            raise FileRejected(
                FileProblem.UNKNOWN_KEY, f"key {key_id!r} is not configured for {partner_id!r} (known: {sorted(partner.keys)})", partner_id
            )
        return partner.keys[key_id]

    return key_for


def verify_file(stream: BinaryIO, partners: Mapping[str, Partner], max_invalid_percent: Optional[float] = None) -> FileInfo:
    """Reads a whole file once: decrypts every segment and checks header, trailer, count, checksum.

    Args:
        max_invalid_percent: when given, every D row is also checked as :func:`read_rows` does, and
            a file whose invalid rows are more than this percent of its rows is refused.

    Raises:
        FileRejected: for the first problem found.
        ValueError: ``max_invalid_percent`` is not between 0 and 100.
    """
    if max_invalid_percent is not None and not 0 <= max_invalid_percent <= 100:
        raise ValueError(f"max_invalid_percent must be from 0 to 100, got {max_invalid_percent!r}")
    partner_id, key_id, segments = decrypt(stream, key_lookup(partners))
    lines = lines_of(segments)
    header = next(lines, b"").decode("utf-8", errors="replace").split(",")
    if len(header) != 5 or header[:2] != ["H", str(VERSION)] or header[2] != partner_id:
        raise FileRejected(FileProblem.BAD_HEADER, f"first line must be H,{VERSION},{partner_id},<file id>,<created>; got {header!r:.120}", partner_id)
    file_id, created_at = header[3].strip(), header[4].strip()
    for name, value in (("file id", file_id), ("created", created_at)):
        problem = _unreadable(value)
        if problem:
            raise FileRejected(FileProblem.BAD_HEADER, f"the header's {name} {problem}: {_shown(value)}", partner_id)
    check = _RowChecker(partners[partner_id]) if max_invalid_percent is not None else None
    digest, count, invalid, trailer = hashlib.sha256(), 0, 0, None
    for line in lines:
        if trailer is not None:
            raise FileRejected(FileProblem.BAD_TRAILER, f"text after the trailer line {trailer!r:.80}", partner_id)
        if line.startswith(b"D,"):
            digest.update(line + b"\n")
            count += 1
            if check is not None and isinstance(check(count, line), RowRejection):
                invalid += 1
        elif line.startswith(b"T,"):
            trailer = line.decode("utf-8", errors="replace").strip()
        else:
            raise FileRejected(FileProblem.BAD_TRAILER, f"line {count + 2} is neither a D row nor the T trailer: {line[:40]!r}", partner_id)
    fields = (trailer or "").split(",")
    said = _whole_number(fields[1]) if len(fields) == 3 else None
    if said is None:
        raise FileRejected(FileProblem.BAD_TRAILER, f"last line must be T,<row count in ASCII digits>,<sha256 hex>; got {trailer!r:.120}", partner_id)
    if said != count:
        raise FileRejected(FileProblem.ROW_COUNT_MISMATCH, f"trailer says {said} rows, the file has {count}", partner_id)
    if fields[2].lower() != digest.hexdigest():
        raise FileRejected(FileProblem.CHECKSUM_MISMATCH, f"trailer checksum {fields[2]!r:.70} != sha256 of the rows {digest.hexdigest()}", partner_id)
    if max_invalid_percent is not None and invalid * 100 > max_invalid_percent * count:
        raise FileRejected(
            FileProblem.TOO_MANY_INVALID,
            f"{invalid} of {count} rows ({100 * invalid / count:g}%) break a row rule; the limit is {max_invalid_percent:g}%", partner_id,
        )
    return FileInfo(partner_id, key_id, file_id, created_at, count, digest.hexdigest(), invalid)


class _RowChecker:
    """The row rules over one file's D lines in order: :func:`check_row`, then ``duplicate_txn_id``."""

    def __init__(self, partner: Partner) -> None:
        self._partner = partner
        self._seen: set[str] = set()

    def __call__(self, row_no: int, line: bytes) -> Union[Row, RowRejection]:
        checked = check_row(row_no, line.decode("utf-8", errors="replace"), self._partner)
        if not isinstance(checked, Row):
            return checked
        if checked.txn_id in self._seen:
            return RowRejection(row_no, checked.txn_id, checked.member_id, str(checked.points), "duplicate_txn_id",
                                f"txn_id {checked.txn_id!r} appears earlier in this file")
        self._seen.add(checked.txn_id)
        return checked


def read_rows(stream: BinaryIO, partners: Mapping[str, Partner]) -> Iterator[Union[Row, RowRejection]]:
    """Every D row of a file already verified by :func:`verify_file`, checked by :func:`check_row`.

    A txn_id seen earlier in the same file is rejected as ``duplicate_txn_id`` (the first one counts).
    """
    partner_id, _, segments = decrypt(stream, key_lookup(partners))
    check = _RowChecker(partners[partner_id])
    row_no = 0
    for line in lines_of(segments):
        if line.startswith(b"D,"):
            row_no += 1
            yield check(row_no, line)


def _whole_number(text: str) -> Optional[int]:
    """``text`` as a whole number when it is 1 to :data:`MAX_DIGITS` ASCII digits, else None."""
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def _unreadable(text: str) -> Optional[str]:
    """What makes ``text`` unfit for a field (bytes that were not UTF-8, an unseen character), or None."""
    for char in text:
        if char == "\ufffd":
            return "holds bytes that are not UTF-8 (shown as U+FFFD)"
        kind = _UNSEEN.get(unicodedata.category(char))
        if kind:
            return f"holds the {kind} U+{ord(char):04X}"
    return None


def _shown(text: str, limit: int = 40) -> str:
    """``repr(text)`` of at most ``limit`` characters of it, saying how long a longer one was."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def check_row(row_no: int, line: str, partner: Partner) -> Union[Row, RowRejection]:
    """One D line against the row rules.

    >>> p = Partner("ACME", {"k": bytes(32)}, "k", frozenset({"M1"}), max_points=500)
    >>> check_row(1, "D,ACME,M1,150,TX-1,2026-11-21T07:59:00Z", p).points
    150
    >>> [check_row(2, line, p).reason for line in ("D,ACME,M9,1,TX-2,2026-11-21T07:59:00Z",
    ...  "D,ACME,M1,0,TX-3,2026-11-21T07:59:00Z", "D,ACME,M1,501,TX-4,2026-11-21T07:59:00Z",
    ...  "D,ACME,M1,5,,2026-11-21T07:59:00Z", "D,ACME,M1,5,TX-6,yesterday", "D,ACME,M1,5")]
    ['unknown_member', 'bad_points', 'points_over_limit', 'missing_txn_id', 'bad_txn_time', 'malformed_row']

    Numbers are ASCII digits only, and a field must be readable text:

    >>> check_row(7, "D,ACME,M1,\u00b2,TX-7,2026-11-21T07:59:00Z", p).message
    "points must be a positive whole number of 1-18 ASCII digits, got '²'"
    >>> check_row(8, "D,ACME,M1,5,TX-\ufffd,2026-11-21T07:59:00Z", p).message
    "txn_id holds bytes that are not UTF-8 (shown as U+FFFD): 'TX-\ufffd'"
    """
    fields = line.split(",")
    if len(fields) != 6 or fields[0].strip() != "D":
        return RowRejection(row_no, "", "", "", "malformed_row",
                            f"expected 6 comma-separated fields starting with D, got {len(fields)} starting with {_shown(fields[0], 10)}")
    _, partner_id, member_id, points_text, txn_id, txn_time = (f.strip() for f in fields)

    def reject(reason: str, message: str) -> RowRejection:
        return RowRejection(row_no, txn_id, member_id, points_text, reason, message)

    for name, value in zip(_ROW_FIELDS, (partner_id, member_id, points_text, txn_id, txn_time)):
        problem = _unreadable(value)
        if problem:
            return reject("bad_encoding", f"{name} {problem}: {_shown(value)}")
    if not txn_id or len(txn_id) > 64:
        return reject("missing_txn_id", f"txn_id must be 1-64 characters, got {_shown(txn_id, 70)}")
    if partner_id != partner.partner_id:
        return reject("partner_mismatch", f"row partner {_shown(partner_id)} in a file of {partner.partner_id!r}")
    if member_id not in partner.members:
        return reject("unknown_member", f"member {_shown(member_id)} is not a known member of {partner.partner_id}")
    points = _whole_number(points_text)
    if points is None or points <= 0:
        return reject("bad_points", f"points must be a positive whole number of 1-{MAX_DIGITS} ASCII digits, got {_shown(points_text)}")
    if points > partner.max_points:
        return reject("points_over_limit", f"{points_text} points is over the limit of {partner.max_points} per row")
    if not _RFC3339.fullmatch(txn_time):
        return reject("bad_txn_time", f"txn_time must be RFC 3339 with an offset (2026-11-21T07:59:00Z, +hh:mm), got {_shown(txn_time)}")
    try:
        datetime.fromisoformat(txn_time.replace("Z", "+00:00")).astimezone(timezone.utc)
    except (ValueError, OverflowError) as error:
        return reject("bad_txn_time", f"txn_time {_shown(txn_time)} is not a real time: {error}")
    return Row(row_no, partner_id, member_id, points, txn_id, txn_time)


def partner_file_lines(partner_id: str, file_id: str, created_at: str, rows: Iterable[str]) -> Iterator[str]:
    """The lines of an input file (for a partner's tool, samples and tests): header, rows, trailer.

    ``rows`` are D lines without the ``D,`` (``partner,member,points,txn_id,txn_time``).
    """
    yield f"H,{VERSION},{partner_id},{file_id},{created_at}"
    digest, count = hashlib.sha256(), 0
    for row in rows:
        line = f"D,{row}"
        digest.update(line.encode("utf-8") + b"\n")
        count += 1
        yield line
    yield f"T,{count},{digest.hexdigest()}"
