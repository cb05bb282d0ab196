"""Where pushes go: one :class:`DeliveryTarget` per receiver, read from a JSON configuration.

Example configuration (a list of objects; only ``target_id`` and ``url`` are required)::

    [
      {"target_id": "erp", "url": "https://erp.example.com/hooks/orders",
       "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
       "min_batch": 1, "max_batch": 50, "max_concurrency": 8,
       "retry": {"max_attempts": 6, "base_delay_s": 0.5, "max_delay_s": 30, "max_total_s": 120}},
      {"target_id": "loyalty", "url": "https://partner.example.com/credits", "batch_endpoint": true,
       "secret": "whsec_...", "min_batch": 2500, "max_batch": 5000, "read_timeout_s": 60}
    ]
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from pipeline.retry_policy import RetryPolicy

_TARGET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class DeliveryTarget:
    """One receiver and how to push to it.

    Args:
        target_id: a stable name (letters, digits, ``_.-``); used in receipts, dead letters and
            metric names.
        url: the endpoint (``http://`` or ``https://``); every message is POSTed to it.
        secret: the Standard Webhooks signing secret, ``whsec_<base64>``; None sends unsigned
            requests (only for internal receivers authenticated another way).
        batch_endpoint: False (default): one request per message, as Standard Webhooks defines,
            up to ``max_concurrency`` at once. True: one request per batch whose body is a JSON
            array of the messages' payloads, signed as one message.
        min_batch, max_batch: bounds of the adaptive batch size.
        initial_batch: the first batch size (default ``min_batch``).
        batch_step: the additive increase of the batch size (default a tenth of the range).
        slow_latency_s: a median response time above this shrinks the batches.
        max_concurrency: requests in flight at once to this target (per worker thread).
        connect_timeout_s, read_timeout_s: the ``requests`` timeouts of one attempt.
        retry: bounds on retries (attempts, backoff, total time).
        headers: extra headers on every request (for example an API key).
    """

    target_id: str
    url: str
    secret: Optional[str] = None
    batch_endpoint: bool = False
    min_batch: int = 1
    max_batch: int = 100
    initial_batch: Optional[int] = None
    batch_step: Optional[int] = None
    slow_latency_s: float = 1.0
    max_concurrency: int = 8
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TARGET_ID.match(self.target_id):
            raise ValueError(
                f"target_id must be 1-64 letters, digits or _.- (starting with a letter or digit), "
                f"got {self.target_id!r}"
            )
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"target {self.target_id}: url must start with http:// or https://, got {self.url!r}")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"target {self.target_id}: need 1 <= min_batch <= max_batch, got {self.min_batch} and {self.max_batch}"
            )
        if self.max_concurrency < 1:
            raise ValueError(f"target {self.target_id}: max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.secret is not None and not self.secret.startswith("whsec_"):
            raise ValueError(f"target {self.target_id}: secret must look like whsec_<base64>, got a value without it")


def target_from_config(obj: Mapping[str, Any]) -> DeliveryTarget:
    """A target from its JSON object (see the module example).

    Raises:
        ValueError: an unknown key or a bad value, naming the target and the key.
    """
    known = {f.name for f in dataclasses.fields(DeliveryTarget)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValueError(f"delivery target {obj.get('target_id')!r}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = dict(obj)
    if "retry" in values:
        values["retry"] = RetryPolicy(**values["retry"])
    return DeliveryTarget(**values)


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
