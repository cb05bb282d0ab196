"""The flex template's entry point: submit the streaming job to Dataflow and return.

The template launcher runs this file with the template's parameters as ``--name=value``
arguments plus the runner options (``--runner=DataflowRunner``, ``--project``, ``--region``,
``--temp_location``, ...). Unlike ``python -m pipeline`` it does not wait for the job (a
streaming job never finishes) and it always runs in streaming mode, because a flex template
parameter cannot pass Beam's value-less ``--streaming`` flag.

Example (offline, builds the job without submitting it)::

    python pipeline/deploy/flex_template/launch.py --runner=DataflowRunner --dry_run=True \\
        --project=waybill-demo --region=us-central1 --temp_location=gs://BUCKET/tmp \\
        --source=pubsub --courier_subscription=projects/waybill-demo/subscriptions/courier-events \\
        --order_subscription=projects/waybill-demo/subscriptions/order-events
"""
from __future__ import annotations

import logging
import sys

from pipeline.launcher import launch, parse_options

_LOGGER = logging.getLogger(__name__)


def submit(argv: list[str]) -> None:
    """Parses, validates and submits the job in streaming mode; returns once it is submitted."""
    options = parse_options([*argv, "--streaming"])
    result = launch(options)
    _LOGGER.info("submitted: %s", getattr(result, "job_id", lambda: "dry run, not submitted")())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    submit(sys.argv[1:])
