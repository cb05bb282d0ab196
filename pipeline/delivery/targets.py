"""Where pushes go: one :class:`DeliveryTarget` per receiver, read from a JSON configuration.

A target is exactly one of three kinds, chosen by the key that names where it goes:

* ``url``: a webhook (HTTP POST, signed per Standard Webhooks), one request per message or, with
  ``batch_endpoint``, one per batch; its signing secret and secret headers are references
  (:mod:`pipeline.delivery.secret_refs`) that the workers read, never values in the file;
* ``topic``: a Pub/Sub topic ``projects/<p>/topics/<t>``; each message is published with the
  payload as data and the attributes ``event_id`` and ``target_id``;
* ``folder``: JSON Lines files under ``<output_dir>/<folder>/`` (local runs only), one payload
  a line.

A topic or folder target with ``partitions`` N is N queues (``<topic>-p<i>``, ``<folder>/p<i>``)
split by the messages' ordering key: one consumer per partition.

Example configuration (a list of objects)::

    [
      {"target_id": "erp", "url": "https://erp.example.com/hooks/orders",
       "secret_ref": "projects/waybill-prod/secrets/erp-webhook/versions/latest",
       "min_batch": 1, "max_batch": 50, "max_concurrency": 8,
       "retry": {"max_attempts": 6, "base_delay_s": 0.5, "max_delay_s": 30, "max_total_s": 120}},
      {"target_id": "loyalty", "url": "https://partner.example.com/credits", "batch_endpoint": true,
       "secret_ref": "env:WAYBILL_SECRET_LOYALTY", "secret_headers": {"X-Api-Key": "file:/etc/waybill/loyalty.key"},
       "min_batch": 2500, "max_batch": 5000, "min_concurrency": 1, "max_concurrency": 4, "read_timeout_s": 60},
      {"target_id": "wms", "topic": "projects/waybill-prod/topics/wms-orders",
       "min_batch": 10, "max_batch": 500, "publish_timeout_s": 10, "retry": {"max_attempts": 5}},
      {"target_id": "coldchain", "folder": "units/coldchain", "partitions": 4}
    ]
"""
from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from pipeline.delivery.retries import RetryPolicy
from pipeline.delivery.secret_refs import REFERENCE_FORMS, parse_ref, read_secret
from pipeline.io.partitions import MAX_PARTITIONS, partition, partition_folder, partition_topic

TARGET_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")
_FOLDER_PART = re.compile(r"^[A-Za-z0-9_.-]+$")
# Header names that carry credentials: their values belong in secret_headers, as references.
_CREDENTIAL_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password", re.IGNORECASE)


class TargetKind(str, enum.Enum):
    """What a target is, named by the configuration key that says where it goes."""

    WEBHOOK = "url"
    TOPIC = "topic"
    FOLDER = "folder"


# Keys every kind accepts, and the keys only one kind accepts (besides its own address key).
_COMMON_KEYS = frozenset({"target_id", "period_seconds"})
_BATCHING_KEYS = frozenset({"min_batch", "max_batch", "initial_batch", "batch_step", "slow_latency_s", "retry"})
_KIND_KEYS = {
    TargetKind.WEBHOOK: _BATCHING_KEYS | {
        "secret_ref", "secret_headers", "batch_endpoint", "min_concurrency", "max_concurrency", "connect_timeout_s",
        "read_timeout_s", "headers",
    },
    TargetKind.TOPIC: _BATCHING_KEYS | {"publish_timeout_s", "partitions"},
    TargetKind.FOLDER: frozenset({"partitions"}),
}


