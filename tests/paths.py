"""Where the tests find the checkout and their fixtures."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout
FIXTURES = ROOT / "tests" / "fixtures"
