"""Shared test setup: markers, the Pub/Sub emulator fixtures, and stock Beam for every test."""
from __future__ import annotations

import sys
from typing import Iterator

import pytest

pytest_plugins = ["tests.pubsub_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    # Beam's TestPipeline is a class named Test*; it is not a test.
    config.addinivalue_line("filterwarnings", "ignore:cannot collect test class")
    config.addinivalue_line(
        "markers", "integration: needs a local service (the Pub/Sub emulator); skipped when it is absent"
    )


@pytest.fixture(autouse=True)
def stock_beam() -> Iterator[None]:
    """Every test starts on stock Beam: what the local runner installed during a test is undone after it."""
    yield
    local_runner = sys.modules.get("pipeline.local.runner")
    if local_runner is not None:
        local_runner.uninstall()
