"""Fuzzing partner files: whatever a D line or the plain text of a file holds, the row rules and
verify_file answer with the module's own outcomes only (a Row or a RowRejection, a FileInfo or a
FileRejected), and a verified file reads back as exactly its row count.

``WAYBILL_FUZZ_EXAMPLES=5000`` draws more examples (docs/inputs.md); the default keeps the fast loop fast.
"""
from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from datetime import datetime, timezone
from typing import Optional, TypeVar, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.partner import file_format as partner_format
from pipeline.partner.file_format import EnvelopeWriter, FileProblem, FileRejected, Row, RowRejection
from pipeline.partner.keys import Partner
from tests.unit.model import hostile_inputs as hostile

PARTNER = Partner("ACME", {"k1": bytes(range(32))}, "k1", frozenset({"M1", "M2"}), max_points=500)
PARTNERS = {PARTNER.partner_id: PARTNER}
WHEN = "2026-11-21T07:59:00+08:00"
HEADER = b"H,1,ACME,F-1,2026-11-21T08:00:00Z"
UNSEEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # Unicode categories no field of a Row holds
ROW_REASONS = {"malformed_row", "bad_encoding", "missing_txn_id", "partner_mismatch", "unknown_member", "bad_points",
               "points_over_limit", "bad_txn_time"}
