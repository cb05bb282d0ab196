"""The partner store: a re-run updates outcomes and duplicates nothing; it answers "what happened to txn X"."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.io.gcp.bigquery import WriteToBigQuery
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.partner.store import (
    FILES,
    ROWS,
    StoreOutcomes,
    UpsertRecordsFn,
    describe,
    file_history,
    find_rows,
    parse_store,
)

RUN_1, RUN_2 = "run-1111", "run-2222"
T1, T2 = "2026-11-21T09:00:00Z", "2026-11-21T09:00:00.250Z"  # T2 is later, though "." sorts before "Z" as text


def file_record(sha: str, name: str, file_id: str | None, run_id: str, at: str, *,
                problem: str | None = None, counts: tuple[int, int, int, int] = (0, 0, 0, 0)) -> dict[str, Any]:
    credited, rejected, already_credited, not_credited = counts
    return {"sha256": sha, "file_name": name, "partner_id": "ACME-BANK" if file_id else None, "file_id": file_id,
            "row_count": sum(counts), "received_at": "2026-11-21T08:59:00Z", "processed_at": at, "run_id": run_id,
            "answer": name.replace(".wbpf", ".exception.txt" if problem else ".feedback.wbpf"), "problem": problem,
            "archived_as": f"output/archive/{file_id or 'unread'}/{sha}.wbpf", "credited": credited,
            "rejected": rejected, "already_credited": already_credited, "not_credited": not_credited}


def row_record(file_id: str, sha: str, row_no: int, txn_id: str, outcome: str, run_id: str, at: str, *,
               reason: str = "", message: str = "", credited_from: str | None = None,
               batch_id: str | None = None) -> dict[str, Any]:
    return {"partner_id": "ACME-BANK", "file_id": file_id, "row_no": row_no, "file_name": f"{file_id}.wbpf",
            "sha256": sha, "txn_id": txn_id, "member_id": f"M{row_no:06d}", "points": str(10 * row_no),
            "outcome": outcome, "reason": reason, "message": message, "credited_from_file": credited_from,
            "batch_id": batch_id, "run_id": run_id, "processed_at": at}


A, C = "ACME-20261121-001", "ACME-20261122-001"
SHA_A, SHA_B, SHA_C = "aa" * 32, "bb" * 32, "cc" * 32

# Run 1: file A is read (row 2's credit fails, row 3 breaks a rule); stranger.wbpf is refused.
RUN_1_FILES = [file_record(SHA_A, f"{A}.wbpf", A, RUN_1, T1, counts=(1, 1, 0, 1)),
               file_record(SHA_B, "stranger.wbpf", None, RUN_1, T1, problem="unknown_partner")]
RUN_1_ROWS = [
    row_record(A, SHA_A, 1, "TX-1", "credited", RUN_1, T1, credited_from=A, batch_id="b1"),
    row_record(A, SHA_A, 2, "TX-2", "not_credited", RUN_1, T1, reason="delivery_failed", message="gave up after 6 attempt(s)",
               batch_id="b1"),
    row_record(A, SHA_A, 3, "TX-3", "rejected", RUN_1, T1, reason="bad_points", message="points '0' must be 1 or more"),
]
# Run 2: file A again (row 2 is credited now), and file C, whose row 1 repeats TX-2.
RUN_2_FILES = [file_record(SHA_A, f"{A}.wbpf", A, RUN_2, T2, counts=(2, 1, 0, 0)),
               file_record(SHA_C, f"{C}.wbpf", C, RUN_2, T2, counts=(0, 0, 1, 0))]
RUN_2_ROWS = [
    row_record(A, SHA_A, 1, "TX-1", "credited", RUN_2, T2, credited_from=A, batch_id="b7"),
    row_record(A, SHA_A, 2, "TX-2", "credited", RUN_2, T2, credited_from=A, batch_id="b7"),
    row_record(A, SHA_A, 3, "TX-3", "rejected", RUN_2, T2, reason="bad_points", message="points '0' must be 1 or more"),
    row_record(C, SHA_C, 1, "TX-2", "already_credited", RUN_2, T2, reason="credited_from_file", message=A,
               credited_from=A, batch_id="b8"),
]


def run_store(store: str, files: list[dict[str, Any]], rows: list[dict[str, Any]], **options: Any) -> dict[str, int]:
    """Runs StoreOutcomes in batch on the FnApiRunner; returns the store's counters."""
    p = TestPipeline(options=PipelineOptions(runner="FnApiRunner", **options))
    records = {"files": p | "Files" >> beam.Create(files, reshuffle=True),
               "rows": p | "Rows" >> beam.Create(rows, reshuffle=True)}
    _ = records | "Store" >> StoreOutcomes(store)
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("waybill"))["counters"]
    return {c.key.metric.name: c.committed for c in counters if c.key.metric.name.startswith("store_")}


