"""The partner store: the outcome of every partner file and of every row, kept to be asked afterwards.

Two tables, one record per key (see :class:`FileRecord` and :class:`RowRecord`):

* ``partner_files``, keyed by ``(sha256, run_id)`` (the encrypted file's bytes, and the run
  that answered it): the file's facts, its answer, why it was refused (``problem``) and its
  totals, once per run that received it (a file sent twice is answered twice);
* ``partner_rows``, keyed by ``(partner_id, file_id, row_no)``: each row's outcome
  (``credited``, ``rejected``, ``already_credited`` or ``not_credited``), reason and message.

:class:`StoreOutcomes` writes them to one of two stores (:func:`parse_store`):

* ``sqlite:<path>``, for runs on this machine: records are upserted, and of two records of one
  key the one with the later ``processed_at`` stays, so a re-run updates the outcomes and never
  duplicates a row;
* ``bigquery:<project>.<dataset>``, for Dataflow: records are appended to tables of the same
  names; the views of ``docs/partner-store.md`` keep the last ``processed_at`` per key, which is
  what the SQLite store holds.

Asking (SQLite): ``print(describe(find_rows("output/store.sqlite", "TX-000017")))`` prints::

    ACME-20261121-001 row 17 (TX-000017, M000017, 150 points): already_credited from ACME-20261120-003 (run 20261121T090000123Z-1a2b3c, 2026-11-21T09:00:00Z)
"""
from __future__ import annotations

import functools
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional, TypedDict, get_args, get_origin, get_type_hints

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.io.sinks import is_local_path
from pipeline.model.dead_letter import METRICS_NAMESPACE

STORE_FORMS = "sqlite:<path> (a local file) or bigquery:<project>.<dataset>"
_SQLITE_STORE = re.compile(r"sqlite:(?P<path>.+)")
# A project id (with its domain, if any) and a dataset name, as BigQuery spells them.
_BIGQUERY_STORE = re.compile(
    r"bigquery:(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9])\.(?P<dataset>[A-Za-z0-9_]{1,1024})")
BATCH_SIZE = 1000  # records per SQLite transaction
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another's lock

UtcTime = Annotated[str, "UTC time, ISO 8601"]  # e.g. 2026-11-21T09:00:00Z; a TIMESTAMP in BigQuery
Outcome = Literal["credited", "rejected", "already_credited", "not_credited"]


class FileRecord(TypedDict):
    """One input file as one run answered it (the key: ``sha256`` and ``run_id``)."""

    sha256: str  # hex of the encrypted file's bytes
    file_name: str  # the input file's base name
    partner_id: Optional[str]  # None for a file that is no partner file
    file_id: Optional[str]  # None when the file could not be read
    row_count: int
    received_at: UtcTime
    processed_at: UtcTime
    run_id: str
    answer: str  # the name of the feedback or exception file
    problem: Optional[str]  # the reason code when the whole file was refused
    archived_as: str  # the path of the archived original
    credited: int
    rejected: int
    already_credited: int
    not_credited: int


class RowRecord(TypedDict):
    """One row of a read file and its outcome (the key: ``partner_id``, ``file_id``, ``row_no``)."""

    partner_id: str
    file_id: str
    row_no: int
    file_name: str
    sha256: str  # of the file
    txn_id: str
    member_id: str
    points: str  # as in the file
    outcome: Outcome
    reason: str
    message: str
    credited_from_file: Optional[str]  # the file_id the txn was credited from (this one when credited)
    batch_id: Optional[str]  # the delivery batch the row went in
    run_id: str
    processed_at: UtcTime


@dataclass(frozen=True)
class Column:
    """One field of a record type, as a column."""

    name: str
    kind: str  # "text", "int" or "time"
    nullable: bool


_SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "time": "TEXT"}
_BIGQUERY_TYPES = {"text": "STRING", "int": "INTEGER", "time": "TIMESTAMP"}


def _column(name: str, hint: Any) -> Column:
    nullable = type(None) in get_args(hint)  # Optional[X]
    if nullable:
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    if hint == UtcTime:
        return Column(name, "time", nullable)
    if hint is int:
        return Column(name, "int", nullable)
    if hint is str or get_origin(hint) is Literal:
        return Column(name, "text", nullable)
    raise TypeError(f"store field {name}: no column type for {hint!r}")


