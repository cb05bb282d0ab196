"""A per-message webhook gets each ordering key's messages in order, through 429s and 500s,
while different keys go in parallel; and what that order costs."""
from __future__ import annotations

import statistics
import time
from collections import defaultdict

import pytest
from pytest_httpserver import HTTPServer

from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.delivery.targets import DeliveryTarget
from tests.unit.delivery.test_delivery import FAST_RETRY, SECRET_REF, Receiver, Reply, deliver

pytest_plugins = ["tests.unit.delivery.test_delivery"]


def keyed_requests(keys: int, per_key: int, ordered: bool = True) -> list[DeliveryRequest]:
    """``per_key`` messages of each of ``keys`` waybills, interleaved as they would arrive."""
    return [
        delivery_request("hook", f"WB{k}-{n}", {"event_id": f"WB{k}-{n}", "n": n})._replace(ordering_key=f"WB{k}" if ordered else "")
        for n in range(per_key) for k in range(keys)
    ]


def test_each_keys_messages_arrive_in_order_through_429s_and_500s(server: HTTPServer) -> None:
    def faults(event_id: str, attempt: int) -> Reply:
        n = int(event_id.rsplit("-", 1)[1])
        if attempt == 1 and n % 3 == 1:
            return Reply(429, {"Retry-After": "0"})
        if attempt == 1 and n % 4 == 2:
            return Reply(500)
        return Reply(200, delay_s=0.01)

    receiver = Receiver(server, "/hook", faults)
    target = DeliveryTarget("hook", receiver.url, SECRET_REF, min_batch=60, max_batch=60, max_concurrency=8, retry=FAST_RETRY)
    receipts, dead, _ = deliver([target], keyed_requests(keys=6, per_key=10))
    assert not dead and sum(len(r["delivered_ids"]) for r in receipts) == 60
    sent: dict[str, list[int]] = defaultdict(list)
    for hit in receiver.hits:  # every attempt, in the order the receiver got them
        key, n = hit.event_ids[0].rsplit("-", 1)
        sent[key].append(int(n))
    for key, numbers in sent.items():
        # a message is only sent once the one before it is delivered: attempts never go back
        assert numbers == sorted(numbers), (key, numbers)
    # ... while the keys went in parallel: the first round held one message of every key
    assert {h.event_ids[0].rsplit("-", 1)[1] for h in receiver.hits[:6]} == {"0"}


@pytest.mark.parametrize(("keys", "per_key"), [(6, 10), (30, 2)])
def test_the_cost_of_order(server: HTTPServer, keys: int, per_key: int) -> None:
    """60 messages, 0.05 s per answer, 8 in flight: ``keys`` waybills of ``per_key`` in order
    against no order, the median of 3 runs each after one to warm up (``-s`` prints the times)."""
    receiver = Receiver(server, "/hook", lambda event_id, attempt: Reply(200, delay_s=0.05))
    target = DeliveryTarget("hook", receiver.url, SECRET_REF, min_batch=60, max_batch=60, max_concurrency=8, retry=FAST_RETRY)
    deliver([target], keyed_requests(keys=keys, per_key=per_key))
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for ordered in (False, True) * 3:
        started = time.monotonic()
        receipts, _, _ = deliver([target], keyed_requests(keys=keys, per_key=per_key, ordered=ordered))
        seconds[ordered].append(time.monotonic() - started)
        assert sum(len(r["delivered_ids"]) for r in receipts) == 60
    unordered, in_order = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"\n{keys} waybills of {per_key}: unordered {unordered:.2f} s, in order per waybill {in_order:.2f} s")
    if per_key == 10:  # unordered: 60 / 8 in flight = 8 rounds of one answer; in order: 10 waves of 6
        assert in_order > unordered
