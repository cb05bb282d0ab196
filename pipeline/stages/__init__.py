"""The job's stages, in data-flow order: validate, de-duplicate, identify, supervision, statistics,
stock, lifecycle."""
