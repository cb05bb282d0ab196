"""The report of the day: one self-contained HTML page of a local run's output (``report.html``).

It opens offline in any browser: CSS and SVG charts are inline, nothing is fetched. It shows the
run's accounting (the identities the command line printed), each daily total converging over
processing time, delivery health per target, the alerts, and the live waybills over event time.

Figures carry data attributes for tools, for example::

    <div class="metric" data-day="2026-11-21" data-metric="pickups" data-value="7" data-status="final">
    <tr class="target" data-target="erp" data-requested="450" data-delivered="450" ...>

Command line (rebuilds the page from an output folder, with its ``accounting.json`` if present)::

    python -m pipeline.local.day_report --output_dir output
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from zoneinfo import ZoneInfo

from pipeline.io.outputs import ALERTS_DIR, RECEIPTS_DIR, WAYBILL_STATES_DIR
from pipeline.io.partitions import PARTITION_FOLDERS
from pipeline.local.accounting import Accounting, from_json
from pipeline.local.run_folder import ACCOUNTING_FILE
from pipeline.local.stats_report import PANE_STYLES, latest, pane_kind, read_stats
from pipeline.local.waybill_report import live_counts
from pipeline.model import schemas
from pipeline.model.json_records import read_files
from pipeline.stages.lifecycle import WAYBILL_ALERT, WAYBILL_STATE_CHANGE
from pipeline.stages.stats import TOTAL_DIMENSION, TOTAL_KEY

REPORT_FILE = "report.html"
Record = dict[str, Any]
_LATEST_ALERTS = 10
_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 520, 150, 64, 16, 12, 30
_SYMBOLS = {"o": "\u25cf", "s": "\u25a0", "^": "\u25b2", "*": "\u2605"}  # the markers' shapes, for the legend
_STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}
.charts{display:flex;flex-wrap:wrap;gap:0 32px}h4{margin:10px 0 0}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;
white-space:nowrap}td.text:last-child{white-space:normal}
td:first-child,th:first-child,.text{text-align:left}.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}
svg{display:block;margin:4px 0 14px}svg text{font-size:11px;fill:#444}.legend span{margin-right:14px}
.note{color:#666}"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _n(value: float) -> str:
    return f"{value:,.0f}" if isinstance(value, int) or float(value).is_integer() else f"{value:,.1f}"


def _tick(value: float) -> str:
    """A short axis label: 950, 12.5k, 21.5M."""
    for size, unit in ((1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".removesuffix(".0") + unit
    return _n(value)


@dataclass(frozen=True)
class _Plot:
    """The scales of one chart: x from ``x0`` to ``x1`` (epoch seconds), y from 0 to ``y1``."""

    x0: float
    x1: float
    y1: float
    width: int = _WIDTH

    def x(self, value: float) -> float:
        return _LEFT + (value - self.x0) / ((self.x1 - self.x0) or 1) * (self.width - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _HEIGHT - _BOTTOM - value / (self.y1 or 1) * (_HEIGHT - _TOP - _BOTTOM)

    def line(self, points: list[tuple[float, float]], colour: str = "#999") -> str:
        """A step line through ``points``: each value holds until the next one."""
        path: list[str] = []
        for i, (x, y) in enumerate(points):
            if i:
                path.append(f"{self.x(x):.1f},{self.y(points[i - 1][1]):.1f}")
            path.append(f"{self.x(x):.1f},{self.y(y):.1f}")
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(path)}"/>'

    def svg(self, body: str, label: Callable[[float], str], caption: str, **data: Any) -> str:
        """The chart: axes with three ticks each, ``body`` on top, ``data`` as ``data-*`` attributes."""
        bottom, right = _HEIGHT - _BOTTOM, self.width - _RIGHT
        ticks = [f'<line x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
                 f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#888"/>']
        for share in (0, 0.5, 1):
            y, x = self.y(self.y1 * share), self.x(self.x0 + (self.x1 - self.x0) * share)
            anchor = ("start", "middle", "end")[int(share * 2)]
            value = self.y1 * share if self.y1 < 10 else round(self.y1 * share)
            ticks.append(f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_e(_tick(value))}</text>')
            ticks.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="{anchor}">'
                         f'{_e(label(self.x0 + (self.x1 - self.x0) * share))}</text>')
        ticks.append(f'<text x="{right}" y="{_HEIGHT - 2}" text-anchor="end">{_e(caption)}</text>')
        attributes = "".join(f' data-{name.replace("_", "-")}="{_e(value)}"' for name, value in data.items())
        return (f'<svg width="{self.width}" height="{_HEIGHT}" viewBox="0 0 {self.width} {_HEIGHT}"{attributes}>'
                f'{"".join(ticks)}{body}</svg>')


def _marker(shape: str, x: float, y: float, colour: str, title: str) -> str:
    """A pane's marker, drawn as ``plot_convergence`` draws it: o circle, s square, ^ triangle, * star."""
    if shape == "o":
        outline = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4"'
    elif shape == "s":
        outline = f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8"'
    else:
        corners = 3 if shape == "^" else 10
        radii = [5.0] if shape == "^" else [7.0, 3.0]
        points = [(x + radii[i % len(radii)] * math.sin(2 * math.pi * i / corners),
                   y - radii[i % len(radii)] * math.cos(2 * math.pi * i / corners)) for i in range(corners)]
        outline = f'<polygon points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in points)}"'
    return f'{outline} fill="{colour}"><title>{_e(title)}</title></{outline.split()[0][1:]}>'


