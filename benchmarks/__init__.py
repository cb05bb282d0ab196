"""Performance harness of waybill-pipeline: ``python -m benchmarks.run [--quick] [--out results.json]``."""
