"""The whole job on hostile input, in batch and in streaming: no input stops it, and every input line
ends in exactly one place.

The test counts by itself, from its input file and the output files, not from the job's counters:
a line is either dead-lettered by the stage that reads inputs (its dead letter names its file and
line), or an event whose event_id is in ``supervision/`` (courier) or ``orders/`` exactly once, or
a later copy of such an event (a duplicate, written nowhere).

Each run reads one file of ``WAYBILL_FUZZ_EXAMPLES`` lines (200 unless set; docs/inputs.md): the
examples of one hypothesis run with a fixed seed (one job run per example would be far too slow),
each with an event_id of its own, plus exact copies of about a tenth of them.
"""
from __future__ import annotations

import collections
import io
import json
import random
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model import schemas
from pipeline.model.dead_letter import INPUT_STAGES
from tests.unit.model import hostile_inputs as hostile

LINES = hostile.examples(200)
INPUT_STAGE_NAMES = {stage.value for stage in INPUT_STAGES}
PLACEHOLDER_ID = "fz-XXXXXX"  # replaced by fz-<line>, of the same length, in each generated line
OUTPUT_OF = {"courier": "supervision", "order": "orders"}


def run_job(input_path: Path, output_dir: Path, mode: list[str]) -> None:
    cli.run([f"--runner={LOCAL_RUNNER}", "--source=file", f"--input={input_path}", f"--output_dir={output_dir}", *mode])


def output_root(output_dir: Path) -> Path:
    """Where the run's output is: ``output_dir`` once switched in, else its one run folder."""
    if (output_dir / "accounting.json").exists():
        return output_dir
    (run_folder,) = output_dir.glob(".run-*")
    return run_folder


def read_records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_bytes().splitlines()]


def input_dead_letters(root: Path) -> list[dict[str, Any]]:
    return [d for d in read_records(root / "deadletter") if d["stage"] in INPUT_STAGE_NAMES]


def stream_of(line: bytes) -> str:
    """'courier' or 'order' for a line that is an accepted event's JSON object."""
    schema = json.loads(line)["schema"]
    return "courier" if schema.endswith("CourierEvent") else "order"


def check_every_line_ends_in_one_place(lines: list[bytes], input_path: Path, root: Path) -> None:
    dead_lines: collections.Counter[int] = collections.Counter()
    for letter in input_dead_letters(root):
        where, _, number = letter["source"].rpartition(":")
        assert where == f"file:{input_path}", letter
        dead_lines[int(number)] += 1
    assert max(dead_lines.values(), default=1) == 1, "a line dead-lettered twice"
    accepted: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for number, line in enumerate(lines, start=1):
        if number not in dead_lines:
            accepted[(stream_of(line), json.loads(line)["event_id"])].append(number)
    written = collections.Counter(
        (stream, record["event_id"]) for stream, folder in OUTPUT_OF.items() for record in read_records(root / folder)
    )
    assert written == collections.Counter(accepted.keys()), "every accepted event written once, nothing else"
    duplicates = sum(len(numbers) - 1 for numbers in accepted.values())
    assert sum(dead_lines.values()) + len(written) + duplicates == len(lines)


def hostile_file(count: int) -> list[bytes]:
    """``count`` lines: the examples of one hypothesis run of hostile lines, each given an event_id
    of its own, and exact copies of about a tenth of them, at fixed places."""
    examples: list[bytes] = []

    @settings(
        max_examples=count - count // 10, deadline=None, derandomize=True, database=None,
        phases=[Phase.generate], suppress_health_check=list(HealthCheck),
    )
    @given(hostile.hostile_lines(PLACEHOLDER_ID))
    def collect(line: bytes) -> None:
        examples.append(line.replace(PLACEHOLDER_ID.encode(), f"fz-{len(examples):06d}".encode()))

    collect()
    places = random.Random(7)
    lines = list(examples)
    while len(lines) < count:
        lines.insert(places.randrange(1, len(lines) + 1), places.choice(examples))
    return lines


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["batch", "streaming"])
def test_hostile_json_lines_through_the_whole_job(tmp_path: Path, mode: list[str]) -> None:
    lines = hostile_file(LINES)
    input_path = tmp_path / "hostile.jsonl"
    input_path.write_bytes(b"\n".join(lines) + b"\n")
    run_job(input_path, tmp_path / "out", mode)
    check_every_line_ends_in_one_place(lines, input_path, output_root(tmp_path / "out"))


def test_a_damaged_avro_container_loses_only_its_unreadable_stretches(tmp_path: Path) -> None:
    records = [hostile.courier_record(f"ev-{i:04d}") for i in range(800)]
    data = hostile.container(schemas.COURIER_EVENT, records)
    blocks = [(b.offset, b.size, b.num_records) for b in fastavro.block_reader(io.BytesIO(data))]
    firsts = [sum(count for _, _, count in blocks[:i]) for i in range(len(blocks))]
    # Block 2 loses its sync marker (blocks 2 and 3 are skipped); block 6's first record's
    # event_id claims to be longer than its block (block 6 alone is skipped).
    damaged = bytearray(data)
    damaged[blocks[2][0] + blocks[2][1] - 1] ^= 0xFF
    damaged[blocks[6][0] + 3] = 0x7E
    path = tmp_path / "damaged.avro"
    path.write_bytes(bytes(damaged))
    run_job(path, tmp_path / "out", [])
    root = output_root(tmp_path / "out")
    lost = {i for b in (2, 3, 6) for i in range(firsts[b], firsts[b] + blocks[b][2])}
    pushed = sorted(r["event_id"] for r in read_records(root / "supervision"))
    assert pushed == [r["event_id"] for i, r in enumerate(records) if i not in lost]
    stretches = sorted(
        (int(d["attributes"]["offset"]), int(d["attributes"]["skipped_bytes"]), d["attributes"].get("skipped_records"))
        for d in input_dead_letters(root)
    )
    assert stretches == [
        (blocks[2][0], blocks[2][1] + blocks[3][1], None),
        (blocks[6][0], blocks[6][1], str(blocks[6][2])),
    ]
    assert json.loads((root / "accounting.json").read_text())["inputs"] == len(records) - len(lost) + 2
