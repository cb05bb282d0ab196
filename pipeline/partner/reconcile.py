"""What the points API holds: the look-up every row's outcome is settled with.

A POST can be applied and its answer lost (a 500 after applying, a connection cut, a timeout),
and a txn id may have been credited from another file. So no row's outcome is taken from the
delivery answers alone: for every valid row the points API is asked which keys it holds and
the file each was credited from (``POST <points API>/lookup``, ``{"keys": [...]}`` ->
``{"credits": {key: {"file_id": ...}}}``, signed like the credits), and

=========================================  ===================================================
the points API holds the key               the row is
=========================================  ===================================================
from this file (this run or an earlier)    ``credited``
from another file ``F``                    ``already_credited`` (from ``F``)
not at all                                 ``not_credited`` with the delivery's reason
cannot be asked within ``budget_s``        ``not_credited,unconfirmed``: sending it again in
                                           a new file is safe (same idempotency key)
=========================================  ===================================================

Example: chunk 2 of a file is applied, then the API answers 500 three times and the delivery
gives up. The look-up finds chunk 2's keys credited from this file: its rows say ``credited``,
and the feedback's totals equal what the API holds.
"""
from __future__ import annotations

import json
import random
import time
from datetime import datetime, timezone
from typing import Callable, Iterable, Optional

from pipeline.delivery.retries import RetryPolicy, Verdict
from pipeline.delivery.targets import DeliveryTarget, read_target_secrets
from pipeline.delivery.webhooks import WebhookClient, signed_headers

LOOKUP_PATH = "/lookup"
LOOKUP_KEYS = 5000  # keys per look-up request


class LookupFailed(Exception):
    """The points API could not be asked within the budget; ``str(e)`` says why."""


class CreditLookup:
    """Asks the points API (a batch-endpoint target) which keys it holds; call ``open`` on the worker.

    Args:
        target: the points API (its URL, signing secret reference and timeouts).
        budget_s: the time every look-up of one file may take, retries included.
        seed: seeds the retry jitter (tests).
    """

    def __init__(self, target: DeliveryTarget, budget_s: float, seed: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.target = target
        self.policy = RetryPolicy(max_attempts=1_000, base_delay_s=0.5, max_delay_s=10.0, max_total_s=budget_s)
        self.seed = seed
        self.sleep = sleep

    def open(self) -> None:
        self._secret = read_target_secrets(self.target).signing_secret
        self._client = WebhookClient()
        self._rng = random.Random(self.seed)

    def close(self) -> None:
        self._client.close()

    def held(self, keys: Iterable[str]) -> dict[str, str]:
        """``{key: file_id it was credited from}`` for the keys the API holds.

        Raises:
            LookupFailed: no answer within ``budget_s`` (or a refusal such as a 401).
        """
        wanted = sorted(set(keys))
        started = time.monotonic()
        found: dict[str, str] = {}
        for start in range(0, len(wanted), LOOKUP_KEYS):
            found.update(self._ask(wanted[start:start + LOOKUP_KEYS], started))
        return found

    def _ask(self, keys: list[str], started: float) -> dict[str, str]:
        url = self.target.address + LOOKUP_PATH
        text = json.dumps({"keys": keys})
        attempt = 0
        while True:
            attempt += 1
            headers = {"content-type": "application/json", **signed_headers(
                self._secret, f"lookup_{attempt}_{keys[0]}", text, datetime.now(timezone.utc))}
            result = self._client.post(url, text.encode("utf-8"), headers, self.target.connect_timeout_s,
                                       self.target.read_timeout_s, keep_body=True)
            if result.verdict is Verdict.DELIVERED:
                try:
                    credits = json.loads(result.body)["credits"]
                    return {key: str(credits[key]["file_id"]) for key in keys if key in credits}
                except (ValueError, KeyError, TypeError) as error:
                    raise LookupFailed(f"{url} answered a look-up with something else than "
                                       f"{{\"credits\": {{key: {{\"file_id\": ...}}}}}}: {error}") from error
            if result.verdict is not Verdict.RETRY:
                raise LookupFailed(f"{url} refused the look-up: {result.error}")
            delay = self.policy.next_delay(attempt, time.monotonic() - started, result.retry_after_s, self._rng)
            if delay is None:
                raise LookupFailed(f"{url} gave no look-up answer within {self.policy.max_total_s:g} s "
                                   f"({attempt} attempt(s)): {result.error}")
            self.sleep(delay)
