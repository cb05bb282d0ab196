"""The partner job's batch and concurrency options: their defaults, the target they make, and the
bounds the command line refuses with a one-line error."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pipeline.local.partner_cli import argument_parser, check_delivery_bounds, run
from pipeline.partner.job import points_target
from tests.paths import ROOT

REQUIRED = ["--inbox=/nowhere/inbox", "--partner_keys=/nowhere/keys.json", "--points_api=http://127.0.0.1:1/credits"]


def parsed(*extra: str) -> argparse.Namespace:
    options, _ = argument_parser().parse_known_args([*REQUIRED, *extra])
    return options


def test_defaults_adapt_between_2500_and_5000_rows_and_1_and_4_batches_in_flight() -> None:
    target = points_target(parsed())
    assert (target.min_batch, target.max_batch, target.min_concurrency, target.max_concurrency) == (2500, 5000, 1, 4)
    assert target.batch_endpoint


def test_the_concurrency_options_reach_the_target() -> None:
    target = points_target(parsed("--min_concurrency=2", "--max_concurrency=8"))
    assert (target.min_concurrency, target.max_concurrency) == (2, 8)


@pytest.mark.parametrize(("extra", "error"), [
    (["--min_batch=1000"], r"^--min_batch and --max_batch must be within 2500\.\.5000, got 1000 and 5000; "
                           r"give --allow_any_batch_bounds for bounds agreed with the points API$"),
    (["--max_batch=5001"], r"must be within 2500\.\.5000, got 2500 and 5001;"),
    (["--min_batch=4000", "--max_batch=3000"], r"^--min_batch and --max_batch must satisfy 1 <= min <= max, got 4000 and 3000$"),
    (["--allow_any_batch_bounds", "--min_batch=200", "--max_batch=100"], r"must satisfy 1 <= min <= max, got 200 and 100$"),
    (["--allow_any_batch_bounds", "--min_batch=0", "--max_batch=100"], r"must satisfy 1 <= min <= max, got 0 and 100$"),
    (["--min_concurrency=0"], r"^--min_concurrency and --max_concurrency must satisfy 1 <= min <= max <= 64, got 0 and 4$"),
    (["--max_concurrency=65"], r"must satisfy 1 <= min <= max <= 64, got 1 and 65$"),
    (["--min_concurrency=5"], r"must satisfy 1 <= min <= max <= 64, got 5 and 4$"),
])
def test_bounds_out_of_range_are_refused_before_anything_is_read(extra: list[str], error: str) -> None:
    # The key configuration does not exist: the bounds are checked first.
    with pytest.raises(ValueError, match=error):
        run([*REQUIRED, *extra])


@pytest.mark.parametrize("extra", [
    [],
    ["--min_batch=5000", "--max_batch=5000", "--min_concurrency=64", "--max_concurrency=64"],
    ["--allow_any_batch_bounds", "--min_batch=100", "--max_batch=20000"],
])
def test_bounds_in_range_are_accepted(extra: list[str]) -> None:
    check_delivery_bounds(parsed(*extra))


def test_the_command_line_prints_the_error_and_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.partner", *REQUIRED, "--max_batch=8000", "--runner=FnApiRunner"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --min_batch and --max_batch must be within 2500..5000, got 2500 and 8000; "
        "give --allow_any_batch_bounds for bounds agreed with the points API")
