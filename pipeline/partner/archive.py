"""The archive of received partner files, and the mark of a file processed completely.

Every received file is kept unchanged (still encrypted) under ``<archive>/``; a file whose
every row has its final outcome (credited, rejected or already credited) gets a ``COMPLETE``
mark next to it, and a file with the same partner and file id is refused from then on::

    <archive>/ACME-BANK/ACME-20261121-001/9f2c...e1.wbpf    the file as received (name: its sha256)
    <archive>/ACME-BANK/ACME-20261121-001/COMPLETE          sha256 and answer of the complete run
    <archive>/_refused/77ab...04.wbpf                       a file refused before its id was known

Paths go through Beam's ``FileSystems``: local folders and ``gs://`` alike.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, BinaryIO, Callable, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

COMPLETE = "COMPLETE"
REFUSED = "_refused"
_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        for piece in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(piece)
    return digest.hexdigest()


def _folder(archive: str, partner_id: Optional[str], file_id: Optional[str]) -> str:
    if partner_id and file_id:
        return FileSystems.join(archive, _safe(partner_id), _safe(file_id))
    return FileSystems.join(archive, REFUSED)


def _safe(part: str) -> str:
    """A path part from an id a partner chose: no separators, no dot-names."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in part)
    return cleaned if cleaned.strip(".") else "_"


def write_whole(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` through a ``.part`` file renamed into place: a reader (or a later run)
    never sees half a file, even after a kill."""
    partial = f"{path}.part"
    with FileSystems.create(partial, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        write(out)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([partial], [path])


def archive_file(path: str, archive: str, sha256: str, partner_id: Optional[str], file_id: Optional[str]) -> str:
    """Copies the received file into the archive (once: a file already there is kept); returns its path."""
    target = FileSystems.join(_folder(archive, partner_id, file_id), f"{sha256}.wbpf")
    if not FileSystems.exists(target):
        def copy(out: BinaryIO) -> None:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                for piece in iter(lambda: stream.read(_CHUNK), b""):
                    out.write(piece)
        write_whole(target, copy)
    return target


def completed(archive: str, partner_id: str, file_id: str) -> Optional[dict[str, Any]]:
    """The ``COMPLETE`` mark of a file id (what it says), or None when it was never completed."""
    mark = FileSystems.join(_folder(archive, partner_id, file_id), COMPLETE)
    if not FileSystems.exists(mark):
        return None
    with FileSystems.open(mark, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        said: dict[str, Any] = json.loads(stream.read().decode("utf-8"))
    return said


def mark_complete(archive: str, partner_id: str, file_id: str, said: dict[str, Any]) -> None:
    """Writes the ``COMPLETE`` mark (after the file's answer is written)."""
    text = json.dumps(said, sort_keys=True).encode("utf-8")
    write_whole(FileSystems.join(_folder(archive, partner_id, file_id), COMPLETE), lambda out: out.write(text))
