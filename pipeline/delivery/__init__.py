"""The one delivery layer every push goes through: adaptive batches, retries, receipts, dead letters."""