def _time_label(zone: ZoneInfo, span_s: float) -> Callable[[float], str]:
    """Tick labels for a time axis of ``span_s`` seconds: 12-06 18:00, 18:00, 18:00:05 or 18:00:05.125."""
    shape = ("%m-%d %H:%M" if span_s > 86400 else "%H:%M" if span_s >= 600 else "%H:%M:%S" if span_s >= 10
             else "%H:%M:%S.%f")
    cut = -3 if shape.endswith("%f") else None  # milliseconds
    return lambda seconds: datetime.fromtimestamp(seconds, zone).strftime(shape)[:cut]


def header(accounting: Optional[Accounting], title: str) -> str:
    """The run's accounting: its verdict, the inputs' figures, and every identity with its sides."""
    if accounting is None:
        return f"<h1>{_e(title)}</h1><p class='bad'>No accounting for this output: its balance is unknown.</p>"
    a = accounting
    verdict = ("<p class='ok'>All identities hold: nothing lost, nothing counted twice.</p>" if a.balanced
               else "<p class='bad'>NOT BALANCED: an identity below does not hold.</p>")
    figures = [("inputs", a.inputs), ("pushed to supervision", a.pushed), ("orders accepted", a.orders),
               ("dead-lettered", a.dead_lettered), ("duplicates removed", a.duplicates)]
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{value:,}</td></tr>" for name, value in figures)
    rows += "".join(f"<tr><td>&nbsp; dead letters: {_e(kind)}</td><td>{count:,}</td></tr>"
                    for kind, count in a.dead_letter_kinds.items())
    identities = [("inputs = pushed + orders + dead-lettered + duplicates", a.inputs,
                   a.pushed + a.orders + a.dead_lettered + a.duplicates, a.inputs_balanced)]
    identities += [(c.states, c.left, c.right, c.holds) for c in a.checks]
    folders = [i for i in identities if i[0].endswith("lines = records written")]
    agree = sum(holds for *_, holds in folders)
    unchecked = "".join(f"<li>not checked: {_e(what)}</li>" for what in a.unchecked)
    folded = (f"<details{'' if agree == len(folders) else ' open'}><summary>Output folders: {agree} of {len(folders)} "
              f"hold as many lines as the job wrote there</summary>{_identities(folders)}</details>" if folders else "")
    return (f"<h1>{_e(title)}</h1><div id='accounting' data-balanced='{str(a.balanced).lower()}'>{verdict}"
            f"<table>{rows}</table>{_identities([i for i in identities if i not in folders])}<ul>{unchecked}</ul>"
            f"{folded}</div>")


def _identities(identities: list[tuple[str, int, int, bool]]) -> str:
    rows = "".join(
        f"<tr data-holds='{str(holds).lower()}'><td>{_e(states)}</td><td>{left:,}</td><td>{right:,}</td>"
        f"<td class='{'ok' if holds else 'bad'}'>{'holds' if holds else 'DOES NOT HOLD'}</td></tr>"
        for states, left, right, holds in identities)
    return f"<table><tr><th>identity</th><th>left</th><th>right</th><th></th></tr>{rows}</table>"


def convergence(stats: list[Record]) -> str:
    """Per day (the latest first), per metric: its total against computed_at, one marker per pane."""
    totals = [s for s in stats if s["dimension"] == TOTAL_DIMENSION]
    if not totals:
        return "<h2>Daily statistics</h2><p class='note' id='no-stats'>No daily statistics in this output.</p>"
    newest = latest(totals)
    legend = "".join(f"<span style='color:{colour}'>{_SYMBOLS[marker]} {_e(label)}</span>"
                     for label, marker, colour in PANE_STYLES.values())
    parts = ["<h2>Daily totals converging (processing time, UTC)</h2>", f"<p class='legend'>{legend}</p>"]
    for day in sorted({s["day"] for s in totals}, reverse=True):
        parts.append(f"<h3>{_e(day)} ({_e(totals[0]['time_zone'])})</h3><div class='charts'>")
        for metric in sorted({s["metric"] for s in totals if s["day"] == day}):
            panes = [s for s in totals if (s["day"], s["metric"]) == (day, metric)]
            parts.append(_metric(panes, newest[(day, metric, TOTAL_DIMENSION, TOTAL_KEY)]))
        parts.append("</div>")
    return "".join(parts)


