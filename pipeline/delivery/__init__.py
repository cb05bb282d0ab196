"""The delivery layer, in its parts: targets and their configuration, HTTP and Pub/Sub sends, folder writes,
retries, adaptive batch sizes, receipts."""
