"""``python -m pipeline``: the job's command line (:mod:`pipeline.local.cli`), run from a checkout."""
from pipeline.local.cli import main

main()