@dataclass(frozen=True)
class DeliveryTarget:
    """One receiver and how to push to it. Exactly one of ``url``, ``topic``, ``folder`` is set.

    Args:
        target_id: a stable name (letters, digits, ``_.-``); used in receipts, dead letters and
            metric names.
        url: a webhook endpoint (``http://`` or ``https://``); every message is POSTed to it.
        secret_ref: (url) where the Standard Webhooks signing secret (``whsec_<base64>``) is:
            ``env:<NAME>``, ``file:<path>`` or ``projects/<p>/secrets/<s>/versions/<v>``, read
            by each worker at setup; None sends unsigned requests (only for internal receivers
            authenticated another way).
        batch_endpoint: (url) False (default): one request per message, as Standard Webhooks
            defines, up to ``max_concurrency`` at once. True: one request per batch whose body
            is a JSON array of the messages' payloads, signed as one message; up to an adaptive
            number of batches (``min_concurrency``..``max_concurrency``) at once.
        min_batch, max_batch: bounds of the adaptive batch size (url, topic).
        initial_batch: the first batch size (default ``min_batch``).
        batch_step: the additive increase of the batch size (default a tenth of the range).
        slow_latency_s: a median response time above this shrinks the batches.
        min_concurrency: (url, batch_endpoint only) the fewest batches in flight at once; the
            number starts here and adapts as the batch size does.
        max_concurrency: (url) requests in flight at once to this target (per worker thread): a
            fixed number for one-per-message targets, the most for batch endpoints.
        connect_timeout_s, read_timeout_s: (url) the ``requests`` timeouts of one attempt.
        retry: bounds on retries (attempts, backoff, total time) (url, topic).
        headers: (url) extra headers on every request; not for credentials (names such as
            ``Authorization`` or ``X-Api-Key`` are refused: use ``secret_headers``).
        secret_headers: (url) ``{header name: secret reference}``: headers whose values the
            workers read like ``secret_ref`` (for example an API key).
        topic: a Pub/Sub topic, ``projects/<project>/topics/<name>``.
        publish_timeout_s: (topic) the deadline of one publish attempt.
        folder: a relative folder under the job's ``output_dir`` (local runs only), e.g.
            ``units/erp``; each payload becomes one line of a JSON Lines file there.
        partitions: (topic, folder) 1 (default): one queue. N: N queues, ``<topic>-p<i>`` or
            ``<folder>/p<i>``; a message goes to the partition of its ``ordering_key`` (its
            event id when it has none) by a stable hash (:mod:`pipeline.io.partitions`), so all
            of one shipment's or order's messages are in one partition, in order.
        period_seconds: None (default) delivers as messages come, in adaptive batches; a number
            delivers per period: the messages of each ``period_seconds`` of event time are held
            until the period is over, then sent together in event-time order (see
            :class:`pipeline.delivery.deliver.DeliverMessages`).
    """

    target_id: str
    url: Optional[str] = None
    secret_ref: Optional[str] = None
    batch_endpoint: bool = False
    min_batch: int = 1
    max_batch: int = 100
    initial_batch: Optional[int] = None
    batch_step: Optional[int] = None
    slow_latency_s: float = 1.0
    min_concurrency: int = 1
    max_concurrency: int = 8
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_headers: Mapping[str, str] = field(default_factory=dict)
    topic: Optional[str] = None
    publish_timeout_s: float = 10.0
    folder: Optional[str] = None
    partitions: int = 1
    period_seconds: Optional[int] = None

    def __post_init__(self) -> None:
        if not TARGET_ID_PATTERN.match(self.target_id):
            raise ValueError(
                f"target_id must be 1-64 letters, digits or _.- (starting with a letter or digit), "
                f"got {self.target_id!r}"
            )
        where = {kind: getattr(self, kind.value) for kind in TargetKind}
        chosen = [kind.value for kind, value in where.items() if value is not None]
        if len(chosen) != 1:
            got = " and ".join(chosen) if chosen else "none of them"
            raise ValueError(f"target {self.target_id}: set exactly one of url, topic, folder; got {got}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"target {self.target_id}: url must start with http:// or https://, got {self.url!r}")
        if self.topic is not None and not _TOPIC.match(self.topic):
            raise ValueError(f"target {self.target_id}: topic must be projects/<project>/topics/<name>, got {self.topic!r}")
        if self.folder is not None and not all(_FOLDER_PART.match(p) and p not in (".", "..") for p in self.folder.split("/")):
            raise ValueError(
                f"target {self.target_id}: folder must be a relative path of names (letters, digits, _.-) "
                f"joined by /, without . or .., e.g. units/erp; got {self.folder!r}"
            )
        if self.url is None and (self.secret_ref is not None or self.batch_endpoint or self.headers or self.secret_headers):
            raise ValueError(
                f"target {self.target_id}: secret_ref, secret_headers, batch_endpoint and headers apply only to url targets"
            )
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"target {self.target_id}: need 1 <= min_batch <= max_batch, got {self.min_batch} and {self.max_batch}"
            )
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError(
                f"target {self.target_id}: need 1 <= min_concurrency <= max_concurrency, "
                f"got {self.min_concurrency} and {self.max_concurrency}"
            )
        if self.min_concurrency != 1 and not self.batch_endpoint:
            raise ValueError(
                f"target {self.target_id}: min_concurrency applies only to batch_endpoint targets (the others send "
                f"max_concurrency requests at once), got {self.min_concurrency}"
            )
        if self.period_seconds is not None and not (type(self.period_seconds) is int and 1 <= self.period_seconds <= 86_400):
            raise ValueError(f"target {self.target_id}: period_seconds must be a whole number of seconds from 1 to 86400, "
                             f"got {self.period_seconds!r}")
        if not (type(self.partitions) is int and 1 <= self.partitions <= MAX_PARTITIONS):
            raise ValueError(f"target {self.target_id}: partitions must be a whole number from 1 to {MAX_PARTITIONS}, "
                             f"got {self.partitions!r}")
        if self.partitions > 1 and self.kind is TargetKind.WEBHOOK:
            raise ValueError(f"target {self.target_id}: partitions apply only to topic and folder targets")
        if self.publish_timeout_s <= 0:
            raise ValueError(f"target {self.target_id}: publish_timeout_s must be positive, got {self.publish_timeout_s}")
        if self.secret_ref is not None:
            parse_ref(self.secret_ref, f"target {self.target_id}: secret_ref")
        if not isinstance(self.secret_headers, Mapping):
            raise ValueError(f"target {self.target_id}: secret_headers is an object {{header name: secret reference}}")
        for name, ref in self.secret_headers.items():
            parse_ref(ref, f"target {self.target_id}: secret_headers[{name!r}]")
        credentials = sorted(name for name in self.headers if _CREDENTIAL_HEADER.search(name))
        if credentials:
            raise ValueError(
                f"target {self.target_id}: headers {credentials} carry credentials; give them in secret_headers "
                f"as references ({REFERENCE_FORMS})"
            )

    @property
    def kind(self) -> TargetKind:
        """Which of url, topic, folder the target is."""
        if self.topic is not None:
            return TargetKind.TOPIC
        if self.folder is not None:
            return TargetKind.FOLDER
        return TargetKind.WEBHOOK

    @property
    def address(self) -> str:
        """Where it goes, for messages: the url, the topic or the folder."""
        return self.url or self.topic or self.folder or ""

    def address_for(self, key: str) -> str:
        """Where a message with this ordering key (or, without one, this event id) goes: the
        target's address, or with ``partitions`` its partition of it.

        >>> DeliveryTarget("wms", topic="projects/p/topics/wms", partitions=4).address_for("ORD-1")
        'projects/p/topics/wms-p1'
        >>> DeliveryTarget("erp", folder="units/erp", partitions=4).address_for("ORD-1")
        'units/erp/p1'
        """
        if self.partitions == 1:
            return self.address
        index = partition(key, self.partitions)
        return partition_topic(self.address, index) if self.topic is not None else partition_folder(self.address, index)


