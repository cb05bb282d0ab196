"""Where every input went: live progress from the job's counters, and the final balance.

Every input ends in exactly one of: pushed to supervision, accepted as an order, dead-lettered,
or removed as a duplicate. The summary checks the counters add up, and counts the lines of
the output files to show that the files agree.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from pipeline.dead_letter import METRICS_NAMESPACE


@dataclasses.dataclass(frozen=True)
class Accounting:
    """The job's counters; ``dead_letter_kinds`` maps error_kind to count."""

    inputs: int
    pushed: int
    orders: int
    dead_lettered: int
    duplicates: int
    dead_letter_kinds: dict[str, int]

    @property
    def balanced(self) -> bool:
        return self.inputs == self.pushed + self.orders + self.dead_lettered + self.duplicates

    def progress_line(self) -> str:
        return (
            f"events in {self.inputs:>8,} | pushed {self.pushed:>8,} | orders {self.orders:>7,} | "
            f"dead-lettered {self.dead_lettered:>6,} | duplicates {self.duplicates:>6,}"
        )


def read_accounting(result: PipelineResult) -> Accounting:
    """The counters of a running or finished job (committed values where the runner has them)."""
    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    values: dict[str, int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        values[counter.key.metric.name] = values.get(counter.key.metric.name, 0) + (value or 0)
    kinds = {
        name.removeprefix("dead_lettered_"): count
        for name, count in sorted(values.items())
        if name.startswith("dead_lettered_")
    }
    return Accounting(
        inputs=values.get("inputs", 0),
        pushed=values.get("pushed", 0),
        orders=values.get("unique_order", 0),
        dead_lettered=values.get("dead_lettered", 0),
        duplicates=values.get("duplicates", 0),
        dead_letter_kinds=kinds,
    )


def count_lines(folder: Path) -> int:
    """Lines in the JSON Lines files of an output folder (0 if it has none)."""
    return sum(sum(1 for _ in path.open("rb")) for path in sorted(folder.glob("*.jsonl")))


def summary(accounting: Accounting, output_dir: str, folders: dict[str, str]) -> str:
    """The closing report: the balance, dead letters by reason, and the files' line counts.

    Args:
        folders: counter name ('pushed', 'orders', 'dead_lettered') -> folder under output_dir.
    """
    a = accounting
    verdict = "balanced: nothing lost, nothing counted twice" if a.balanced else "NOT BALANCED"
    lines = [
        "",
        "Accounting",
        f"  inputs                  {a.inputs:>9,}",
        f"  pushed to supervision   {a.pushed:>9,}",
        f"  orders accepted         {a.orders:>9,}",
        f"  dead-lettered           {a.dead_lettered:>9,}",
        f"  duplicates removed      {a.duplicates:>9,}",
        f"  inputs = pushed + orders + dead-lettered + duplicates: {verdict}",
    ]
    if a.dead_letter_kinds:
        lines.append("Dead letters by reason")
        lines += [f"  {kind:<24}{count:>9,}" for kind, count in a.dead_letter_kinds.items()]
    if not output_dir.startswith("gs://"):
        lines.append(f"Output files under {output_dir}/")
        for name, folder in folders.items():
            in_files = count_lines(Path(output_dir) / folder)
            agrees = "agrees" if in_files == getattr(a, name) else f"DIFFERS from {getattr(a, name):,}"
            lines.append(f"  {folder + '/':<24}{in_files:>9,} lines ({agrees})")
    return "\n".join(lines)
