"""``python -m pipeline.partner``: the partner-file job's command line."""
from pipeline.local.partner_cli import main

main()
