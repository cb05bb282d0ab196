"""What runs on a developer's machine only: the command line, its summary and reports, the named
local runner, and the local Pub/Sub tools.

Not shipped to workers (``setup.py`` leaves it out); nothing the job runs imports it."""