FUZZ = settings(
    max_examples=hostile.examples(200), deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Points that are no positive whole number of ASCII digits: each must be a clean bad_points.
NOT_POINTS = ["\u00b2", "\uff15", "\u0665", "\u06f5", "\u096b", "\u2164", "+5", "-5", "5.0", "1e3", "", "5 0", "9" * 200,
              "0", "00", "0x10", "1_000", "\U0001d7d3"]
# txn_times that Python's fromisoformat takes or chokes on but that are no real RFC 3339 time with an offset.
NOT_TIMES = ["20261121T075900Z", "2026-W47-6T07:59:00Z", "2026-11-21T09:30:00+08", "2026-11-21T09:30:00+08:99",
             "2026-11-21 07:59:00Z", "2026-11-21T07:59Z", "2026-11-21T07:59:00z", "0001-01-01T00:00:00+01:00",
             "2026-11-21T07:59:60Z", "2026-11-21T07:59:00+08:00:30", "\uff12\uff10\uff12\uff16-11-21T09:30:00Z",
             "0000-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-21T09:30:00", "9999-12-31T23:59:59-01:00",
             "\u0662\u0660\u0662\u0666-11-21T09:30:00Z", "2026-11-21T09:30:00+24:00"]
_ZEROS = (0xFF10, 0x0660, 0x0966)  # the digit zero, fullwidth, Arabic-Indic and Devanagari
_T = TypeVar("_T")


# ---------------------------------------------------------------- strategies


def _in_digits(number: int, zero: int) -> str:
    """``number`` written in the digits that start at ``zero``."""
    return "".join(chr(zero + int(d)) for d in str(number))


def _mostly(draw: st.DrawFn, good: _T, broken: list[_T], every: int) -> _T:
    """One of ``broken`` one time in ``every``, else ``good``."""
    pick = draw(st.integers(0, every * len(broken) - 1))
    return broken[pick] if pick < len(broken) else good


# Each field of a D line: what a valid row holds, and what breaks it.
_GOOD_FIELDS = (
    st.just("D"), st.just("ACME"), st.sampled_from(["M1", "M2"]), st.integers(1, 600).map(str),
    st.sampled_from([f"TX-{n}" for n in range(1, 6)]), st.sampled_from([WHEN, "2026-11-21T07:59:00Z", "2026-11-21T07:59:00.5-05:30"]),
)
_BROKEN_FIELDS = (
    st.sampled_from([" D ", "T", "", "d"]),
    st.one_of(st.sampled_from(["ACME ", "OTHER", "", "AC\ufffdME"]), hostile.texts),
    st.one_of(st.sampled_from(["M9", "", " M1", "M1\x00", "M\ufffd"]), hostile.texts),
    st.one_of(st.sampled_from(NOT_POINTS), st.integers(-10, 10**20).map(str), hostile.texts),
    st.one_of(st.sampled_from(["", "x" * 65, "TX\t1", "TX\ufffd"]), hostile.texts),
    st.one_of(st.sampled_from(NOT_TIMES + hostile.HOSTILE_TIMESTAMPS), hostile.texts),
)


@st.composite
def row_lines(draw: st.DrawFn) -> str:
    """A D line with up to three fields broken, or text of any shape."""
    shape = draw(st.integers(0, 11))
    if shape == 9:
        return ",".join(draw(st.lists(hostile.texts, max_size=9)))
    if shape == 10:
        return ",".join(["D"] * draw(st.sampled_from([1, 5, 7, 100])))
    if shape == 11:
        return draw(st.text())
    broken = draw(st.sets(st.integers(0, 5), max_size=3))
    return ",".join(draw(_BROKEN_FIELDS[i] if i in broken else _GOOD_FIELDS[i]) for i in range(6))


def _as_bytes(line: str) -> bytes:
    """A line for a file: no line end inside; lone surrogates become bytes that are not UTF-8."""
    return line.replace("\n", "").encode("utf-8", errors="surrogatepass")


@st.composite
def file_rows(draw: st.DrawFn) -> bytes:
    """A D line of a file: mostly :func:`row_lines`, sometimes any bytes after the ``D,``."""
    raw = draw(st.binary(max_size=40)) if draw(st.integers(0, 9)) == 0 else _as_bytes(draw(row_lines()))
    return b"D," + raw.replace(b"\n", b"").removeprefix(b"D,")


@st.composite
def plain_files(draw: st.DrawFn) -> bytes:
    """The plain text of a file: a header, D rows, and a trailer, each right or broken in one way."""
    header = _mostly(draw, HEADER, [b"H,1,ACME,F\xff,now", b"H,1,ACME,F,now\x07", b"H,1,OTHER,F,now", _as_bytes(draw(hostile.texts))], 5)
    rows = draw(st.lists(file_rows(), max_size=20))
    digest = hashlib.sha256(b"".join(row + b"\n" for row in rows)).hexdigest()
    count = len(rows)
    trailer = _mostly(draw, [f"T,{count},{digest}".encode()], [[text.encode()] for text in [
        f"T,{count},{digest.upper()}", f"T,{count + 1},{digest}", f"T,{count},{'0' * 64}", f"T,{'9' * 200},{digest}",
        f"T,+{count},{digest}", f"T,-{count},{digest}", f"T, {count},{digest}", f"T,{count}.0,{digest}", f"T,,{digest}",
        f"T,{count},{digest},extra", f"T,{count}", "T", f"T,{str(count).replace('2', chr(0xB2))},{digest}",
        *(f"T,{_in_digits(count, zero)},{digest}" for zero in _ZEROS),
    ]] + [[b"T," + draw(st.binary(max_size=80)).replace(b"\n", b"")], []], 2)
    ending = _mostly(draw, b"\n", [b"", b"\n\n", b"\nD,ACME,M1,5,TX-9," + WHEN.encode(), b"\nT,0,0"], 3)
    return b"\n".join([header, *rows, *trailer]) + ending


def encrypted(plain: bytes) -> bytes:
    """``plain`` in an envelope for PARTNER, whatever its bytes."""
    out = io.BytesIO()
    with EnvelopeWriter(out, PARTNER.partner_id, "k1", PARTNER.keys["k1"]) as writer:
        writer.write(plain)
    return out.getvalue()


def assert_sound(line: str, checked: Union[Row, RowRejection]) -> None:
    """A Row honours every rule; a RowRejection has a known reason and a bounded message."""
    if isinstance(checked, RowRejection):
        assert checked.reason in ROW_REASONS, checked
        assert 0 < len(checked.message) <= 300, checked.message
        return
    assert isinstance(checked, Row), checked
    assert 1 <= checked.points <= PARTNER.max_points
    assert re.fullmatch("[0-9]+", line.split(",")[3].strip())
    assert checked.partner_id == PARTNER.partner_id and checked.member_id in PARTNER.members
    assert 1 <= len(checked.txn_id) <= 64
    assert not any(char == "\ufffd" or unicodedata.category(char) in UNSEEN for char in checked.txn_id), checked
    datetime.fromisoformat(checked.txn_time.replace("Z", "+00:00")).astimezone(timezone.utc)


# ---------------------------------------------------------------- properties


@FUZZ
@given(row_lines())
def test_any_line_is_a_row_or_a_rejection(line: str) -> None:
    assert_sound(line, partner_format.check_row(1, line, PARTNER))


@settings(FUZZ, max_examples=hostile.examples(150))
@given(plain_files(), st.one_of(st.none(), st.sampled_from([0.0, 50.0, 100.0]), st.floats(0, 100)))
def test_any_file_is_verified_or_refused_and_a_verified_one_reads_whole(plain: bytes, limit: Optional[float]) -> None:
    data = encrypted(plain)
    try:
        info = partner_format.verify_file(io.BytesIO(data), PARTNERS, limit)
    except FileRejected as refused:
        assert isinstance(refused.code, FileProblem) and refused.partner_id == PARTNER.partner_id
        assert len(str(refused)) <= 400, str(refused)
        if refused.code is not FileProblem.TOO_MANY_INVALID:
            return
        assert limit is not None
        info = partner_format.verify_file(io.BytesIO(data), PARTNERS)  # the file itself is sound
        invalid = sum(isinstance(r, RowRejection) for r in partner_format.read_rows(io.BytesIO(data), PARTNERS))
        assert invalid * 100 > limit * info.row_count
        return
    rows = list(partner_format.read_rows(io.BytesIO(data), PARTNERS))
    assert [r.row_no for r in rows] == list(range(1, info.row_count + 1))
    invalid = sum(isinstance(r, RowRejection) for r in rows)
    assert info.invalid_rows == (invalid if limit is not None else 0)
    assert limit is None or invalid * 100 <= limit * info.row_count
    for row in rows:
        if isinstance(row, RowRejection):
            assert row.reason in ROW_REASONS | {"duplicate_txn_id"}, row
        else:
            assert_sound(f"D,{row.partner_id},{row.member_id},{row.points},{row.txn_id},{row.txn_time}", row)


# ---------------------------------------------------------------- named cases


def test_a_superscript_two_as_points_is_bad_points() -> None:
    checked = partner_format.check_row(1, f"D,ACME,M1,\u00b2,TX-1,{WHEN}", PARTNER)
    assert isinstance(checked, RowRejection)
    assert (checked.reason, checked.points) == ("bad_points", "\u00b2")
    assert "got '\u00b2'" in checked.message


def test_a_superscript_two_as_the_trailer_count_is_bad_trailer() -> None:
    rows = [f"D,ACME,M1,5,TX-{n},{WHEN}".encode() for n in (1, 2)]
    digest = hashlib.sha256(b"".join(row + b"\n" for row in rows)).hexdigest()
    data = encrypted(b"\n".join([HEADER, *rows, f"T,\u00b2,{digest}".encode()]) + b"\n")
    with pytest.raises(FileRejected, match="last line must be T,<row count in ASCII digits>") as refused:
        partner_format.verify_file(io.BytesIO(data), PARTNERS)
    assert refused.value.code is FileProblem.BAD_TRAILER


@pytest.mark.parametrize("points", NOT_POINTS)
def test_points_that_are_no_ascii_whole_number_are_bad_points(points: str) -> None:
    checked = partner_format.check_row(1, f"D,ACME,M1,{points},TX-1,{WHEN}", PARTNER)
    assert isinstance(checked, RowRejection) and checked.reason == "bad_points", checked
    assert len(checked.message) <= 160, checked.message


def test_a_long_number_within_the_digits_is_over_the_limit() -> None:
    checked = partner_format.check_row(1, f"D,ACME,M1,{'9' * partner_format.MAX_DIGITS},TX-1,{WHEN}", PARTNER)
    assert isinstance(checked, RowRejection) and checked.reason == "points_over_limit"


@pytest.mark.parametrize("fields", [5, 7, 100])
def test_a_wrong_number_of_fields_is_malformed(fields: int) -> None:
    line = ",".join(["D", "ACME", "M1", "5", "TX-1", WHEN, *["x"] * 100][:fields])
    checked = partner_format.check_row(1, line, PARTNER)
    assert isinstance(checked, RowRejection) and checked.reason == "malformed_row"
    assert f"got {fields} starting with 'D'" in checked.message


@pytest.mark.parametrize("txn_time", NOT_TIMES)
def test_a_txn_time_that_is_no_rfc3339_time_is_bad_txn_time(txn_time: str) -> None:
    line = f"D,ACME,M1,5,TX-1,{txn_time}"
    checked = partner_format.check_row(1, line, PARTNER)
    assert isinstance(checked, RowRejection) and checked.reason == "bad_txn_time", checked


@pytest.mark.parametrize("txn_time", ["2026-11-21T07:59:00Z", "2026-11-21T07:59:00.123456789-05:30", "2026-11-21T07:59:00-00:00"])
def test_rfc3339_times_pass(txn_time: str) -> None:
    assert isinstance(partner_format.check_row(1, f"D,ACME,M1,5,TX-1,{txn_time}", PARTNER), Row)


def test_rows_that_are_not_utf8_or_hold_control_characters_are_bad_encoding() -> None:
    rows = [b"D,ACME,M\xff1,5,TX-1," + WHEN.encode(), b"D,ACME,M1,5,TX\x072," + WHEN.encode(), b"D,ACME,M1,5,TX-3," + WHEN.encode()]
    digest = hashlib.sha256(b"".join(row + b"\n" for row in rows)).hexdigest()
    data = encrypted(b"\n".join([HEADER, *rows, f"T,3,{digest}".encode()]))
    assert partner_format.verify_file(io.BytesIO(data), PARTNERS).row_count == 3
    first, second, third = partner_format.read_rows(io.BytesIO(data), PARTNERS)
    assert isinstance(first, RowRejection) and isinstance(second, RowRejection) and isinstance(third, Row)
    assert (first.reason, first.message) == ("bad_encoding", "member_id holds bytes that are not UTF-8 (shown as U+FFFD): 'M\ufffd1'")
    assert (second.reason, second.message) == ("bad_encoding", "txn_id holds the control character U+0007: 'TX\\x072'")


def test_a_header_that_is_not_utf8_is_bad_header() -> None:
    data = encrypted(b"H,1,ACME,F-\xff,2026-11-21T08:00:00Z\nT,0," + hashlib.sha256().hexdigest().encode())
    with pytest.raises(FileRejected, match="file id holds bytes that are not UTF-8") as refused:
        partner_format.verify_file(io.BytesIO(data), PARTNERS)
    assert refused.value.code is FileProblem.BAD_HEADER


# Ten rows, three of which break a rule: an unknown member, zero points, a repeated txn_id.
TEN_ROWS = [f"ACME,{member},{points},{txn},{WHEN}" for member, points, txn in [
    ("M1", 5, "TX-1"), ("M9", 5, "TX-2"), ("M1", 0, "TX-3"), ("M2", 5, "TX-1"), *[("M1", 5, f"TX-{n}") for n in range(5, 11)],
]]


def _ten_rows_file() -> bytes:
    out = io.BytesIO()
    partner_format.encrypt_text(partner_format.partner_file_lines("ACME", "F-1", "2026-11-21T08:00:00Z", TEN_ROWS), out, PARTNER)
    return out.getvalue()


def test_too_many_invalid_rows_refuse_the_file() -> None:
    with pytest.raises(FileRejected) as refused:
        partner_format.verify_file(io.BytesIO(_ten_rows_file()), PARTNERS, max_invalid_percent=20)
    assert refused.value.code is FileProblem.TOO_MANY_INVALID and refused.value.partner_id == "ACME"
    assert str(refused.value) == "3 of 10 rows (30%) break a row rule; the limit is 20%"


@pytest.mark.parametrize("limit, invalid_rows", [(None, 0), (30, 3), (100, 3)])
def test_invalid_rows_within_the_limit_are_counted(limit: Optional[float], invalid_rows: int) -> None:
    info = partner_format.verify_file(io.BytesIO(_ten_rows_file()), PARTNERS, max_invalid_percent=limit)
    assert (info.row_count, info.invalid_rows) == (10, invalid_rows)


@pytest.mark.parametrize("limit", [-1, 100.5, float("nan")])
def test_a_limit_outside_0_to_100_is_refused(limit: float) -> None:
    with pytest.raises(ValueError, match="max_invalid_percent must be from 0 to 100"):
        partner_format.verify_file(io.BytesIO(_ten_rows_file()), PARTNERS, max_invalid_percent=limit)
