"""The job's options (one PipelineOptions subclass); every help says the format and the default."""
from __future__ import annotations

import argparse
import re
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.config import DEFAULT_ROUTING, DEFAULT_SUBSCRIPTIONS, DEFAULT_TARGETS
from pipeline.io import synthetic
from pipeline.io.partitions import MAX_PARTITIONS
from pipeline.model.catalog import DEFAULT_CATALOG
from pipeline.option_checks import check_config_file, check_input, check_writable_folder
from pipeline.stages.shipment import FULL_VIEWS, INCREMENTAL_VIEWS, VIEW_MODES

SOURCES = ("synthetic", "file", "pubsub")
PROGRESS_MODES = ("auto", "always", "never")
_View = TypeVar("_View", bound=PipelineOptions)
# A Google Cloud project id (the rule Beam's Pub/Sub transforms check too), then the name.
_PROJECT = r"[a-z][-a-z0-9:.]{4,61}[a-z0-9]"
_SUBSCRIPTION = re.compile(rf"^projects/{_PROJECT}/subscriptions/[^/\s]+$")
_TOPIC = re.compile(rf"^projects/{_PROJECT}/topics/[^/\s]+$")


class WaybillOptions(PipelineOptions):
    """Options of waybill-pipeline (Beam's own options, such as --runner, come on top)."""

    def view_as(self, cls: type[_View]) -> _View:
        """Beam's ``view_as``, each view made once.

        Beam 2.77 builds a new view at every call, an argparse parser over the class's options
        that parses every flag again, and calls it hundreds of times while it builds and runs
        this job's graph (mostly from type checks, ``typehints.is_consistent_with``). Views share
        their values (``_all_options``), so one view per class is the same as a new one each time.
        """
        views: dict[type, Any] = self.__dict__.setdefault("_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        view: _View = views[cls]
        return view

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--source", choices=SOURCES, default="synthetic",
            help="where events come from: 'synthetic' (an embedded, realistic day of traffic), "
            "'file' (--input) or 'pubsub' (--courier_subscription and --order_subscription; needs "
            "--streaming). Default: synthetic.",
        )
        parser.add_argument(
            "--courier_subscription", default=None,
            help="for --source=pubsub: the subscription of courier events, "
            "projects/<project>/subscriptions/<name> (Avro CourierEvent messages). No default.",
        )
        parser.add_argument(
            "--order_subscription", default=None,
            help="for --source=pubsub: the subscription of order events, "
            "projects/<project>/subscriptions/<name> (Avro OrderEvent messages). No default.",
        )
        parser.add_argument(
            "--supervision_topic", default=None,
            help="the topic the supervision push goes to, projects/<project>/topics/<name> "
            "(Avro SupervisionRecord messages, attributes event_id and schema). When given, "
            "supervision goes to the topic instead of files under --output_dir. Default: files.",
        )
        parser.add_argument(
            "--dead_letter_topic", default=None,
            help="the topic dead letters go to, projects/<project>/topics/<name> (Avro DeadLetter "
            "messages, attributes event_id when known, and schema). When given, dead letters go to "
            "the topic instead of files under --output_dir. Default: files.",
        )
        parser.add_argument(
            "--waybills_topic", default=None,
            help="the topic waybill lifecycle views go to, projects/<project>/topics/<name> (Avro "
            "WaybillView messages, attribute schema). When given, views go to the topic instead of "
            "files under --output_dir (waybills/). Default: files.",
        )
        parser.add_argument(
            "--waybill_views", choices=VIEW_MODES, default=FULL_VIEWS,
            help="the form of each new version of a waybill view: 'full' (every version a whole WaybillView, "
            "every scan of every parcel) or 'incremental' (a generation's first and final versions whole "
            "WaybillViews, the others WaybillViewChange records with only what changed, in waybill_changes/ or "
            "--waybill_changes_topic; docs/lifecycle.md says how a receiver rebuilds the view). Default: full.",
        )
        parser.add_argument(
            "--waybill_changes_topic", default=None,
            help="with --waybill_views=incremental, the topic waybill view changes go to, "
            "projects/<project>/topics/<name> (Avro WaybillViewChange messages, attribute schema). When given, "
            "changes go to the topic instead of files under --output_dir (waybill_changes/). Default: files.",
        )
        parser.add_argument(
            "--waybill_alerts_topic", default=None,
            help="the topic real-name and stuck-parcel alerts go to, projects/<project>/topics/<name> "
            "(Avro WaybillAlert messages, attribute schema). When given, alerts go to the topic instead "
            "of files under --output_dir (alerts/). Default: files.",
        )
        parser.add_argument(
            "--partitions", type=int, default=1,
            help="how many queues each per-waybill output is split into, 1 to 64, by a stable hash of the "
            "shipment's waybill id (one consumer per queue; a shipment always lands in the same one): "
            "topics <topic>-p0 .. <topic>-p<N-1> (each must exist) or folders <folder>/p0/ .. "
            "<folder>/p<N-1>/, for the supervision push and its real-name alerts, waybill views, waybill view "
            "changes and waybill alerts (not state changes, not delivery targets). Default: 1 (one queue, no suffix).",
        )
        parser.add_argument(
            "--input", default=None,
            help="for --source=file: a path or glob of JSON Lines files (*.jsonl, format in "
            "docs/inputs.md) or Avro container files (*.avro). No default.",
        )
        parser.add_argument(
            "--allow_empty_input", action="store_true",
            help="for --source=file: run when --input matches no file (else an error). Default: off.",
        )
        parser.add_argument(
            "--events", type=int, default=20_000,
            help="for --source=synthetic: how many messages to generate, duplicates and malformed "
            "ones included. Default: 20000.",
        )
        parser.add_argument("--seed", type=int, default=1, help="for --source=synthetic: random seed. Default: 1.")
        parser.add_argument(
            "--day", default=None,
            help="for --source=synthetic: the (last) day of traffic, YYYY-MM-DD. Default: yesterday in --time_zone.",
        )
        parser.add_argument(
            "--days", type=int, default=1,
            help="for --source=synthetic: how many consecutive days of traffic, ending with --day; "
            "--events is per day (each day seeded --seed + its index). Default: 1.",
        )
        parser.add_argument(
            "--time_zone", default="Asia/Shanghai",
            help="the business time zone (IANA name) that days are counted in. Default: Asia/Shanghai.",
        )
        parser.add_argument(
            "--output_dir", default="output",
            help="local folder or gs:// prefix for the outputs (supervision/, deadletter/, orders/); "
            "each run replaces them. Default: output.",
        )
        parser.add_argument(
            "--progress", choices=PROGRESS_MODES, default="auto",
            help="local runs: a progress line every second on stderr while the job runs (events read, "
            "outputs, events read a second and, for --source=synthetic, the time left to read them): "
            "'auto' on a terminal only, 'always' also into a file or pipe, 'never'. Default: auto.",
        )
        parser.add_argument(
            "--dedup_horizon_hours", type=float, default=24.0,
            help="how long (event time) an event_id is remembered to remove re-sent copies, in hours. "
            "Default: 24.",
        )
        parser.add_argument(
            "--flush_seconds", type=int, default=2,
            help="in streaming, how often output files are written, in seconds. Default: 2.",
        )
        parser.add_argument(
            "--stats_topic", default=None,
            help="the topic daily statistics go to, projects/<project>/topics/<name> (Avro DailyStat "
            "messages); when set, statistics go to the topic instead of files under --output_dir. "
            "Default: files.",
        )
        parser.add_argument(
            "--stock_topic", default=None,
            help="the topic the stock form goes to, projects/<project>/topics/<name> (Avro StockLevel messages: "
            "the current stock of each SKU after every movement); when set, instead of files under --output_dir. "
            "Default: files.",
        )
        parser.add_argument(
            "--replay_speed", type=float, default=0.0,
            help="for --source=synthetic in streaming on the local runner: replay the traffic in arrival order, "
            "this many seconds of arrival time per second, the watermark following the replayed clock, so a day "
            "shows early, on-time, late and final figures as a live one does (3600: a day in about 27 s, late "
            "arrivals included). 0: every message at once. Default: 0 (./run_local.sh's streaming run: 3600).",
        )
        parser.add_argument(
            "--early_results_seconds", type=int, default=5,
            help="in streaming, seconds of processing time between early (running) results of a "
            "day's statistics. Default: 5.",
        )
        parser.add_argument(
            "--allowed_lateness_hours", type=float, default=48.0,
            help="hours after a day ends (in --time_zone) during which late events still correct its "
            "statistics; later ones are dead-lettered (late_beyond_allowed_lateness). Default: 48.",
        )
        parser.add_argument(
            "--catalog", default=str(DEFAULT_CATALOG),
            help="JSON Lines product catalog (sku, initial_stock, reorder_threshold, reorder_quantity"
            "[, manufacturer_id, product_name]), local or gs://, for stock and replenishment. "
            "Default: the packaged pipeline/data/catalog.jsonl.",
        )
        parser.add_argument(
            "--catalog_reload_seconds", type=float, default=300.0,
            help="in streaming, how often (seconds) unit routing reads --catalog again, so a replaced "
            "catalog applies without a restart. Default: 300.",
        )
        parser.add_argument(
            "--delivery_targets", default=str(DEFAULT_TARGETS),
            help="JSON list of delivery targets, local or gs://: each a webhook (url, secret_ref), a Pub/Sub "
            "topic (topic) or a local folder under --output_dir (folder); format in docs/delivery.md. "
            "Default: the packaged pipeline/data/targets.json (folders units/<unit>/ and subscribers/<id>/).",
        )
        parser.add_argument(
            "--routing_table", default=str(DEFAULT_ROUTING),
            help='JSON {"routes": {"<business_code>": ["<target_id>", ...]}}: which units get an order. '
            "Default: the packaged pipeline/data/routing.json.",
        )
        parser.add_argument(
            "--subscriptions", default=str(DEFAULT_SUBSCRIPTIONS),
            help="JSON list of subscriptions (subscriber_id, target, format, filter, digest, authorisation); format in "
            "docs/delivery.md. Default: the packaged pipeline/data/subscriptions.json.",
        )
        parser.add_argument(
            "--subscriptions_reload_seconds", type=float, default=60.0,
            help="in streaming, how often (seconds) each worker reads --subscriptions again for the "
            "authorisations, so a revocation applies without a restart (docs/authorisation.md). Default: 60.",
        )
        parser.add_argument(
            "--supervision_target", default=None,
            help="a delivery target id (webhook or topic) the supervision push goes to through the "
            "delivery layer (receipts, retries) instead of --supervision_topic or files. Default: none.",
        )
        parser.add_argument(
            "--registration_deadline_minutes", type=float, default=30.0,
            help="minutes (event time) after a waybill's pickup by which the sender's real-name "
            "registration must exist, else a compliance alert is raised. Default: 30.",
        )
        parser.add_argument(
            "--stuck_after_hours", type=float, default=24.0,
            help="hours (event time) without a scan after which an undelivered parcel is reported "
            "stuck. Default: 24.",
        )
        parser.add_argument(
            "--retain_after_delivery_hours", type=float, default=24.0,
            help="hours (event time) after its last event that a fully delivered waybill's state is "
            "kept, so late scans still join its view; then its final view is written. Default: 24.",
        )
        parser.add_argument(
            "--expire_after_hours", type=float, default=168.0,
            help="hours (event time) after its last event that a waybill never fully delivered is kept; "
            "then its final view (EXPIRED) is written. Default: 168 (7 days).",
        )
        parser.add_argument(
            "--remember_closed_for_hours", type=float, default=168.0,
            help="hours (event time) after its final view that a waybill is remembered, so late events "
            "for it are dead-lettered (late_for_closed_waybill); later ones open a new state. "
            "Default: 168 (7 days).",
        )
        parser.add_argument(
            "--reorder_delay_seconds", type=float, default=1.0,
            help="seconds (processing time, streaming) each waybill's messages to a destination are held "
            "so that they leave in event-time order; a message later than that is sent at once, marked "
            "out_of_order; 0 holds nothing (messages are still numbered). Adds up to this much latency to "
            "the supervision, unit and subscriber pushes (docs/ordering.md). Default: 1.",
        )