def _metric(panes: list[Record], now: Record) -> str:
    """One metric's chart: a step line through its panes by computed_at, a marker per pane."""
    panes = sorted(panes, key=lambda s: s["computed_at"])
    times = [s["computed_at"].timestamp() for s in panes]
    plot = _Plot(min(times), max(times), max(max(s["value"] for s in panes), 1))
    body = [plot.line([(t, s["value"]) for t, s in zip(times, panes)])]
    for t, s in zip(times, panes):
        label, shape, colour = PANE_STYLES[pane_kind(s)]
        body.append(_marker(shape, plot.x(t), plot.y(s["value"]), colour,
                            f"{label}: {s['value']:,} at {s['computed_at'].isoformat()}"))
    status = PANE_STYLES[pane_kind(now)][0]
    return (f"<div class='metric' data-day='{_e(now['day'])}' data-metric='{_e(now['metric'])}' "
            f"data-value='{now['value']}' data-status='{_e(status)}'>"
            f"<h4>{_e(now['metric'])}: {now['value']:,} ({_e(status)})</h4>"
            + plot.svg("".join(body), _time_label(ZoneInfo("UTC"), plot.x1 - plot.x0), "computed_at") + "</div>")


def _percentile(values: list[int], share: float) -> int:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def deliveries(accounting: Optional[Accounting], receipts: list[Record]) -> str:
    """Per target: requested, delivered, retried and dead-lettered (the accounting's counters), and
    the latency of its batches from their receipts (first request to last answer)."""
    counted = accounting.deliveries if accounting else {}
    by_target: dict[str, list[Record]] = {}
    for receipt in receipts:
        by_target.setdefault(receipt["target_id"], []).append(receipt)
    targets = sorted({*counted, *by_target})
    if not targets:
        return "<h2>Delivery health</h2><p class='note'>No deliveries in this run.</p>"
    head = ("<tr><th>target</th><th>requested</th><th>delivered</th><th>retried</th><th>dead-lettered</th>"
            "<th>batches</th><th>median ms</th><th>p95 ms</th><th>max ms</th><th>max attempts</th></tr>")
    rows = []
    for target in targets:
        d, mine = counted.get(target), by_target.get(target, [])
        names = ("requested", "delivered", "retried", "dead-lettered")
        figures = dict(zip(names, (d.requested, d.delivered, d.retried, d.dead_lettered))) if d else {}
        latencies = [r["latency_ms"] for r in mine]
        timing = [len(mine), statistics.median(latencies), _percentile(latencies, 0.95), max(latencies),
                  max(r["attempts"] for r in mine)] if mine else ["-"] * 5
        attributes = "".join(f" data-{name}='{value}'" for name, value in figures.items())
        values = [*(figures.values() if d else ["-"] * len(names)), *timing]
        cells = "".join(f"<td>{v if isinstance(v, str) else _n(v)}</td>" for v in values)
        bad = " class='bad'" if d and not d.balanced else ""
        rows.append(f"<tr class='target' data-target='{_e(target)}'{attributes}><td{bad}>{_e(target)}</td>{cells}</tr>")
    without = [t for t in targets if t not in by_target]
    note = (f"Receipts (hence latency) cover {len(by_target)} of {len(targets)} targets; none for: "
            f"{_e(', '.join(without))}." if without else "Every target has receipts.")
    return (f"<h2>Delivery health</h2><table>{head}{''.join(rows)}</table><p class='note'>{note} Latency is per "
            "batch, from its first request to its last answer, retries included.</p>")


