"""waybill-pipeline: also what Dataflow's --setup_file stages on its workers.

Workers get the job only: pipeline.local (the command line, the local runner, the local Pub/Sub
tools) and pipeline.deploy (the graph check, the flex template) stay on the machine that launches.
"""
from setuptools import find_packages, setup

setup(
    name="waybill-pipeline",
    version="0.1.0",
    description="Streaming Apache Beam job: courier and order events pushed in real time, daily statistics kept right.",
    python_requires=">=3.10",
    packages=find_packages(
        include=["pipeline", "pipeline.*"],
        exclude=["pipeline.local", "pipeline.local.*", "pipeline.deploy", "pipeline.deploy.*"],
    ),
    # pipeline/contracts is a link to the top-level schemas/ folder: the Avro contracts ship
    # inside the package, so workers read the same .avsc files as the tests.
    package_data={"pipeline": ["contracts/*.avsc", "data/*.jsonl", "data/*.json"]},
    install_requires=[
        "apache-beam[gcp]==2.77.0",
        "google-cloud-pubsub>=2.20",
        "fastavro>=1.9",
        "orjson>=3.9",
        "tzdata>=2024.1",
        "requests>=2.31",
        "standardwebhooks>=1.0",
        "cryptography>=42",
        "cloudevents>=2.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",  # the fast loop runs on both cores: -n 2
            "hypothesis>=6.100",
            "avro>=1.11.3",
            "pytest-httpserver>=1.0",
            "matplotlib>=3.8",
            "mypy>=1.8",
        ],
        "report": ["matplotlib>=3.8"],
    },
)
