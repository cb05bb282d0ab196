"""Checks on a command line before anything is built: arguments no option knows, and the files
and folders the options name. Each failure is one ``ValueError`` line naming the option.

Example:

    >>> from pipeline.options import WaybillOptions
    >>> refuse_unknown(["--events=500", "--evnts=500"], WaybillOptions)
    Traceback (most recent call last):
    ...
    ValueError: unknown option --evnts=500 (did you mean --events?); --help lists them
"""
from __future__ import annotations

import difflib
import glob
import os
import tempfile
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipeline.io.sinks import is_local_path

# Options of ./run_local.sh itself, which it reads only as its first argument.
_SCRIPT_OPTIONS = ("--batch", "--pubsub", "--test")


def refuse_unknown(argv: Sequence[str], job_options: type[PipelineOptions]) -> None:
    """Raises ValueError naming every argument that neither ``job_options`` nor Beam's own
    options know, with the closest known option when there is one."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    beam_options = {str(c): c for c in PipelineOptions.__subclasses__() if c.__module__.startswith("apache_beam.")}
    for cls in [*beam_options.values(), job_options]:
        cls._add_argparse_args(parser)  # the parser Beam itself builds (PipelineOptions.get_all_options)
    _, unknown = parser.parse_known_args(list(argv))
    if not unknown:
        return
    known = [name for action in parser._actions for name in action.option_strings]
    described = []
    for argument in unknown:
        name = argument.split("=", 1)[0]
        if name in _SCRIPT_OPTIONS:
            described.append(f"{argument} (an option of ./run_local.sh: give it first)")
            continue
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.75) if name.startswith("--") else []
        described.append(f"{argument} (did you mean {closest[0]}?)" if closest else argument)
    raise ValueError(f"unknown option{'s' if len(described) > 1 else ''} {', '.join(described)}; --help lists them")


def check_input(flag: str, pattern: str, allow_empty: bool) -> None:
    """Raises ValueError when a local ``pattern`` names no file (a plain path that does not
    exist, or a glob that matches nothing, unless ``allow_empty``)."""
    if not is_local_path(pattern):
        return
    if not glob.has_magic(pattern):
        if not os.path.isfile(pattern):
            raise ValueError(f"{flag} {pattern}: no such file")
        return
    if not allow_empty and not any(os.path.isfile(p) for p in glob.iglob(pattern, recursive=True)):
        raise ValueError(f"{flag} {pattern} matches no file; --allow_empty_input runs on nothing")


def check_config_file(flag: str, path: str) -> None:
    """Raises ValueError when a configuration option holds JSON text instead of a path, or names
    a local file that does not exist."""
    if path.lstrip().startswith(("[", "{")):
        raise ValueError(f"{flag} takes the path of a JSON file, not JSON text: write the JSON to a file and pass its path")
    if is_local_path(path) and not os.path.isfile(path):
        raise ValueError(f"{flag} {path}: no such file")


def check_writable_folder(flag: str, folder: str) -> None:
    """Creates a local ``folder`` if needed and checks that a file can be written in it; raises
    ValueError naming the option and the reason otherwise."""
    if not is_local_path(folder):
        return
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {folder} cannot be written: {error.strerror or error}") from error