@dataclass(frozen=True)
class Table:
    """A store table: its name, its record type and its key; the SQL and the BigQuery schema follow from them."""

    name: str
    record: type
    key: tuple[str, ...]

    @functools.cached_property  # read once: every record is checked against them
    def columns(self) -> tuple[Column, ...]:
        return tuple(_column(name, hint) for name, hint in get_type_hints(self.record, include_extras=True).items())

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def create_sql(self) -> str:
        columns = [f"{c.name} {_SQLITE_TYPES[c.kind]}{'' if c.nullable else ' NOT NULL'}" for c in self.columns]
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(columns)}, PRIMARY KEY ({', '.join(self.key)}))"

    def upsert_sql(self) -> str:
        """An upsert that keeps, of two records of one key, the later ``processed_at`` (a tie: the newer write).

        ``julianday`` compares the times as times, whatever their fraction digits.
        """
        updates = ", ".join(f"{name} = excluded.{name}" for name in self.fields if name not in self.key)
        return (f"INSERT INTO {self.name} ({', '.join(self.fields)}) VALUES ({', '.join(':' + f for f in self.fields)}) "
                f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates} "
                f"WHERE julianday(excluded.processed_at) >= julianday({self.name}.processed_at)")

    def bigquery_schema(self) -> dict[str, list[dict[str, str]]]:
        """The table's schema for ``WriteToBigQuery``.

        >>> FILES.bigquery_schema()["fields"][2:5]  # doctest: +NORMALIZE_WHITESPACE
        [{'name': 'partner_id', 'type': 'STRING', 'mode': 'NULLABLE'},
         {'name': 'file_id', 'type': 'STRING', 'mode': 'NULLABLE'},
         {'name': 'row_count', 'type': 'INTEGER', 'mode': 'REQUIRED'}]
        """
        return {"fields": [{"name": c.name, "type": _BIGQUERY_TYPES[c.kind], "mode": "NULLABLE" if c.nullable else "REQUIRED"}
                           for c in self.columns]}

    def check(self, record: dict[str, Any]) -> None:
        """Raises ValueError unless ``record`` has exactly the table's fields."""
        missing, unexpected = set(self.fields) - set(record), set(record) - set(self.fields)
        if missing or unexpected:
            raise ValueError(f"a {self.name} record needs exactly the fields of {self.record.__name__}; "
                             f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")


FILES = Table("partner_files", FileRecord, ("sha256", "run_id"))
ROWS = Table("partner_rows", RowRecord, ("partner_id", "file_id", "row_no"))
TABLES = {"files": FILES, "rows": ROWS}  # the inputs of StoreOutcomes and the tables they go to


def parse_store(uri: str) -> str:
    """Checks a store URI and returns it; a ValueError names the forms.

    >>> parse_store("sqlite:output/store.sqlite"), parse_store("bigquery:waybill-demo.partners")
    ('sqlite:output/store.sqlite', 'bigquery:waybill-demo.partners')
    >>> parse_store("sqlite:gs://bucket/store.sqlite")
    Traceback (most recent call last):
    ValueError: the store must be sqlite:<path> (a local file) or bigquery:<project>.<dataset>, got 'sqlite:gs://bucket/store.sqlite'
    """
    sqlite = _SQLITE_STORE.fullmatch(uri)
    if (sqlite and is_local_path(sqlite["path"])) or _BIGQUERY_STORE.fullmatch(uri):
        return uri
    raise ValueError(f"the store must be {STORE_FORMS}, got {uri!r}")


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun explicitly; timeout is the busy timeout.
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)


