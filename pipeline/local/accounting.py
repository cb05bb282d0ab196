"""Where every input went: live progress from the job's counters, and the final balance.

Every input ends in exactly one of: pushed to supervision, accepted as an order, rejected
(dead-lettered by decoding or validation), or removed as a duplicate. Later stages may also
dead-letter a copy of an accepted event (too late for its day's statistics, for a closed
waybill); those are reported beside the balance, not in it. The summary checks the counters
add up, and counts the lines of the output files to show that the files agree.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from pipeline.io.sinks import is_local_path
from pipeline.model.dead_letter import METRICS_NAMESPACE


@dataclasses.dataclass(frozen=True)
class TargetDeliveries:
    """One delivery target's counters: every request ends delivered or dead-lettered."""

    requested: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    retried: int = 0

    @property
    def balanced(self) -> bool:
        return self.requested == self.delivered + self.dead_lettered


_DELIVERY_COUNTERS = {"requested": "delivery_requested_", "delivered": "delivery_delivered_",
                      "dead_lettered": "delivery_dead_lettered_", "retried": "delivery_retries_"}


def read_deliveries(values: dict[str, int]) -> dict[str, TargetDeliveries]:
    """``{target_id: TargetDeliveries}`` from the ``delivery_*_<target_id>`` counters."""
    found: dict[str, dict[str, int]] = {}
    for name, count in values.items():
        for field, prefix in _DELIVERY_COUNTERS.items():
            if name.startswith(prefix):
                found.setdefault(name.removeprefix(prefix), {})[field] = count
    return {target: TargetDeliveries(**counts) for target, counts in sorted(found.items())}


@dataclasses.dataclass(frozen=True)
class Accounting:
    """The job's counters; ``dead_letter_kinds`` maps error_kind to count (all stages)."""

    inputs: int
    pushed: int
    orders: int
    dead_lettered: int  # inputs rejected by decoding or validation
    duplicates: int
    dead_letter_kinds: dict[str, int]
    dead_lettered_later: int = 0  # copies of accepted events dead-lettered by later stages
    deliveries: dict[str, TargetDeliveries] = dataclasses.field(default_factory=dict)

    @property
    def all_dead_letters(self) -> int:
        """What the dead-letter output holds."""
        return self.dead_lettered + self.dead_lettered_later

    @property
    def balanced(self) -> bool:
        return self.inputs == self.pushed + self.orders + self.dead_lettered + self.duplicates

    def progress_line(self) -> str:
        delivered = sum(d.delivered for d in self.deliveries.values())
        return (
            f"events in {self.inputs:>8,} | pushed {self.pushed:>8,} | orders {self.orders:>7,} | "
            f"dead-lettered {self.dead_lettered:>6,} | duplicates {self.duplicates:>6,} | delivered {delivered:>7,}"
        )


def read_counters(result: PipelineResult, namespace: str = METRICS_NAMESPACE) -> dict[str, int]:
    """The job's counters (those of ``namespace``) by name, committed values where the runner has them."""
    counters = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    values: dict[str, int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        values[counter.key.metric.name] = values.get(counter.key.metric.name, 0) + (value or 0)
    return values


def read_accounting(result: PipelineResult) -> Accounting:
    """The accounting of a running or finished job."""
    values = read_counters(result)
    kinds = {
        name.removeprefix("dead_lettered_"): count
        for name, count in sorted(values.items())
        if name.startswith("dead_lettered_")
    }
    return Accounting(
        inputs=values.get("inputs", 0),
        pushed=values.get("pushed", 0),
        orders=values.get("unique_order", 0),
        dead_lettered=values.get("rejected_inputs", 0),
        duplicates=values.get("duplicates", 0),
        dead_letter_kinds=kinds,
        dead_lettered_later=values.get("dead_lettered", 0) - values.get("rejected_inputs", 0),
        deliveries=read_deliveries(values),
    )


def count_lines(folder: Path) -> int:
    """Lines in the JSON Lines files of an output folder (0 if it has none)."""
    return sum(sum(1 for _ in path.open("rb")) for path in sorted(folder.glob("*.jsonl")))


def summary(
    accounting: Accounting, output_dir: str, folders: dict[str, str], target_folders: Optional[dict[str, str]] = None
) -> str:
    """The closing report: the balance, dead letters by reason, deliveries per target, and the
    files' line counts.

    Args:
        folders: Accounting attribute ('pushed', 'orders', 'all_dead_letters') -> its folder
            under output_dir.
        target_folders: folder targets' ids -> their folder under output_dir.
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
    if a.dead_lettered_later:
        lines.append(f"  later dead letters of accepted events (statistics, lifecycle): {a.dead_lettered_later:,}")
    if a.dead_letter_kinds:
        lines.append("Dead letters by reason")
        lines += [f"  {kind:<24}{count:>9,}" for kind, count in a.dead_letter_kinds.items()]
    if a.deliveries:
        lines.append("Deliveries per target      requested  delivered  dead-lettered  retried")
        for target, d in a.deliveries.items():
            verdict = "balanced" if d.balanced else "NOT BALANCED"
            lines.append(f"  {target:<24}{d.requested:>9,}{d.delivered:>11,}{d.dead_lettered:>15,}{d.retried:>9,}  {verdict}")
    if is_local_path(output_dir):
        lines.append(f"Output files under {output_dir}/")
        expected = {folder: getattr(a, name) for name, folder in folders.items()}
        expected.update({folder: a.deliveries.get(target, TargetDeliveries()).delivered
                         for target, folder in (target_folders or {}).items()})
        for folder, count in expected.items():
            in_files = count_lines(Path(output_dir) / folder)
            agrees = "agrees" if in_files == count else f"DIFFERS from {count:,}"
            lines.append(f"  {folder + '/':<36}{in_files:>9,} lines ({agrees})")
    return "\n".join(lines)
