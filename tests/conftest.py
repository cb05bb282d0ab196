"""Shared test setup: the `integration` marker and the Pub/Sub emulator fixtures."""
from __future__ import annotations

pytest_plugins = ["tests.pubsub_fixtures"]


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    # Beam's TestPipeline is a class named Test*; it is not a test.
    config.addinivalue_line("filterwarnings", "ignore:cannot collect test class")
    config.addinivalue_line(
        "markers", "integration: needs a local service (the Pub/Sub emulator); skipped when it is absent"
    )
