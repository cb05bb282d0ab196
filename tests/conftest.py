"""Shared test setup: a marker per kind of test, the Pub/Sub emulator fixtures, and stock Beam for every test.

The kind is the folder: ``tests/unit`` (functions, DoFns, composites on ``TestPipeline``), ``tests/e2e``
(whole runs of the job and its tools), ``tests/emulator`` (against the Pub/Sub emulator, which the
tests start themselves). ``slow`` marks single tests that take long whatever their kind. The fast
loop is ``./run_local.sh --test -m "unit and not slow" -n 2``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

pytest_plugins = ["tests.pubsub_fixtures"]

TESTS = Path(__file__).resolve().parent
KINDS = {
    "unit": "a function, DoFn or composite on its own (tests/unit)",
    "e2e": "a whole run of the job or one of its tools (tests/e2e)",
    "emulator": "runs against the Pub/Sub emulator; skipped when it is absent, unless WAYBILL_REQUIRE_EMULATOR=1 (tests/emulator)",
}


def pytest_configure(config: pytest.Config) -> None:
    # Beam's TestPipeline is a class named Test*; it is not a test.
    config.addinivalue_line("filterwarnings", "ignore:cannot collect test class")
    for kind, meaning in KINDS.items():
        config.addinivalue_line("markers", f"{kind}: {meaning}")
    config.addinivalue_line("markers", "slow: takes long (several seconds or more); left out of the fast loop")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test with the kind of its folder."""
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind in KINDS:
            item.add_marker(kind)


@pytest.fixture(autouse=True)
def stock_beam() -> Iterator[None]:
    """Every test starts on stock Beam: what the local runner installed during a test is undone after it."""
    yield
    local_runner = sys.modules.get("pipeline.local.runner")
    if local_runner is not None:
        local_runner.uninstall()
