"""The progress line: its rate and time left, and when it is shown."""
from __future__ import annotations

import pytest

from pipeline.launcher import parse_options
from pipeline.local.accounting import Accounting
from pipeline.local.progress import InputRate, fitted, input_size, progress_line, shows_progress

COUNTS = ("events in   12,000 | pushed    4,000 | orders   3,500 | dead-lettered    240 | duplicates    360 | "
          "delivered       0")


def _counts(inputs: int) -> Accounting:
    return Accounting(inputs=inputs, pushed=4_000, orders=3_500, dead_lettered=240, duplicates=360,
                      dead_letter_kinds={})


def test_the_line_with_a_known_input_size_says_how_much_is_read_and_when_the_rest_will_be() -> None:
    # 48,000 events left at 1,500 a second: 32 s
    assert progress_line(_counts(12_000), 75.4, 1_500.0, 60_000) == (
        f"1:15 | 1,500 events/s | read 20% of 60,000, the rest in ~0:32 | {COUNTS}"
    )


def test_no_time_left_while_nothing_is_read_and_none_for_an_input_of_unknown_size() -> None:
    assert progress_line(_counts(12_000), 3_700.0, 0.0, 60_000) == f"1:01:40 | 0 events/s | read 20% of 60,000 | {COUNTS}"
    assert progress_line(_counts(12_000), 3_700.0, 800.0, None) == f"1:01:40 | 800 events/s | {COUNTS}"


def test_once_everything_is_read_the_line_says_so_instead_of_a_rate() -> None:
    assert progress_line(_counts(60_000), 50.0, 0.0, 60_000).startswith("0:50 | all 60,000 read | events in   60,000 |")


def test_the_rate_is_that_of_the_last_five_seconds() -> None:
    rate = InputRate()
    readings = [(0.0, 0), (1.0, 1_000), (2.0, 3_000), (6.0, 7_000), (7.0, 7_000), (12.0, 7_000)]
    # nothing yet; 1,000 in 1 s; 3,000 in 2 s; from 1 s on (the reading at 0 s is out of the window):
    # 6,000 in 5 s; from 2 s on: 4,000 in 5 s; from 7 s on: nothing read
    assert [rate.add(t, n) for t, n in readings] == [0.0, 1_000.0, 1_500.0, 1_200.0, 800.0, 0.0]


def test_on_a_terminal_the_line_is_cut_to_its_width() -> None:
    line = progress_line(_counts(12_000), 8.0, 1_500.0, 60_000)
    assert fitted(line, 80) == line[:79] and fitted(line, 300) == line


@pytest.mark.parametrize(("mode", "terminal", "shown"), [
    ("auto", True, True), ("auto", False, False),
    ("always", True, True), ("always", False, True),
    ("never", True, False), ("never", False, False),
])
def test_shown_on_a_terminal_and_elsewhere_only_when_asked(mode: str, terminal: bool, shown: bool) -> None:
    assert shows_progress(mode, terminal) is shown


def test_the_option_defaults_to_auto_and_refuses_other_modes() -> None:
    assert parse_options([]).progress == "auto"
    assert parse_options(["--progress=always"]).progress == "always"
    with pytest.raises(SystemExit):
        parse_options(["--progress=sometimes"])


def test_the_input_size_is_known_for_the_synthetic_source_only() -> None:
    assert input_size(parse_options(["--events=4000", "--days=3"])) == 12_000
    assert input_size(parse_options(["--source=file", f"--input={__file__}"])) is None
