"""Garbage collection thresholds: raised for DirectRunner processes only."""
from __future__ import annotations

import gc
from typing import Any, Iterator

import pytest
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

from pipeline.local.runner.gc_thresholds import LOCAL_THRESHOLDS, collect_garbage_less_often


@pytest.fixture(autouse=True)
def stock_thresholds() -> Iterator[tuple[int, ...]]:
    """CPython's thresholds for the test; whatever it sets is undone afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


@pytest.mark.parametrize("runner", ["DataflowRunner", "FnApiRunner", "PrismRunner", "apache_beam.runners.dataflow.DataflowRunner"])
def test_other_runners_keep_the_thresholds(runner: str, stock_thresholds: tuple[int, ...]) -> None:
    assert collect_garbage_less_often(runner) is False
    assert gc.get_threshold() == stock_thresholds


@pytest.mark.parametrize("runner", ["DirectRunner", "BundleBasedDirectRunner", None, BundleBasedDirectRunner()])
def test_direct_runners_collect_less_often(runner: Any) -> None:
    assert collect_garbage_less_often(runner) is True
    assert gc.get_threshold() == LOCAL_THRESHOLDS
    assert collect_garbage_less_often(runner) is True  # idempotent
    assert gc.get_threshold() == LOCAL_THRESHOLDS
    assert gc.isenabled()
