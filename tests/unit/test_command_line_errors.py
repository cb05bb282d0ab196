"""What a user can get wrong at the command line ends in one line naming the option, exit 2,
before anything is built: unknown options, missing files, an empty glob, an output folder that
cannot be written, JSON text where a path belongs; for the job and the other entry points."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.io import synthetic
from pipeline.launcher import parse_options
from pipeline.local import cli, partner_cli, publish


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--evnts=500"], r"^unknown option --evnts=500 \(did you mean --events\?\); --help lists them$"),
        (["--bogus_option=1", "--events=5"], r"^unknown option --bogus_option=1; --help lists them$"),
        (["--events", "5", "--batch"], r"--batch \(an option of ./run_local.sh: give it first\)"),
        (["--source=file", "--input=/nonexistent/day.jsonl"], r"^--input /nonexistent/day.jsonl: no such file$"),
        (["--delivery_targets=[{\"target_id\": \"erp\"}]"], r"^--delivery_targets takes the path of a JSON file, not JSON text"),
        (["--subscriptions=/nonexistent/subscriptions.json"], r"^--subscriptions /nonexistent/subscriptions.json: no such file$"),
        (["--output_dir=/proc/waybill-output"], r"^--output_dir /proc/waybill-output cannot be written: "),
        (["--waybill_changes_topic=projects/waybill-demo/topics/changes"],
         r"^--waybill_changes_topic is written only with --waybill_views=incremental, got --waybill_views=full$"),
    ],
)
def test_the_job_refuses_with_one_line_naming_the_option(argv: list[str], error: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=error):
        parse_options([f"--output_dir={tmp_path}", *argv])


@pytest.mark.parametrize("argv", [["--replay_speed=3600"], ["--replay_speed=3600", "--streaming", "--runner=DataflowRunner"]])
def test_a_replay_is_refused_off_the_local_streaming_runner(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^--replay_speed replays --source=synthetic with --streaming on the local runner"):
        cli.counted_run_options([f"--output_dir={tmp_path}", *argv])
    with pytest.raises(ValueError, match=r"^--replay_speed must be 0 or more, got -1.0$"):
        parse_options([f"--output_dir={tmp_path}", "--replay_speed=-1"])


def test_a_glob_that_matches_nothing_is_refused_unless_empty_input_is_allowed(tmp_path: Path) -> None:
    pattern = f"{tmp_path}/none/*.jsonl"
    with pytest.raises(ValueError, match=r"matches no file; --allow_empty_input runs on nothing$"):
        parse_options([f"--output_dir={tmp_path}", "--source=file", f"--input={pattern}"])
    assert parse_options([f"--output_dir={tmp_path}", "--source=file", f"--input={pattern}", "--allow_empty_input"]).input == pattern


def test_a_typo_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline", "--evnts=500", f"--output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: unknown option --evnts=500 (did you mean --events?); --help lists them"]
    assert list(tmp_path.iterdir()) == []  # nothing was run


def test_the_synthetic_writer_refuses_a_negative_count_and_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, error in ((["--events=-5", f"--out={tmp_path}/day.jsonl"], "--events must be 0 or more, got -5"),
                        (["--events=5", f"--out={tmp_path}/no/day.jsonl"], f"--out {tmp_path}/no/day.jsonl: no folder")):
        with pytest.raises(SystemExit) as exited:
            synthetic.main(argv)
        assert exited.value.code == 2 and error in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_publisher_refuses_a_missing_input_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        publish.parse_args(["--topic=projects/local-project/topics/courier", "--input=/nonexistent/day.jsonl"])
    assert exited.value.code == 2 and "--input /nonexistent/day.jsonl: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--evnts=3"], r"^unknown option --evnts=3; --help lists them$"),
        (["--partner_keys=/nonexistent/keys.json"], r"^--partner_keys /nonexistent/keys.json: no such file$"),
        (["--inbox=/nonexistent/inbox"], r"^--inbox /nonexistent/inbox: no such file or folder$"),
    ],
)
def test_the_partner_job_refuses_with_one_line_naming_the_option(argv: list[str], error: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text("{}")
    base = {"--inbox": str(tmp_path), "--partner_keys": str(keys), "--points_api": "http://127.0.0.1:9/credits"}
    given = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in base)
    extra = [a for a in argv if a.split("=", 1)[0] not in base]
    with pytest.raises(ValueError, match=error):
        partner_cli.run([f"{flag}={given.get(flag, value)}" for flag, value in base.items()] + extra
                        + [f"--output_dir={tmp_path}/out"])
