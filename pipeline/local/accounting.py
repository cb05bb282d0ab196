"""Where every input went: live progress from the job's counters, and the final balance.

Every input ends in exactly one of: pushed to supervision, accepted as an order, rejected
(dead-lettered by decoding, validation or de-duplication), or removed as a duplicate. Later
branches are checked too, each by an identity (:class:`Check`):

* accepted events = counted in their day's statistics (read back from ``stats/``) + dead-lettered
  as later than the allowed lateness;
* courier events pushed = tracked in a waybill lifecycle + dead-lettered for a closed waybill;
* per subscriber: messages and digests made = authorised + refused (dead-lettered, ``not_authorised``);
* per delivery target: requests = delivered + dead-lettered;
* per output folder: its lines = the records the job wrote there (and, for ``supervision/``,
  ``orders/`` and ``deadletter/``, the events that ended there).

The run is balanced only when every identity holds; the command line exits non-zero otherwise.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from pipeline.fanout.authorise import AUTHORISED_PREFIX, REFUSED_PREFIX
from pipeline.io.partitions import PARTITION_FOLDERS
from pipeline.io.sinks import WRITTEN_PREFIX
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
class SubscriberPushes:
    """One subscriber's counters: every message or digest made is authorised or refused."""

    made: int = 0
    authorised: int = 0
    refused: int = 0


_SUBSCRIBER_COUNTERS = {"made": ("matched_", "digests_"), "authorised": (AUTHORISED_PREFIX,),
                        "refused": (REFUSED_PREFIX,)}


def read_subscriber_pushes(values: dict[str, int]) -> dict[str, SubscriberPushes]:
    """``{subscriber_id: SubscriberPushes}`` from the ``matched_``, ``digests_``,
    ``subscriber_authorised_`` and ``subscriber_refused_`` counters."""
    found: dict[str, dict[str, int]] = {}
    for name, count in values.items():
        for field, prefixes in _SUBSCRIBER_COUNTERS.items():
            for prefix in prefixes:
                if name.startswith(prefix):
                    counts = found.setdefault(name.removeprefix(prefix), {})
                    counts[field] = counts.get(field, 0) + count
    return {subscriber: SubscriberPushes(**counts) for subscriber, counts in sorted(found.items())}


@dataclasses.dataclass(frozen=True)
class Check:
    """One identity of the run: what it states, its two sides, and whether they agree."""

    states: str
    left: int
    right: int

    @property
    def holds(self) -> bool:
        return self.left == self.right


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
    subscriber_pushes: dict[str, SubscriberPushes] = dataclasses.field(default_factory=dict)
    lifecycle_events: int = 0  # courier events a waybill lifecycle took
    written: dict[str, int] = dataclasses.field(default_factory=dict)  # output folder -> records written
    checks: tuple[Check, ...] = ()  # the identities beyond the inputs' (see :func:`with_checks`)
    unchecked: tuple[str, ...] = ()  # identities this run could not check, and why

    @property
    def all_dead_letters(self) -> int:
        """What the dead-letter output holds."""
        return self.dead_lettered + self.dead_lettered_later

    @property
    def inputs_balanced(self) -> bool:
        """inputs = pushed + orders + dead-lettered + duplicates."""
        return self.inputs == self.pushed + self.orders + self.dead_lettered + self.duplicates

    @property
    def balanced(self) -> bool:
        """The inputs' identity and every other one (:attr:`checks`) hold."""
        return self.inputs_balanced and all(check.holds for check in self.checks)

    @property
    def late_for_statistics(self) -> int:
        return self.dead_letter_kinds.get("late_beyond_allowed_lateness", 0)

    @property
    def late_for_closed_waybills(self) -> int:
        return self.dead_letter_kinds.get("late_for_closed_waybill", 0)

    def progress_line(self) -> str:
        delivered = sum(d.delivered for d in self.deliveries.values())
        return (
            f"events in {self.inputs:>8,} | pushed {self.pushed:>8,} | orders {self.orders:>7,} | "
            f"dead-lettered {self.dead_lettered:>6,} | duplicates {self.duplicates:>6,} | delivered {delivered:>7,}"
        )


def from_json(data: dict[str, Any]) -> Accounting:
    """The accounting that ``accounting.json`` holds (``dataclasses.asdict`` of one, as a local run writes it)."""
    return Accounting(**{
        **data,
        "deliveries": {target: TargetDeliveries(**d) for target, d in data.get("deliveries", {}).items()},
        "subscriber_pushes": {s: SubscriberPushes(**p) for s, p in data.get("subscriber_pushes", {}).items()},
        "checks": tuple(Check(**check) for check in data.get("checks", ())),
        "unchecked": tuple(data.get("unchecked", ())),
    })


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
        subscriber_pushes=read_subscriber_pushes(values),
        lifecycle_events=values.get("lifecycle_events", 0),
        written={name.removeprefix(WRITTEN_PREFIX): count for name, count in sorted(values.items())
                 if name.startswith(WRITTEN_PREFIX)},
    )


