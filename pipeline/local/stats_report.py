"""Reading the daily statistics back: a table of a day's latest figures, and a convergence plot.

``DIR/stats/*.jsonl`` holds every DailyStat pane the job wrote (JSON form, see
:mod:`pipeline.model.json_records`). The latest figure of each (day, metric, dimension, key) is
the record of highest :func:`pipeline.io.current_view.pane_rank` (final, then pane index, then
computed_at), whatever the file and line order.

Command line::

    python -m pipeline.local.stats_report --output_dir output [--day 2026-11-21] [--top 3] [--plot stats.png]

The plot shows, per metric, the total for the day against processing time (computed_at):
EARLY panes converging during the day, the ON_TIME pane at midnight, LATE corrections and
the final record, so a person sees when the figure became right.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable, Optional

from pipeline.io.current_view import figure_key, pane_rank
from pipeline.model.json_records import read_files, read_folder
from pipeline.stages.stats import COURIER_EVENTS, ORDER_EVENTS, TOTAL_DIMENSION

DAILY_STAT = "com.waybill.DailyStat"
STATS_DIR = "stats"
Stat = dict[str, Any]

# How each kind of pane (:func:`pane_kind`) is drawn: (label, marker, colour), here and in the day's report.
PANE_STYLES = {
    "EARLY": ("early", "o", "#1f77b4"),
    "ON_TIME": ("on time", "s", "#2ca02c"),
    "LATE": ("late correction", "^", "#ff7f0e"),
    "FINAL": ("final", "*", "#000000"),
}


def read_stats(output_dir: str | Path) -> list[Stat]:
    """Every DailyStat record under ``output_dir/stats/`` (files in name order), checked against the schema.

    Raises:
        ValueError: a line is not a DailyStat, naming the file and line.
    """
    return read_folder(Path(output_dir, STATS_DIR), DAILY_STAT)


def read_stat_files(paths: Iterable[Path]) -> list[Stat]:
    """Every DailyStat record in ``paths``, in that order, checked against the schema."""
    return read_files(paths, DAILY_STAT)


def latest(records: Iterable[Stat]) -> dict[tuple[str, str, str, str], Stat]:
    """The newest record of each (day, metric, dimension, key)."""
    newest: dict[tuple[str, str, str, str], Stat] = {}
    for record in records:
        key = figure_key(record)
        if key not in newest or pane_rank(record) > pane_rank(newest[key]):
            newest[key] = record
    return newest


def events_counted(records: Iterable[Stat]) -> int:
    """How many events the statistics counted, all days: the latest ``courier_events`` and
    ``order_events`` totals of each day, summed (what the accounting checks)."""
    return sum(stat["value"] for (_, metric, dimension, _), stat in latest(records).items()
               if metric in (COURIER_EVENTS, ORDER_EVENTS) and dimension == TOTAL_DIMENSION)


def latest_day(records: Iterable[Stat]) -> Optional[str]:
    """The most recent day that has figures, or None."""
    return max((record["day"] for record in records), default=None)


def pane_kind(record: Stat) -> str:
    """The kind of pane a record is, a key of :data:`PANE_STYLES`: ``FINAL`` for the final record
    (whatever its timing), else its timing (``EARLY``, ``ON_TIME`` or ``LATE``)."""
    return "FINAL" if record["is_final"] else record["timing"]


def _status(record: Stat) -> str:
    if record["is_final"]:
        return "final"
    return f"{record['timing'].lower().replace('_', '-')} #{record['pane_index']}"


def day_table(records: Iterable[Stat], day: Optional[str] = None, top: int = 3) -> str:
    """A printable table of ``day``'s latest figures (default: the latest day): per metric its
    total and status, then the ``top`` keys of each dimension.

    Example line: ``pickups  1,234  final  outlet: OUT-007 61, OUT-012 58, OUT-031 55``.
    """
    records = list(records)
    day = day or latest_day(records)
    figures = [stat for stat in latest(records).values() if stat["day"] == day]
    if not figures:
        return f"No daily statistics for {day}." if day else "No daily statistics yet."
    zones = sorted({stat["time_zone"] for stat in figures})
    metrics = sorted({stat["metric"] for stat in figures})
    lines = [f"Daily statistics for {day} ({', '.join(zones)}): latest figures", ""]
    width = max(len(metric) for metric in metrics)
    lines.append(f"  {'metric':<{width}}  {'total':>13}  {'status':<13}  top {top} per dimension")
    for metric in metrics:
        mine = [stat for stat in figures if stat["metric"] == metric]
        total = next((stat for stat in mine if stat["dimension"] == TOTAL_DIMENSION), None)
        value = f"{total['value']:,}" if total else "-"
        status = _status(total) if total else ""
        tops = []
        for dimension in sorted({stat["dimension"] for stat in mine} - {TOTAL_DIMENSION}):
            ranked = sorted(
                (stat for stat in mine if stat["dimension"] == dimension), key=lambda s: (-s["value"], s["key"])
            )
            tops.append(f"{dimension}: " + ", ".join(f"{stat['key']} {stat['value']:,}" for stat in ranked[:top]))
        lines.append(f"  {metric:<{width}}  {value:>13}  {status:<13}  {'; '.join(tops)}")
    return "\n".join(lines)


def convergence_table(records: Iterable[Stat], day: Optional[str] = None) -> str:
    """How ``day``'s totals (default: the latest day) came, pane by pane: the early results, the
    on-time one, the late corrections and the final figure; empty when every total came once,
    already final (a batch run).

    Example line: ``pickups  3 early: 57 → 402  on time 1,690  4 late: +33  final 1,723``.
    """
    records = list(records)
    day = day or latest_day(records)
    totals = sorted((s for s in records if s["day"] == day and s["dimension"] == TOTAL_DIMENSION), key=pane_rank)
    if not any(pane_kind(stat) in ("EARLY", "LATE") for stat in totals):
        return ""
    rows = []
    for metric in sorted({stat["metric"] for stat in totals}):
        panes = [stat for stat in totals if stat["metric"] == metric]
        early, on_time, late, final = ([stat["value"] for stat in panes if pane_kind(stat) == kind]
                                       for kind in ("EARLY", "ON_TIME", "LATE", "FINAL"))
        rows.append([metric,
                     f"{len(early)} early: {early[0]:,} → {early[-1]:,}" if early else "no early",
                     f"on time {on_time[0]:,}" if on_time else "no on-time",
                     f"{len(late)} late: {late[-1] - (on_time or early or [0])[-1]:+,}" if late else "no late",
                     f"final {final[-1]:,}" if final else "not final yet"])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [f"How the totals of {day} came, result by result (early, on time at midnight, late corrections, final)", ""]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def summary(output_dir: str | Path, day: Optional[str] = None, top: int = 3) -> str:
    """:func:`day_table` and :func:`convergence_table` of the files under ``output_dir`` (for the
    run command's closing report)."""
    records = read_stats(output_dir)
    return "\n\n".join(part for part in (day_table(records, day, top), convergence_table(records, day)) if part)


def plot_convergence(records: Iterable[Stat], out: str | Path, day: Optional[str] = None) -> Path:
    """Writes a PNG: one panel per metric, its total for ``day`` against computed_at, one
    marker per pane (early, on time, late correction, final). Returns the file written.

    Raises:
        ValueError: there are no totals for that day.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    day = day or latest_day(records)
    totals = [s for s in records if s["day"] == day and s["dimension"] == TOTAL_DIMENSION]
    if not totals:
        raise ValueError(f"no daily totals for {day!r} to plot; run the job first or pick another --day")
    metrics = sorted({stat["metric"] for stat in totals})
    figure, axes = plt.subplots(len(metrics), 1, sharex=True, figsize=(10, 2.2 * len(metrics) + 1), squeeze=False)
    for axis, metric in zip(axes[:, 0], metrics):
        panes = sorted((s for s in totals if s["metric"] == metric), key=pane_rank)
        axis.step([s["computed_at"] for s in panes], [s["value"] for s in panes], where="post", color="lightgray")
        for kind, (label, marker, colour) in PANE_STYLES.items():
            shown = [s for s in panes if pane_kind(s) == kind]
            if shown:
                axis.scatter([s["computed_at"] for s in shown], [s["value"] for s in shown],
                             marker=marker, color=colour, label=label, zorder=3, s=60 if kind == "FINAL" else 25)
        axis.set_ylabel(metric, rotation=0, ha="right", va="center")
        axis.grid(True, alpha=0.3)
    handles = {label: handle for ax in axes[:, 0] for handle, label in zip(*ax.get_legend_handles_labels())}
    axes[-1, 0].set_xlabel("computed_at (UTC)")
    figure.autofmt_xdate()
    figure.suptitle(f"Daily totals for {day} by processing time (computed_at)", x=0.02, y=0.99, ha="left")
    figure.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(0.02, 0.95), ncol=len(handles))
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    path = Path(out)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Show a day's latest daily statistics from a job's output folder.")
    parser.add_argument("--output_dir", required=True, help="the job's --output_dir (reads OUTPUT_DIR/stats/*.jsonl)")
    parser.add_argument("--day", default=None, help="the day, YYYY-MM-DD. Default: the latest day with figures.")
    parser.add_argument("--top", type=int, default=3, help="how many keys per dimension. Default: 3.")
    parser.add_argument("--plot", default=None, help="also write a PNG of the totals over processing time to this path.")
    args = parser.parse_args(argv)
    records = read_stats(args.output_dir)
    print(day_table(records, args.day, args.top))
    if args.plot:
        try:
            print("wrote", plot_convergence(records, args.plot, args.day))
        except ValueError as error:
            parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
