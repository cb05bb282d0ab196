"""Each local run writes into a folder of its own and replaces ``--output_dir``'s contents only
once it completed, so a killed or failed run never destroys the previous run's output.

Layout under ``--output_dir``::

    supervision/ orders/ ... accounting.json   the last completed run's output
    .entries.json                              which entries that run wrote
    .run-<id>/                                 a run in progress (or one that was killed)
    .replaced-<id>/                            a completed run's predecessor, while switching

The switch, in order: the run's folder gets a ``COMPLETE`` marker listing its entries; then,
entry by entry, the previous run's entry moves aside into ``.replaced-<id>/`` and the new one
moves in; entries of the previous run that this run did not write move aside too (a folder
target that is no longer configured); ``.entries.json`` is replaced; what was moved aside is
deleted. Every step is a rename, and a switch cut short (a kill in the middle) is finished by
the next run before anything else, so ``--output_dir`` always ends as one run's complete output.

A run on a bounded input (files, synthetic traffic) replaces the previous output: a re-run
redoes everything, and a killed run's folder is deleted by the next run. A run that *continues*
(a Pub/Sub job: the messages earlier runs took are acknowledged and will not come again) starts
from the previous output: its folder begins with hard links to the previous run's files, and
with the files a killed continuing run left (of its writers' unfinished ``.temp*`` files, the
whole lines), so the output it switches in holds every earlier run's too. Its accounting checks
only the lines it added (:attr:`RunFolder.carried_lines`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from apache_beam.transforms.window import GlobalWindow

from pipeline.io.partitions import MAX_PARTITIONS, PARTITION_FOLDERS, partition_folder
from pipeline.local.accounting import file_lines

_LOGGER = logging.getLogger(__name__)

_RUN_PREFIX = ".run-"
_REPLACED_PREFIX = ".replaced-"
_ENTRIES = ".entries.json"
_COMPLETE = "COMPLETE"
_KEEP = "KEEP"  # marks the folder of a continuing run: kept, and carried on, if it does not complete
_CURRENT_VIEW = "current_view.sqlite"  # and its -wal, -shm
ACCOUNTING_FILE = "accounting.json"


@dataclass(frozen=True)
class RunFolder:
    """The folder one run writes into, under ``output_dir``."""

    output_dir: Path
    path: Path
    carried: frozenset[str]  # files (relative paths) of earlier runs carried in

    @classmethod
    def start(cls, output_dir: str, continues: bool = False) -> RunFolder:
        """Finishes an earlier run's interrupted switch, deals with what killed runs left, and
        makes a new run folder.

        Args:
            continues: the run continues the previous ones (see the module docstring).
        """
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{_RUN_PREFIX}{uuid.uuid4().hex[:12]}"
        _finish_interrupted_switches(root)
        path.mkdir()
        if continues:
            (path / _KEEP).touch()
            for name in _previous_entries(root):
                if name != ACCOUNTING_FILE:
                    _carry(root / name, path / name, copy=name.startswith(_CURRENT_VIEW))
        for run in sorted(root.glob(f"{_RUN_PREFIX}*")):
            if run == path:
                continue
            if not (run / _KEEP).exists():
                shutil.rmtree(run, ignore_errors=True)
            elif continues:
                _LOGGER.info("carrying the output of %s, a Pub/Sub run that did not complete, into this run", run)
                for entry in _entries(run):
                    if entry != ACCOUNTING_FILE and not entry.startswith(_CURRENT_VIEW):
                        _carry(run / entry, path / entry, copy=False)
                _salvage_unfinished_files(run, path)
                shutil.rmtree(run, ignore_errors=True)
            else:
                _LOGGER.warning("%s holds the output of a Pub/Sub run that did not complete; it is kept for the "
                                "next Pub/Sub run into this folder, or for you to remove", run)
        carried = frozenset(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file())
        return cls(root, path, carried)

    @functools.cached_property
    def carried_lines(self) -> dict[str, int]:
        """Folder (relative) -> lines in the ``*.jsonl`` files carried in from earlier runs
        (counted once: those files are never written again); a partition's files (``p<i>/``,
        see ``--partitions``) count for their output folder."""
        lines: dict[str, int] = {}
        for name in self.carried:
            if name.endswith(".jsonl"):
                parent = Path(name).parent
                folder = str(parent.parent if parent.match(PARTITION_FOLDERS) and parent.parent.parts else parent)
                lines[folder] = lines.get(folder, 0) + file_lines(self.path / name)
        return lines

    def new_files(self, folder: str) -> list[Path]:
        """The ``*.jsonl`` files of ``folder`` (relative) that this run wrote, in name order."""
        files = sorted((self.path / folder).glob("*.jsonl"))
        return [f for f in files if str(f.relative_to(self.path)) not in self.carried]

    def entries(self) -> list[str]:
        """The run's output entries (folders and files), by name."""
        return _entries(self.path)

    def keep_stranded_files(self, folder_targets: Iterable[str] = ()) -> int:
        """Moves into their folders the files the job left in ``.temp*`` folders; returns how many.

        Beam's ``WriteToFiles`` in streaming finalises a window's files before the timers that
        fire after a bounded input ends (the last waybill views, alerts, state changes, final
        statistics, what they deliver): those are written to complete files in the writer's
        ``.temp*`` folder and never moved. Once the job has finished nothing writes them any
        more, so each becomes ``<folder>/<folder name>-final-<its mtime ns>-<its temp name>.jsonl``.

        Every output's writer has its temp folder inside its own folder, except the one writer of
        all ``folder_targets``, whose temp folder is at the top: Beam names its files after
        ``abs(hash((destination, window)))`` (``fileio._create_writer``), which this process, the
        one that ran the job, computes for each folder target in the global window. A file no
        target owns stays where it is (and its folder's identity fails). A target's partition
        folders (``<folder>/p<i>``) are its too.
        """
        folders = [f for folder in folder_targets
                   for f in (folder, *(partition_folder(folder, i) for i in range(MAX_PARTITIONS)))]
        owners = {str(abs(hash((folder, GlobalWindow())))): folder for folder in folders}
        moved = 0
        for temp in sorted(p for p in self.path.rglob(".temp*") if p.is_dir()):
            for stranded in sorted(f for f in temp.iterdir() if f.is_file()):
                folder = temp.parent
                if folder == self.path:
                    owner = owners.get(stranded.name.split("_", 1)[0])
                    if owner is None:
                        _LOGGER.warning("%s: no folder target owns this unfinished file; it is left there", stranded)
                        continue
                    folder = self.path / owner
                    folder.mkdir(parents=True, exist_ok=True)
                name = f"{folder.name}-final-{stranded.stat().st_mtime_ns}-{stranded.name}.jsonl"
                os.replace(stranded, folder / name)
                moved += 1
            if not any(temp.iterdir()):
                temp.rmdir()
        return moved

    def switch(self) -> None:
        """Makes this run's output ``output_dir``'s: see the module docstring."""
        _atomic_write(self.path / _COMPLETE, json.dumps(self.entries()))
        _finish_switch(self.output_dir, self.path)

    def discard(self) -> None:
        """Deletes the run's folder (a run that failed before writing anything worth keeping)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _entries(run: Path) -> list[str]:
    """The output entries of a run folder: not its markers, not hidden temp folders."""
    return sorted(p.name for p in run.iterdir() if p.name not in (_COMPLETE, _KEEP) and not p.name.startswith("."))


def _previous_entries(root: Path) -> list[str]:
    """The entries the last completed run wrote (none before the first)."""
    return json.loads((root / _ENTRIES).read_text()) if (root / _ENTRIES).exists() else []


def _finish_interrupted_switches(root: Path) -> None:
    for run in sorted(root.glob(f"{_RUN_PREFIX}*")):
        if (run / _COMPLETE).exists():
            _LOGGER.info("finishing the interrupted switch of %s", run)
            _finish_switch(root, run)
    for replaced in root.glob(f"{_REPLACED_PREFIX}*"):
        shutil.rmtree(replaced, ignore_errors=True)


def _carry(source: Path, target: Path, copy: bool) -> None:
    """``source`` (a file, or a folder's files but unfinished ``.temp*`` ones) into ``target``:
    hard links (the files are never written again), or a copy with ``copy`` (the SQLite view)."""
    files = [source] if source.is_file() else [
        f for f in source.rglob("*")
        if f.is_file() and not any(part.startswith(".temp") for part in f.relative_to(source).parts)
    ]
    for file in files:
        destination = target if file == source else target / file.relative_to(source)
        if destination.exists():  # a killed run had carried the same file on: file names are unique
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copy2(file, destination)
        else:
            try:
                os.link(file, destination)
            except OSError:  # a file system without hard links
                shutil.copy2(file, destination)


def _salvage_unfinished_files(killed: Path, target: Path) -> None:
    """The complete lines of the files a killed run's writers had not finished (in ``.temp*``
    folders), into ``<folder>/<folder name>-killed-<mtime ns>-<temp name>.jsonl`` under ``target``.

    A writer writes each record then its newline, so every line that ends in one is whole; only
    a last line cut by the kill is left out. Each such record came from a message the killed
    run had taken (and acknowledged): it will not come again.
    """
    for temp in sorted(p for p in killed.rglob(".temp*") if p.is_dir()):
        if temp.parent == killed:  # the folder targets' writer: which target a file is for died with the run
            _LOGGER.warning("%s: the unfinished files of folder targets of a killed run cannot be placed; "
                            "left out: %s", killed, ", ".join(f.name for f in temp.iterdir()))
            continue
        folder = target / temp.parent.relative_to(killed)
        for unfinished in sorted(f for f in temp.iterdir() if f.is_file()):
            data = unfinished.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            if whole:
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{temp.parent.name}-killed-{unfinished.stat().st_mtime_ns}-{unfinished.name}.jsonl"
                (folder / name).write_bytes(whole)


def _finish_switch(root: Path, run: Path) -> None:
    new_entries: list[str] = json.loads((run / _COMPLETE).read_text())
    replaced = root / f"{_REPLACED_PREFIX}{run.name.removeprefix(_RUN_PREFIX)}"
    for name in sorted({*new_entries, *_previous_entries(root)}):
        incoming = run / name
        if name in new_entries and not incoming.exists():
            continue  # moved in before the interruption
        current = root / name
        if current.exists() or current.is_symlink():
            replaced.mkdir(exist_ok=True)
            os.replace(current, replaced / name)
        if incoming.exists():
            os.replace(incoming, current)
    _atomic_write(root / _ENTRIES, json.dumps(new_entries))
    shutil.rmtree(replaced, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, path)
