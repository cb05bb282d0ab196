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

A killed run's own folder is deleted by the next run, except a Pub/Sub run's: the messages it
took are acknowledged, so its output is kept (and reported) for whoever needs it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

_RUN_PREFIX = ".run-"
_REPLACED_PREFIX = ".replaced-"
_ENTRIES = ".entries.json"
_COMPLETE = "COMPLETE"
_KEEP = "KEEP"  # marks the folder of a run whose output is kept if it does not complete


@dataclass(frozen=True)
class RunFolder:
    """The folder one run writes into, under ``output_dir``."""

    output_dir: Path
    path: Path

    @classmethod
    def start(cls, output_dir: str, keep_if_killed: bool = False) -> RunFolder:
        """Finishes an earlier run's interrupted switch, clears what killed runs left, and
        makes a new run folder.

        Args:
            keep_if_killed: a killed run's output is kept instead of deleted by the next run
                (a Pub/Sub run: what it took is acknowledged and will not come again).
        """
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        recover(root)
        path = root / f"{_RUN_PREFIX}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        if keep_if_killed:
            (path / _KEEP).touch()
        return cls(root, path)

    def entries(self) -> list[str]:
        """The run's output entries (folders and files), by name."""
        return sorted(p.name for p in self.path.iterdir() if p.name not in (_COMPLETE, _KEEP))

    def keep_stranded_files(self) -> int:
        """Moves into their folders the files the job left in ``.temp*`` folders; returns how many.

        Beam's ``WriteToFiles`` in streaming finalises a window's files before the timers that
        fire after a bounded input ends (the last waybill views, alerts, state changes, final
        statistics): those are written to complete files in the writer's ``.temp*`` folder and
        never moved. Once the job has finished nothing writes them any more, so each becomes
        ``<folder>/<folder name>-final-<its mtime ns>-<its temp name>.jsonl``.
        """
        moved = 0
        for temp in sorted(self.path.rglob(".temp*")):
            if not temp.is_dir():
                continue
            prefix = temp.parent.name
            for stranded in sorted(temp.iterdir()):
                if stranded.is_file():
                    os.replace(stranded, temp.parent / f"{prefix}-final-{stranded.stat().st_mtime_ns}-{stranded.name}.jsonl")
                    moved += 1
            shutil.rmtree(temp)
        return moved

    def switch(self) -> None:
        """Makes this run's output ``output_dir``'s: see the module docstring."""
        _atomic_write(self.path / _COMPLETE, json.dumps(self.entries()))
        _finish_switch(self.output_dir, self.path)

    def discard(self) -> None:
        """Deletes the run's folder (a run that failed before writing anything worth keeping)."""
        shutil.rmtree(self.path, ignore_errors=True)


def recover(root: Path) -> None:
    """Finishes switches cut short, deletes killed runs' folders (except kept ones) and leftovers."""
    for run in sorted(root.glob(f"{_RUN_PREFIX}*")):
        if (run / _COMPLETE).exists():
            _LOGGER.info("finishing the interrupted switch of %s", run)
            _finish_switch(root, run)
        elif (run / _KEEP).exists():
            _LOGGER.warning("%s holds the output of a Pub/Sub run that did not complete; it is kept: "
                            "remove it once you no longer need it", run)
        else:
            shutil.rmtree(run, ignore_errors=True)
    for replaced in root.glob(f"{_REPLACED_PREFIX}*"):
        shutil.rmtree(replaced, ignore_errors=True)


def kept_runs(root: str | Path) -> list[Path]:
    """Folders of Pub/Sub runs that did not complete, kept under ``root``."""
    return sorted(p for p in Path(root).glob(f"{_RUN_PREFIX}*") if (p / _KEEP).exists() and not (p / _COMPLETE).exists())


def _finish_switch(root: Path, run: Path) -> None:
    new_entries: list[str] = json.loads((run / _COMPLETE).read_text())
    replaced = root / f"{_REPLACED_PREFIX}{run.name.removeprefix(_RUN_PREFIX)}"
    previous = json.loads((root / _ENTRIES).read_text()) if (root / _ENTRIES).exists() else []
    for name in sorted({*new_entries, *previous}):
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