def table(path: Path, name: str) -> list[dict[str, Any]]:
    """Every record of a store table, in key order."""
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(record) for record in db.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3")]


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """A store (in a folder that did not exist) after run 1 and then run 2."""
    path = tmp_path / "new-folder" / "store.sqlite"
    assert run_store(f"sqlite:{path}", RUN_1_FILES, RUN_1_ROWS) == {"store_partner_files": 2, "store_partner_rows": 3}
    assert run_store(f"sqlite:{path}", RUN_2_FILES, RUN_2_ROWS) == {"store_partner_files": 2, "store_partner_rows": 4}
    return path


def test_a_second_run_updates_the_outcomes_and_duplicates_nothing(stored: Path) -> None:
    # A once per run that answered it; the refused file from run 1; C from run 2.
    assert table(stored, "partner_files") == [RUN_1_FILES[0], RUN_2_FILES[0], RUN_1_FILES[1], RUN_2_FILES[1]]
    assert table(stored, "partner_rows") == RUN_2_ROWS  # run 1's three rows updated, file C's row added
    with closing(sqlite3.connect(stored)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_bundles_on_several_threads_store_every_record_once(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    rows = [row_record(A, SHA_A, n, f"TX-{n}", "credited", RUN_1, T1, credited_from=A) for n in range(1, 5001)]
    counters = run_store(f"sqlite:{path}", RUN_1_FILES, rows, direct_num_workers=4,
                         direct_running_mode="multi_threading")
    assert counters == {"store_partner_files": 2, "store_partner_rows": 5000}
    assert [record["row_no"] for record in table(path, "partner_rows")] == list(range(1, 5001))


def test_an_older_record_does_not_replace_a_newer_one(tmp_path: Path) -> None:
    # The records of run 2 and then those of run 1 (a replay of an old run), in one bundle.
    fn = UpsertRecordsFn(str(tmp_path / "store.sqlite"), ROWS)
    fn.setup()
    fn.start_bundle()
    for record in RUN_2_ROWS + RUN_1_ROWS:
        fn.process(record)
    fn.finish_bundle()
    assert table(tmp_path / "store.sqlite", "partner_rows") == RUN_2_ROWS


def test_a_record_without_the_fields_of_its_table_is_refused(tmp_path: Path) -> None:
    fn = UpsertRecordsFn(str(tmp_path / "store.sqlite"), FILES)
    fn.setup()
    fn.start_bundle()
    record = {**RUN_1_FILES[0], "status": "ok"}
    del record["answer"]
    with pytest.raises(ValueError, match=r"partner_files record .* FileRecord; missing \['answer'\], unexpected \['status'\]"):
        fn.process(record)


def test_find_rows_and_describe_say_what_happened_to_a_transaction(stored: Path) -> None:
    found = find_rows(str(stored), "TX-2")
    assert [(row["file_id"], row["row_no"], row["outcome"]) for row in found] == [
        (A, 2, "credited"), (C, 1, "already_credited")]
    assert (found[0]["received_at"], found[0]["answer"]) == ("2026-11-21T08:59:00Z", f"{A}.feedback.wbpf")
    assert describe(found) == (
        f"{A} row 2 (TX-2, M000002, 20 points): credited in batch b7 (run {RUN_2}, {T2})\n"
        f"{C} row 1 (TX-2, M000001, 10 points): already_credited from {A} in batch b8 (run {RUN_2}, {T2})")
    assert [row["file_id"] for row in find_rows(str(stored), "TX-2", file=f"{C}.wbpf")] == [C]
    assert [row["file_id"] for row in find_rows(str(stored), "TX-2", file=A)] == [A]
    assert describe(find_rows(str(stored), "TX-3")) == (
        f"{A} row 3 (TX-3, M000003, 30 points): rejected, bad_points: points '0' must be 1 or more (run {RUN_2}, {T2})")
    assert find_rows(str(stored), "TX-404") == []
    assert describe([]) == "no such row in the store"


def test_an_outcome_not_credited_says_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    run_store(f"sqlite:{path}", RUN_1_FILES, RUN_1_ROWS)
    assert describe(find_rows(str(path), "TX-2")) == (
        f"{A} row 2 (TX-2, M000002, 20 points): not_credited in batch b1, delivery_failed: gave up after 6 attempt(s) "
        f"(run {RUN_1}, {T1})")


def test_file_history_gives_the_latest_record_of_a_file(stored: Path) -> None:
    assert file_history(str(stored), A) == RUN_2_FILES[0]
    assert file_history(str(stored), f"{A}.wbpf") == RUN_2_FILES[0]
    assert file_history(str(stored), "stranger.wbpf") == RUN_1_FILES[1]
    assert file_history(str(stored), "ACME-19990101-001") is None


def test_asking_a_store_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no partner store at .*nothing.sqlite"):
        find_rows(str(tmp_path / "nothing.sqlite"), "TX-1")
    assert not (tmp_path / "nothing.sqlite").exists()


@pytest.mark.parametrize("uri", [
    "", "output/store.sqlite", "sqlite:", "sqlite:gs://bucket/store.sqlite", "postgres://host/db",
    "bigquery:", "bigquery:waybill-demo", "bigquery:p.partners", "bigquery:waybill-demo.my-dataset",
    "bigquery:waybill-demo.partners.partner_rows", "bigquery:Waybill-Demo.partners",
])
def test_a_store_in_another_form_is_refused_with_the_forms(uri: str) -> None:
    message = r"the store must be sqlite:<path> \(a local file\) or bigquery:<project>\.<dataset>, got "
    with pytest.raises(ValueError, match=message + repr(uri).replace(".", r"\.")):
        parse_store(uri)
    with pytest.raises(ValueError, match=message):
        StoreOutcomes(uri)


@pytest.mark.parametrize("uri", ["sqlite:output/store.sqlite", "sqlite:/var/lib/waybill/store.sqlite",
                                 "bigquery:waybill-demo.partners", "bigquery:example.com:waybill-demo.partner_store_2"])
def test_the_store_forms_are_accepted(uri: str) -> None:
    assert parse_store(uri) == uri


def test_the_tables_have_the_fields_of_the_records(stored: Path) -> None:
    with closing(sqlite3.connect(stored)) as db:
        columns = {name: [(c[1], c[3], c[5]) for c in db.execute(f"PRAGMA table_info({name})")]
                   for name in ("partner_files", "partner_rows")}
    # (name, not null, position in the primary key)
    assert columns["partner_files"] == [
        ("sha256", 1, 1), ("file_name", 1, 0), ("partner_id", 0, 0), ("file_id", 0, 0), ("row_count", 1, 0),
        ("received_at", 1, 0), ("processed_at", 1, 0), ("run_id", 1, 2), ("answer", 1, 0), ("problem", 0, 0),
        ("archived_as", 1, 0), ("credited", 1, 0), ("rejected", 1, 0), ("already_credited", 1, 0),
        ("not_credited", 1, 0)]
    assert columns["partner_rows"] == [
        ("partner_id", 1, 1), ("file_id", 1, 2), ("row_no", 1, 3), ("file_name", 1, 0), ("sha256", 1, 0),
        ("txn_id", 1, 0), ("member_id", 1, 0), ("points", 1, 0), ("outcome", 1, 0), ("reason", 1, 0),
        ("message", 1, 0), ("credited_from_file", 0, 0), ("batch_id", 0, 0), ("run_id", 1, 0),
        ("processed_at", 1, 0)]


ROWS_SCHEMA = [
    ("partner_id", "STRING", "REQUIRED"), ("file_id", "STRING", "REQUIRED"), ("row_no", "INTEGER", "REQUIRED"),
    ("file_name", "STRING", "REQUIRED"), ("sha256", "STRING", "REQUIRED"), ("txn_id", "STRING", "REQUIRED"),
    ("member_id", "STRING", "REQUIRED"), ("points", "STRING", "REQUIRED"), ("outcome", "STRING", "REQUIRED"),
    ("reason", "STRING", "REQUIRED"), ("message", "STRING", "REQUIRED"), ("credited_from_file", "STRING", "NULLABLE"),
    ("batch_id", "STRING", "NULLABLE"), ("run_id", "STRING", "REQUIRED"), ("processed_at", "TIMESTAMP", "REQUIRED"),
]


@pytest.mark.parametrize("streaming", [False, True])
def test_the_bigquery_store_builds_for_dataflow(streaming: bool) -> None:
    # Built offline as a Dataflow job (--dry_run): nothing is submitted and BigQuery is not called.
    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--project=waybill-demo", "--region=us-central1",
        "--temp_location=gs://waybill-test-bucket/tmp", *(["--streaming"] if streaming else [])])
    p = beam.Pipeline(options=options)
    store = StoreOutcomes("bigquery:waybill-demo.partners")
    _ = {"files": p | "Files" >> beam.Create(RUN_1_FILES), "rows": p | "Rows" >> beam.Create(RUN_1_ROWS)} | "Store" >> store
    job = p.run().job  # type: ignore[attr-defined]
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    write = "_StreamToBigQuery/StreamInsertRows" if streaming else "BigQueryBatchFileLoads/TriggerLoadJobsWithoutTempTables"
    assert {f"Store/StoreFiles/{write}", f"Store/StoreRows/{write}"} <= names
    files, rows = store.writers["files"], store.writers["rows"]
    assert isinstance(files, WriteToBigQuery) and isinstance(rows, WriteToBigQuery)
    assert [(w.table_reference.projectId, w.table_reference.datasetId, w.table_reference.tableId) for w in (files, rows)] == [
        ("waybill-demo", "partners", "partner_files"), ("waybill-demo", "partners", "partner_rows")]
    assert [(f["name"], f["type"], f["mode"]) for f in rows.schema["fields"]] == ROWS_SCHEMA
    assert (files.create_disposition, files.write_disposition) == ("CREATE_IF_NEEDED", "WRITE_APPEND")
