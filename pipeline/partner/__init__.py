"""The partner-file job: decrypt, check, credit in adaptive batches, feedback for every file."""
