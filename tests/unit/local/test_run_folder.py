"""Run folders: a run's output replaces the previous one only once complete, and a switch cut
short is finished by the next run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from apache_beam.io import fileio
from apache_beam.transforms.window import GlobalWindow

from pipeline.local import run_folder
from pipeline.local.run_folder import RunFolder


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _completed_run(root: Path, orders: str, extra: dict[str, str] | None = None) -> None:
    folder = RunFolder.start(str(root))
    _write(folder.path / "orders" / "orders-1.jsonl", orders)
    _write(folder.path / "accounting.json", "{}")
    for name, text in (extra or {}).items():
        _write(folder.path / name, text)
    folder.switch()


def test_a_completed_run_replaces_the_previous_output_and_leaves_no_run_folder(tmp_path: Path) -> None:
    _completed_run(tmp_path, "first\n")
    _completed_run(tmp_path, "second\n")
    assert (tmp_path / "orders" / "orders-1.jsonl").read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entries.json", "accounting.json", "orders"]


def test_a_killed_run_leaves_the_previous_output_as_it_was_and_the_next_run_deletes_its_folder(tmp_path: Path) -> None:
    _completed_run(tmp_path, "good\n")
    killed = RunFolder.start(str(tmp_path))
    _write(killed.path / "orders" / "orders-2.jsonl", "half")  # killed here: no switch
    assert (tmp_path / "orders" / "orders-1.jsonl").read_text() == "good\n"
    RunFolder.start(str(tmp_path))
    assert not killed.path.exists()
    assert (tmp_path / "orders" / "orders-1.jsonl").read_text() == "good\n"


def test_a_continuing_run_starts_from_the_previous_output_and_what_a_killed_one_wrote(tmp_path: Path) -> None:
    # A Pub/Sub run completes, the next is killed after writing a file (and half of another,
    # still in its temp folder), the one after carries both runs' complete files on.
    first = RunFolder.start(str(tmp_path), continues=True)
    _write(first.path / "orders" / "orders-1.jsonl", "a\nb\n")
    _write(first.path / "accounting.json", "{}")
    first.switch()
    killed = RunFolder.start(str(tmp_path), continues=True)
    _write(killed.path / "orders" / "orders-2.jsonl", "c\n")
    _write(killed.path / "orders" / ".temp7" / "9_x", "c2\nhal")  # one whole line, one cut by the kill
    _write(killed.path / ".temp8" / "5_y", "{}\n")  # the folder targets' writer: its target died with the run
    assert sorted(tmp_path.glob(".run-*")) == [killed.path]

    third = RunFolder.start(str(tmp_path), continues=True)
    assert not killed.path.exists()
    assert third.carried_lines == {"orders": 4}  # not the cut last line of the unfinished file
    _write(third.path / "orders" / "orders-3.jsonl", "d\n")
    assert [f.name for f in third.new_files("orders")] == ["orders-3.jsonl"]
    third.switch()
    assert sorted(f.read_text() for f in (tmp_path / "orders").glob("*.jsonl")) == ["a\nb\n", "c\n", "c2\n", "d\n"]
    assert not list(tmp_path.rglob(".temp*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entries.json", "orders"]


def test_a_replacing_run_keeps_a_killed_continuing_runs_folder(tmp_path: Path) -> None:
    killed = RunFolder.start(str(tmp_path), continues=True)
    _write(killed.path / "orders" / "orders-2.jsonl", "taken and acknowledged\n")
    replacing = RunFolder.start(str(tmp_path))
    assert sorted(tmp_path.glob(".run-*")) == sorted([killed.path, replacing.path])


def test_an_entry_of_the_previous_run_that_this_run_does_not_write_goes_away(tmp_path: Path) -> None:
    # The previous configuration had a folder target under partners/; this run's has none.
    _completed_run(tmp_path, "a\n", {"partners/acme/acme-1.jsonl": "pushed\n"})
    _completed_run(tmp_path, "b\n")
    assert not (tmp_path / "partners").exists()


def test_files_beside_the_runs_entries_are_left_alone(tmp_path: Path) -> None:
    _write(tmp_path / "notes.txt", "mine")
    _completed_run(tmp_path, "a\n")
    _completed_run(tmp_path, "b\n")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("renames_before_kill", [0, 1, 2, 3])
def test_a_switch_cut_short_after_any_rename_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renames_before_kill: int
) -> None:
    _completed_run(tmp_path, "old\n", {"stale/x.jsonl": "old target\n"})
    folder = RunFolder.start(str(tmp_path))
    _write(folder.path / "orders" / "orders-1.jsonl", "new\n")
    _write(folder.path / "accounting.json", '{"run": "new"}')
    done = []
    real_replace = os.replace

    def replace_then_die(source: Path, target: Path) -> None:
        if ".partial" not in str(source):  # the markers' own atomic writes are not counted
            if len(done) == renames_before_kill:
                raise KeyboardInterrupt("killed")
            done.append(target)
        real_replace(source, target)

    monkeypatch.setattr(run_folder.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        folder.switch()
    monkeypatch.setattr(run_folder.os, "replace", real_replace)
    next_run = RunFolder.start(str(tmp_path))
    assert (tmp_path / "orders" / "orders-1.jsonl").read_text() == "new\n"
    assert json.loads((tmp_path / "accounting.json").read_text()) == {"run": "new"}
    assert not (tmp_path / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".entries.json", next_run.path.name]


def test_files_left_in_temp_folders_move_into_their_folder(tmp_path: Path) -> None:
    folder = RunFolder.start(str(tmp_path))
    _write(folder.path / "waybills" / "waybills-000000-1-00000-of-00001.jsonl", "{}\n")
    _write(folder.path / "waybills" / ".temp123" / "555_abc", "{}\n{}\n")
    _write(folder.path / "units" / "erp" / ".temp9" / "1_x", "{}\n")
    assert folder.keep_stranded_files() == 2
    names = sorted(p.name for p in (folder.path / "waybills").iterdir())
    assert names[0] == "waybills-000000-1-00000-of-00001.jsonl"
    assert names[1].startswith("waybills-final-") and names[1].endswith("-555_abc.jsonl")
    assert [p.name.startswith("erp-final-") for p in (folder.path / "units" / "erp").iterdir()] == [True]


def test_files_the_folder_targets_writer_left_at_the_top_go_to_their_target(tmp_path: Path) -> None:
    # The one writer of all folder targets has its temp folder at the top of the run folder;
    # Beam's own writer names the temp file (after its destination and window).
    folder = RunFolder.start(str(tmp_path))
    temp = folder.path / ".temp-targets"
    name, handle = fileio._create_writer(str(temp), ("units/erp", GlobalWindow()), fileio.TextSink().create_metadata)
    handle.write(b'{"order": 1}\n')
    handle.close()
    _write(temp / "123_unknown", "{}\n")  # no configured target owns it
    assert folder.keep_stranded_files(["units/erp", "units/wms"]) == 1
    (moved,) = (folder.path / "units" / "erp").iterdir()
    assert moved.name.startswith("erp-final-") and moved.read_text() == '{"order": 1}\n'
    assert (temp / "123_unknown").exists() and ".temp-targets" not in folder.entries()


def test_files_left_for_a_folder_targets_partition_go_to_that_partition(tmp_path: Path) -> None:
    folder = RunFolder.start(str(tmp_path))
    temp = folder.path / ".temp-targets"
    name, handle = fileio._create_writer(str(temp), ("units/erp/p3", GlobalWindow()), fileio.TextSink().create_metadata)
    handle.write(b'{"order": 1}\n')
    handle.close()
    assert folder.keep_stranded_files(["units/erp"]) == 1
    (moved,) = (folder.path / "units" / "erp" / "p3").iterdir()
    assert moved.name.startswith("p3-final-") and moved.read_text() == '{"order": 1}\n'