def alerts(records: list[Record]) -> str:
    """Alerts per kind (opened, closed) and the latest ones by event time."""
    if not records:
        return "<h2>Alerts</h2><p class='note'>No alerts in this output.</p>"
    counts = Counter((r["kind"], r["status"]) for r in records)
    rows = "".join(f"<tr class='alert-kind' data-kind='{_e(kind)}' data-open='{counts[(kind, 'OPEN')]}' "
                   f"data-closed='{counts[(kind, 'CLOSED')]}'><td>{_e(kind)}</td><td>{counts[(kind, 'OPEN')]:,}</td>"
                   f"<td>{counts[(kind, 'CLOSED')]:,}</td></tr>" for kind in sorted({k for k, _ in counts}))
    newest = sorted(records, key=lambda r: (r["event_time"], r["emitted_at"]), reverse=True)[:_LATEST_ALERTS]
    recent = "".join("<tr>" + _texts("td", r["event_time"].strftime("%Y-%m-%d %H:%M:%S"), r["kind"], r["status"],
                                     r["identification"]["waybill_no"], r["outlet_id"], r["message"]) + "</tr>"
                     for r in newest)
    head = _texts("th", "event time (UTC)", "kind", "status", "waybill", "outlet", "message")
    return (f"<h2>Alerts</h2><table><tr><th>kind</th><th>opened</th><th>closed</th></tr>{rows}</table>"
            f"<h3>The latest {len(newest)}</h3><table><tr>{head}</tr>{recent}</table>")


def _texts(tag: str, *values: Any) -> str:
    """Left-aligned cells."""
    return "".join(f"<{tag} class='text'>{_e(value)}</{tag}>" for value in values)


def live_waybills(changes: list[Record], time_zone: str) -> str:
    """Live waybills (opened, not retired yet) at every hour of event time, as a line."""
    title = f"<h2>Live waybills (event time, {_e(time_zone)})</h2>"
    times = [c["at"] for c in changes]
    if not times:
        return title + "<p class='note'>No waybill state changes in this output.</p>"
    zone = ZoneInfo(time_zone)
    start = min(times).astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(timezone.utc)
    hours = math.ceil((max(times) - start).total_seconds() / 3600) + 1
    instants = [start + timedelta(hours=h) for h in range(hours)]
    live = live_counts(changes, instants)
    points = [(i.timestamp(), n) for i, n in zip(instants, live)]
    plot = _Plot(points[0][0], points[-1][0], max(max(live), 1), width=2 * _WIDTH)
    dots = "".join(f'<circle cx="{plot.x(x):.1f}" cy="{plot.y(n):.1f}" r="2" fill="#1f77b4"><title>'
                   f'{_e(datetime.fromtimestamp(x, zone).strftime("%Y-%m-%d %H:%M"))}: {n:,} live</title></circle>'
                   for x, n in points)
    line = " ".join(f"{plot.x(x):.1f},{plot.y(n):.1f}" for x, n in points)
    body = f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{line}"/>{dots}'
    chart = plot.svg(body, _time_label(zone, plot.x1 - plot.x0), "event time, hourly", peak=max(live), hours=hours)
    return f"{title}<div id='live-waybills'>{chart}</div>"


def build(accounting: Optional[Accounting], stats: list[Record], receipts: list[Record], alert_records: list[Record],
          changes: list[Record]) -> str:
    """The whole page, from the run's accounting and the records of its output."""
    time_zone = stats[0]["time_zone"] if stats else "UTC"
    days = sorted({s["day"] for s in stats})
    title = "Report of the day" + (f" {days[0]}" if len(days) == 1 else f"s {days[0]} to {days[-1]}" if days else "")
    body = (header(accounting, title) + convergence(stats) + deliveries(accounting, receipts) + alerts(alert_records)
            + live_waybills(changes, time_zone))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")


def _read(folder: Path, schema: str) -> list[Record]:
    """The records of an output folder and of its partitions' folders."""
    return read_files(sorted([*folder.glob("*.jsonl"), *folder.glob(f"{PARTITION_FOLDERS}/*.jsonl")]), schema)


def write_report(output_dir: str | Path, accounting: Optional[Accounting]) -> Path:
    """Writes ``output_dir/report.html`` from the files there; returns its path. The file is
    replaced, never written in place (it may be a hard link to an earlier run's report)."""
    root = Path(output_dir)
    page = build(accounting, read_stats(root), _read(root / RECEIPTS_DIR, schemas.DELIVERY_RECEIPT),
                 _read(root / ALERTS_DIR, WAYBILL_ALERT), _read(root / WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE))
    path, partial = root / REPORT_FILE, root / f"{REPORT_FILE}.partial"
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path


def read_accounting_file(output_dir: str | Path) -> Optional[Accounting]:
    """The accounting in ``output_dir/accounting.json``, or None when there is none."""
    path = Path(output_dir, ACCOUNTING_FILE)
    return from_json(json.loads(path.read_text())) if path.exists() else None


def main(argv: Optional[Iterable[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild report.html, the day's report, from a job's output folder.")
    parser.add_argument("--output_dir", required=True,
                        help="the job's --output_dir (reads its files, and its accounting.json if there)")
    args = parser.parse_args(None if argv is None else list(argv))
    print("wrote", write_report(args.output_dir, read_accounting_file(args.output_dir)))


if __name__ == "__main__":
    main()
