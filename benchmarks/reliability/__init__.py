"""The reliability run: sequence-numbered events through the file and Pub/Sub paths, webhook
faults, the job killed and restarted, and an independent count of what came out (docs/reliability.md)."""