def target_from_config(obj: Mapping[str, Any]) -> DeliveryTarget:
    """A target from its JSON object (see the module example).

    Raises:
        ValueError: a missing or doubled url/topic/folder, an inline ``secret``, an unknown key,
            a key of another kind of target, or a bad value; the message names the target and
            the key.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"a delivery target is a JSON object, got {obj!r}")
    name = repr(obj.get("target_id"))
    if "secret" in obj:
        raise ValueError(f"delivery target {name}: an inline secret is refused; give \"secret_ref\": {REFERENCE_FORMS}")
    kinds = [kind for kind in TargetKind if kind.value in obj]
    if len(kinds) != 1:
        got = "both " + " and ".join(k.value for k in kinds) if kinds else "none of them"
        raise ValueError(f"delivery target {name}: set exactly one of url, topic, folder; got {got}")
    kind = kinds[0]
    known = {f.name for f in dataclasses.fields(DeliveryTarget)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValueError(f"delivery target {name}: unknown key(s) {unknown}; known: {sorted(known)}")
    allowed = _COMMON_KEYS | _KIND_KEYS[kind] | {kind.value}
    misplaced = sorted(set(obj) - allowed)
    if misplaced:
        raise ValueError(
            f"delivery target {name}: key(s) {misplaced} do not apply to a {kind.value} target; "
            f"it takes {sorted(allowed)}"
        )
    values = dict(obj)
    if "retry" in values:
        try:
            values["retry"] = RetryPolicy(**values["retry"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"delivery target {name}: bad retry {values['retry']!r}: {error}") from error
    try:
        return DeliveryTarget(**values)
    except TypeError as error:  # a value of the wrong JSON type reached a comparison
        raise ValueError(f"delivery target {name}: a value has the wrong type: {error}") from error


def targets_by_id(targets: Iterable[DeliveryTarget]) -> dict[str, DeliveryTarget]:
    """``{target_id: target}``; raises ValueError on a repeated id."""
    by_id: dict[str, DeliveryTarget] = {}
    for target in targets:
        if target.target_id in by_id:
            raise ValueError(f"delivery target {target.target_id!r} is configured twice")
        by_id[target.target_id] = target
    return by_id


def load_targets(text: str) -> dict[str, DeliveryTarget]:
    """Targets from the text of a JSON configuration file (a list of target objects)."""
    objs = json.loads(text)
    if not isinstance(objs, list):
        raise ValueError(f"a delivery target configuration is a JSON list of objects, got {type(objs).__name__}")
    return targets_by_id(target_from_config(obj) for obj in objs)


@dataclass(frozen=True)
class TargetSecrets:
    """What a worker read for one webhook target: its signing secret and its secret headers."""

    signing_secret: Optional[str] = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def read_target_secrets(target: DeliveryTarget) -> TargetSecrets:
    """Reads the secrets ``target`` refers to (call it on the worker, in ``DoFn.setup``).

    Raises:
        ValueError: a secret that cannot be read, or a signing secret not of the form
            ``whsec_<base64>``; the message names the target and the reference, never a value.
    """
    signing = None
    if target.secret_ref is not None:
        what = f"target {target.target_id}: secret_ref"
        signing = read_secret(parse_ref(target.secret_ref, what), what)
        if not signing.startswith("whsec_"):
            raise ValueError(f"{what}: the secret at {target.secret_ref} must look like whsec_<base64>")
    headers = {}
    for name, ref in target.secret_headers.items():
        what = f"target {target.target_id}: secret_headers[{name!r}]"
        headers[name] = read_secret(parse_ref(ref, what), what)
    return TargetSecrets(signing, headers)