def validate(options: WaybillOptions) -> None:
    """Raises ValueError naming the bad option and the fix."""
    if options.source == "file" and not options.input:
        raise ValueError("--source=file needs --input=PATH (a .jsonl or .avro file, or a glob)")
    _validate_pubsub(options)
    if options.events < 0:
        raise ValueError(f"--events must be 0 or more, got {options.events}")
    if options.supervision_topic and options.supervision_target:
        raise ValueError("give --supervision_topic or --supervision_target, not both: the supervision push goes to one place")
    if options.waybill_changes_topic and options.waybill_views != INCREMENTAL_VIEWS:
        raise ValueError("--waybill_changes_topic is written only with --waybill_views=incremental, "
                         f"got --waybill_views={options.waybill_views}")
    if not 1 <= options.partitions <= MAX_PARTITIONS:
        raise ValueError(f"--partitions must be 1 to {MAX_PARTITIONS}, got {options.partitions}")
    if options.days < 1:
        raise ValueError(f"--days must be 1 or more, got {options.days}")
    if options.dedup_horizon_hours <= 0:
        raise ValueError(f"--dedup_horizon_hours must be positive, got {options.dedup_horizon_hours}")
    for flag in ("flush_seconds", "early_results_seconds", "registration_deadline_minutes", "stuck_after_hours",
                 "retain_after_delivery_hours", "expire_after_hours", "remember_closed_for_hours",
                 "catalog_reload_seconds", "subscriptions_reload_seconds"):
        if getattr(options, flag) <= 0:
            raise ValueError(f"--{flag} must be positive, got {getattr(options, flag)}")
    if options.reorder_delay_seconds < 0:
        raise ValueError(f"--reorder_delay_seconds must be 0 or more, got {options.reorder_delay_seconds}")
    if options.replay_speed < 0:
        raise ValueError(f"--replay_speed must be 0 or more, got {options.replay_speed}")
    if options.allowed_lateness_hours < 0:
        raise ValueError(f"--allowed_lateness_hours must be 0 or more, got {options.allowed_lateness_hours}")
    try:
        ZoneInfo(options.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"--time_zone must be an IANA zone such as Asia/Shanghai, got {options.time_zone!r}") from error
    if options.day is not None:
        try:
            date.fromisoformat(options.day)
        except ValueError as error:
            raise ValueError(f"--day must be YYYY-MM-DD, got {options.day!r}") from error


