"""Who gets what: the delivery targets, the routing table and the subscriptions of a run, read
from the files the options name and checked against each other before the job starts.

Defaults (``pipeline/data/``): ``targets.json`` (local folders under --output_dir for the units
erp, wms, coldchain, customs and the example subscribers), ``routing.json`` and
``subscriptions.json``. A deployed job passes its own targets file (webhooks and topics; see
``pipeline/deploy/flex_template/targets.example.json``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.delivery.targets import DeliveryTarget, TargetKind, load_targets
from pipeline.fanout.routing import DEFAULT_ROUTING, RoutingTable, parse_routing_table
from pipeline.fanout.subscriptions import DEFAULT_CONFIG as DEFAULT_SUBSCRIPTIONS
from pipeline.fanout.subscriptions import Subscription, check_targets, load_subscriptions
from pipeline.io.sinks import is_local_path

DEFAULT_TARGETS = Path(__file__).resolve().parent / "data" / "targets.json"
__all__ = ["DEFAULT_ROUTING", "DEFAULT_SUBSCRIPTIONS", "DEFAULT_TARGETS", "DeliveryConfig", "read_text"]


def read_text(path: str) -> str:
    """A local or ``gs://`` file's text (UTF-8).

    Raises:
        ValueError: it cannot be read (missing, unreadable, not UTF-8), in one line.
    """
    try:
        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read: {error}") from error


@dataclass(frozen=True)
class DeliveryConfig:
    """The checked configuration: every unit, subscriber and the supervision target is configured."""

    targets: Mapping[str, DeliveryTarget]
    routes: RoutingTable
    subscriptions: tuple[Subscription, ...]
    supervision_target: Optional[str]

    @classmethod
    def read(
        cls, targets_path: str, routing_path: str, subscriptions_path: str, supervision_target: Optional[str],
        output_dir: str,
    ) -> DeliveryConfig:
        """Reads and checks the three files.

        Raises:
            ValueError: naming the file and what is wrong, e.g. a unit without a target, or a
                folder target with a gs:// --output_dir.
        """
        try:
            targets = load_targets(read_text(targets_path))
        except ValueError as error:
            raise ValueError(f"--delivery_targets {targets_path}: {error}") from error
        routes = parse_routing_table(read_text(routing_path), source=routing_path)
        subscriptions = load_subscriptions(read_text(subscriptions_path))
        known = sorted(targets)
        units = sorted({unit for units in routes.values() for unit in units} - set(targets))
        if units:
            raise ValueError(f"--routing_table {routing_path}: unit(s) {units} have no delivery target; "
                             f"configured targets: {known}")
        check_targets(subscriptions, targets)
        if supervision_target is not None and supervision_target not in targets:
            raise ValueError(f"--supervision_target {supervision_target!r} is not a configured target: {known}")
        folders = sorted(t.target_id for t in targets.values() if t.kind is TargetKind.FOLDER)
        if folders and not is_local_path(output_dir):
            raise ValueError(f"--delivery_targets {targets_path}: folder targets {folders} write under a local "
                             f"--output_dir, got {output_dir!r}; deploy with webhook or topic targets")
        return cls(targets, routes, subscriptions, supervision_target)
