"""Deploying to Dataflow: the offline graph check with its golden step names, and the flex template.

Not shipped to workers (``setup.py`` leaves it out)."""