def _validate_pubsub(options: WaybillOptions) -> None:
    subscriptions = {"--courier_subscription": options.courier_subscription, "--order_subscription": options.order_subscription}
    if options.source == "pubsub":
        missing = [flag for flag, value in subscriptions.items() if not value]
        if missing:
            raise ValueError(f"--source=pubsub needs {' and '.join(f'{flag}=projects/<p>/subscriptions/<s>' for flag in missing)}")
        if not options.view_as(StandardOptions).streaming:
            raise ValueError("--source=pubsub needs --streaming (Pub/Sub is read in streaming mode only)")
    for flag, value in subscriptions.items():
        if value and options.source != "pubsub":
            raise ValueError(f"{flag} is read only with --source=pubsub, got --source={options.source}")
        if value and not _SUBSCRIPTION.match(value):
            raise ValueError(f"{flag} must be projects/<project>/subscriptions/<name>, got {value!r}")
    topics = {
        "--supervision_topic": options.supervision_topic,
        "--dead_letter_topic": options.dead_letter_topic,
        "--stats_topic": options.stats_topic,
        "--stock_topic": options.stock_topic,
        "--waybills_topic": options.waybills_topic,
        "--waybill_changes_topic": options.waybill_changes_topic,
        "--waybill_alerts_topic": options.waybill_alerts_topic,
    }
    for flag, value in topics.items():
        if value is not None and not _TOPIC.match(value):
            raise ValueError(f"{flag} must be projects/<project>/topics/<name>, got {value!r}")


def check_paths(options: WaybillOptions) -> None:
    """Raises ValueError naming the option when a file it names is missing (a glob that matches
    nothing, without --allow_empty_input), a configuration option holds JSON text instead of a
    path, or --output_dir cannot be written (a local one is created if needed)."""
    if options.source == "file" and options.input:
        check_input("--input", options.input, options.allow_empty_input)
    for flag in ("catalog", "delivery_targets", "routing_table", "subscriptions"):
        check_config_file(f"--{flag}", getattr(options, flag))
    check_writable_folder("--output_dir", options.output_dir)


def traffic_profiles(options: WaybillOptions) -> list[synthetic.TrafficProfile]:
    """The synthetic traffic the options ask for: one profile per day, oldest first."""
    zone = ZoneInfo(options.time_zone)
    last = date.fromisoformat(options.day) if options.day else datetime.now(zone).date() - timedelta(days=1)
    return [
        synthetic.TrafficProfile(
            events=options.events, seed=options.seed + index, day=last - timedelta(days=options.days - 1 - index),
            time_zone=options.time_zone,
        )
        for index in range(options.days)
    ]