class UpsertRecordsFn(beam.DoFn):
    """Upserts the records of one table into a SQLite file, :data:`BATCH_SIZE` per transaction.

    Safe when bundles run on several threads or processes: no connection outlives a write, each
    write is one ``BEGIN IMMEDIATE`` transaction, a writer waits up to :data:`BUSY_TIMEOUT_S`
    for another's lock, and WAL journaling lets readers read meanwhile.

    Args:
        path: the SQLite file; its folder is created if missing.
        table: :data:`FILES` or :data:`ROWS`.
    """

    def __init__(self, path: str, table: Table) -> None:
        super().__init__()
        self.path = path
        self.table = table
        self._batch: list[dict[str, Any]] = []
        self._written = Metrics.counter(METRICS_NAMESPACE, f"store_{table.name}")

    def setup(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        connection = _connect(self.path)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # kept by the file
            for table in TABLES.values():
                connection.execute(table.create_sql())
        finally:
            connection.close()

    def start_bundle(self) -> None:
        self._batch = []

    def process(self, record: dict[str, Any]) -> None:
        self.table.check(record)
        self._batch.append(record)
        if len(self._batch) >= BATCH_SIZE:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        connection = _connect(self.path)
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(self.table.upsert_sql(), self._batch)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()
        self._written.inc(len(self._batch))
        self._batch = []


def _writer(store: str, table: Table) -> beam.PTransform:
    """The writer of ``table`` for a store :func:`parse_store` accepted."""
    sqlite = _SQLITE_STORE.fullmatch(store)
    if sqlite:
        return beam.ParDo(UpsertRecordsFn(sqlite["path"], table))
    project, _, dataset = store.removeprefix("bigquery:").rpartition(".")
    return beam.io.WriteToBigQuery(
        f"{project}:{dataset}.{table.name}", schema=table.bigquery_schema(),
        create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
        write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND)


class StoreOutcomes(beam.PTransform):
    """``{"files": FileRecords, "rows": RowRecords}`` -> the store (see the module docstring).

    ``{"files": files, "rows": rows} | "Store" >> StoreOutcomes("sqlite:output/store.sqlite")``.
    The real writers are ``self.writers["files"]`` and ``self.writers["rows"]``; a test may replace them.

    Args:
        store: ``sqlite:<path>`` or ``bigquery:<project>.<dataset>`` (:func:`parse_store`).
    """

    def __init__(self, store: str) -> None:
        super().__init__()
        self.store = parse_store(store)
        self.writers: dict[str, beam.PTransform] = {part: _writer(store, table) for part, table in TABLES.items()}

    def expand(self, records: dict[str, beam.PCollection]) -> dict[str, Any]:
        if set(records) != set(TABLES):
            raise ValueError(f"StoreOutcomes takes a dict with the keys {sorted(TABLES)}, got {sorted(records)}")
        return {part: records[part] | f"Store{part.title()}" >> writer for part, writer in self.writers.items()}


# ---------------------------------------------------------------- asking the SQLite store


def _read(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no partner store at {path!r}: give the path of a sqlite: store")
    connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    connection.row_factory = sqlite3.Row
    return connection


def find_rows(sqlite_path: str, txn_id: str, file: Optional[str] = None) -> list[dict[str, Any]]:
    """The rows with ``txn_id``, oldest first (only in the file whose file_id or file_name is ``file``).

    Each is a :class:`RowRecord` with its file's ``received_at``, ``answer`` and ``archived_as``
    (None when the file's record is not in the store).
    """
    query = (f"SELECT {', '.join('r.' + name for name in ROWS.fields)}, f.received_at, f.answer, f.archived_as "
             f"FROM {ROWS.name} r LEFT JOIN {FILES.name} f ON f.sha256 = r.sha256 AND f.run_id = r.run_id "
             "WHERE r.txn_id = :txn_id AND (:file IS NULL OR :file IN (r.file_id, r.file_name)) "
             "ORDER BY julianday(r.processed_at), r.partner_id, r.file_id, r.row_no")
    with closing(_read(sqlite_path)) as connection:
        return [dict(row) for row in connection.execute(query, {"txn_id": txn_id, "file": file})]


def file_history(sqlite_path: str, file: str) -> Optional[dict[str, Any]]:
    """The :class:`FileRecord` of the file whose file_id or file_name is ``file``, the latest processed; or None."""
    query = (f"SELECT * FROM {FILES.name} WHERE :file IN (file_id, file_name) "
             "ORDER BY julianday(processed_at) DESC LIMIT 1")
    with closing(_read(sqlite_path)) as connection:
        found = connection.execute(query, {"file": file}).fetchone()
    return None if found is None else dict(found)


def describe(rows: Iterable[dict[str, Any]]) -> str:
    """A short answer to "what happened", one line per row of :func:`find_rows`.

    >>> print(describe([
    ...     {"file_id": "ACME-20261121-001", "row_no": 17, "txn_id": "TX-000017", "member_id": "M000017",
    ...      "points": "150", "outcome": "already_credited", "reason": "credited_from_file",
    ...      "message": "ACME-20261120-003", "credited_from_file": "ACME-20261120-003", "batch_id": None,
    ...      "run_id": "5f2c", "processed_at": "2026-11-21T09:00:00Z"},
    ...     {"file_id": "ACME-20261121-001", "row_no": 18, "txn_id": "TX-000018", "member_id": "M999999",
    ...      "points": "20", "outcome": "rejected", "reason": "unknown_member",
    ...      "message": "member 'M999999' is not a known member of ACME-BANK", "credited_from_file": None,
    ...      "batch_id": None, "run_id": "5f2c", "processed_at": "2026-11-21T09:00:00Z"}]))
    ACME-20261121-001 row 17 (TX-000017, M000017, 150 points): already_credited from ACME-20261120-003 (run 5f2c, 2026-11-21T09:00:00Z)
    ACME-20261121-001 row 18 (TX-000018, M999999, 20 points): rejected, unknown_member: member 'M999999' is not a known member of ACME-BANK (run 5f2c, 2026-11-21T09:00:00Z)
    """
    lines = []
    for row in rows:
        what = row["outcome"]
        source = row["credited_from_file"] if row["outcome"] == "already_credited" else None
        what += f" from {source}" if source else ""
        what += f" in batch {row['batch_id']}" if row["batch_id"] else ""
        if not source:  # else the reason and message name the source again
            what += f", {row['reason']}" if row["reason"] else ""
            what += f": {row['message']}" if row["message"] else ""
        lines.append(f"{row['file_id']} row {row['row_no']} ({row['txn_id']}, {row['member_id']}, {row['points']} points): "
                     f"{what} (run {row['run_id']}, {row['processed_at']})")
    return "\n".join(lines) if lines else "no such row in the store"
