"""Where events enter and records leave: sources, sinks, synthetic traffic, the SQLite current view."""
