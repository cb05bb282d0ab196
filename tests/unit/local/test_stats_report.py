"""stats_report: a day's latest figures from the pane history, and the convergence plot.

Fixture tests/fixtures/stats_report/stats/ (hand-written), for 2026-11-21 in Asia/Shanghai:
pickups total 3, 5 (early), 6 (on time), 7 (late), final 7, with the final record in the
first file; outlets OUT-001 5 (final), OUT-002 2, OUT-003 2; orders total 2, 4 (early,
pane 1 computed twice); merchants M-001 3, M-002 1; business code B2C 4. And one final
pickups total of 9 for 2026-11-20.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.local.stats_report import (
    convergence_table,
    day_table,
    latest,
    main,
    plot_convergence,
    read_stats,
    summary,
)
from tests.paths import FIXTURES

FIXTURE = FIXTURES / "stats_report"

TABLE_21 = """\
Daily statistics for 2026-11-21 (Asia/Shanghai): latest figures

  metric           total  status         top 2 per dimension
  orders               4  early #1       business_code: B2C 4; merchant: M-001 3, M-002 1
  pickups              7  final          outlet: OUT-001 5, OUT-002 2"""

CONVERGENCE_21 = """\
How the totals of 2026-11-21 came, result by result (early, on time at midnight, late corrections, final)

  orders   3 early: 2 → 4  no on-time  no late     not final yet
  pickups  2 early: 3 → 5  on time 6   1 late: +1  final 7"""


def test_latest_keeps_the_newest_pane_of_each_figure_whatever_the_line_order() -> None:
    newest = latest(read_stats(FIXTURE))
    pickups = newest[("2026-11-21", "pickups", "total", "all")]
    assert (pickups["value"], pickups["is_final"]) == (7, True)
    orders = newest[("2026-11-21", "orders", "total", "all")]
    assert (orders["pane_index"], orders["computed_at"].isoformat()) == (1, "2026-11-21T02:00:11+00:00")
    assert len(newest) == 9  # 8 figures of the 21st, 1 of the 20th


def test_table_of_the_latest_day_with_totals_and_top_keys() -> None:
    # OUT-002 and OUT-003 tie at 2: the key breaks the tie
    assert summary(FIXTURE, top=2) == TABLE_21 + "\n\n" + CONVERGENCE_21


def test_how_the_totals_came_is_left_out_when_every_total_came_once_final() -> None:
    finals = [record for record in read_stats(FIXTURE) if record["is_final"]]
    assert finals and convergence_table(finals) == ""


def test_table_of_an_earlier_day() -> None:
    assert summary(FIXTURE, day="2026-11-20").splitlines()[-1].split() == ["pickups", "9", "final"]


def test_table_without_figures_says_so(tmp_path: Path) -> None:
    assert day_table([]) == "No daily statistics yet."
    assert summary(FIXTURE, day="2026-01-01") == "No daily statistics for 2026-01-01."
    assert summary(tmp_path) == "No daily statistics yet."


def test_a_bad_line_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "stats-000000.jsonl").write_text('{"day": "2026-11-21"}\n')
    with pytest.raises(ValueError, match=r"stats-000000\.jsonl:1: not a DailyStat record: missing required field"):
        read_stats(tmp_path)


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_convergence(read_stats(FIXTURE), tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_day_without_totals_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no daily totals for '2026-01-01' to plot"):
        plot_convergence(read_stats(FIXTURE), tmp_path / "plot.png", day="2026-01-01")


def test_command_line_prints_the_table_and_writes_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "out.png"
    main(["--output_dir", str(FIXTURE), "--top", "2", "--plot", str(plot)])
    assert capsys.readouterr().out == f"{TABLE_21}\nwrote {plot}\n"
    assert plot.stat().st_size > 0