def count_lines(folder: Path) -> int:
    """Lines in the JSON Lines files of an output folder and of its partitions' folders
    (``p<i>/``, see ``--partitions``); 0 if it has none."""
    files = [*folder.glob("*.jsonl"), *folder.glob(f"{PARTITION_FOLDERS}/*.jsonl")]
    return sum(file_lines(path) for path in files)


def file_lines(path: Path) -> int:
    """Lines in one file."""
    with path.open("rb") as stream:
        return sum(1 for _ in stream)


def with_checks(
    accounting: Accounting,
    files_dir: Optional[str | Path],
    folders: dict[str, str],
    target_folders: Optional[dict[str, str]] = None,
    counted_in_statistics: Optional[int] = None,
    carried_lines: Optional[dict[str, int]] = None,
) -> Accounting:
    """``accounting`` with its identities (see the module docstring) checked.

    Args:
        files_dir: the local folder the run wrote its files into; None when not local.
        folders: accounting attribute ('pushed', 'orders', 'all_dead_letters') -> its folder.
        target_folders: folder targets' ids -> their folder.
        counted_in_statistics: events counted in the daily statistics, read from the files;
            None when the statistics are not in files (that identity is then not checked).
        carried_lines: folder -> lines of earlier runs in ``files_dir`` (a Pub/Sub run carries
            the previous output on); only the lines beyond them are this run's.
    """
    a = accounting
    checks, unchecked = [], []
    statistics = "accepted events = counted in daily statistics + dead-lettered late"
    if counted_in_statistics is not None:
        checks.append(Check(statistics, a.pushed + a.orders, counted_in_statistics + a.late_for_statistics))
    else:
        unchecked.append(f"{statistics} (the statistics are not in local files)")
    checks.append(Check("courier events pushed = tracked in waybill lifecycles + dead-lettered for closed waybills",
                        a.pushed, a.lifecycle_events + a.late_for_closed_waybills))
    checks += [Check(f"subscriber {subscriber}: messages and digests made = authorised + refused",
                     s.made, s.authorised + s.refused) for subscriber, s in a.subscriber_pushes.items()]
    checks += [Check(f"delivery target {target}: requested = delivered + dead-lettered",
                     d.requested, d.delivered + d.dead_lettered) for target, d in a.deliveries.items()]
    if files_dir is None:
        unchecked.append("output folders against what the job wrote (the output is not local)")
    else:
        expected = dict(a.written)
        expected.update({folder: getattr(a, name) for name, folder in folders.items()})
        expected.update({folder: a.deliveries.get(target, TargetDeliveries()).delivered
                         for target, folder in (target_folders or {}).items()})
        carried = carried_lines or {}
        checks += [Check(f"{folder}/ lines = records written",
                         count_lines(Path(files_dir) / folder) - carried.get(folder, 0), count)
                   for folder, count in sorted(expected.items())]
    return dataclasses.replace(a, checks=tuple(checks), unchecked=tuple(unchecked))


def summary(accounting: Accounting, shown_dir: Optional[str] = None) -> str:
    """The closing report: the inputs' balance, dead letters by reason, deliveries per target, and
    every other identity (:func:`with_checks`) with its verdict.

    Args:
        shown_dir: the output folder as the user named it, for the heading of the folder checks.
    """
    a = accounting
    verdict = "balanced: nothing lost, nothing counted twice" if a.inputs_balanced else "NOT BALANCED"
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
    branch_checks = [c for c in a.checks if not c.states.endswith("lines = records written")]
    folder_checks = [c for c in a.checks if c.states.endswith("lines = records written")]
    if branch_checks:
        lines.append("Every branch")
        lines += [f"  {c.states}: {c.left:,} = {c.right:,} " + ("holds" if c.holds else "DOES NOT HOLD")
                  for c in branch_checks]
    lines += [f"  not checked: {what}" for what in a.unchecked]
    if folder_checks:
        lines.append(f"Output files under {shown_dir}/")
        for c in folder_checks:
            folder = c.states.split(" ", 1)[0]
            agrees = "agrees" if c.holds else f"DIFFERS from {c.right:,} written"
            lines.append(f"  {folder:<36}{c.left:>9,} lines ({agrees})")
    lines.append("All identities hold." if a.balanced else "NOT BALANCED: an identity above does not hold.")
    return "\n".join(lines)
