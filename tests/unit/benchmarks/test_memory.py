"""The memory benchmark's bookkeeping: what it holds while the job runs."""
from __future__ import annotations

import weakref
from typing import Any

import pytest
from apache_beam.testing.test_stream import TestStream

from benchmarks import memory
from benchmarks.memory import HandOver
from pipeline import graph


def test_a_hand_over_gives_its_value_once_and_keeps_no_reference_to_it() -> None:
    stream = TestStream()
    held = weakref.ref(stream)
    hand_over = HandOver(stream)
    del stream

    given = hand_over()
    assert given is held()
    del given
    assert held() is None
    with pytest.raises(RuntimeError, match="handed over already"):
        hand_over()


def test_while_the_job_runs_only_the_job_holds_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs: list[weakref.ref[Any]] = []

    class Running:
        def wait_until_finish(self) -> None:
            assert [held() for held in inputs] == [None]

    def launch(options: Any) -> Running:
        inputs.append(weakref.ref(graph.ReadSynthetic(None, 0)))  # the graph's read, dropped as a runner's copy is made
        return Running()

    monkeypatch.setattr(memory, "launch", launch)
    monkeypatch.setattr(memory, "graph_facts", lambda result, output_dir: {
        "balanced": True, "inputs": 0, "waybill_states": {},
    })
    figures = memory.measure(days=1, events_per_day=20)
    assert figures["messages"] == 20
