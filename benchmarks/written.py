"""What a run wrote under its output folder: the figures the floor, the naive peer and the graph must agree on.

Example::

    >>> import tempfile
    >>> written(Path(tempfile.mkdtemp()))
    {'lines': {}, 'delivered': 0, 'daily_totals': {}}
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from pipeline.io import outputs
from pipeline.stages import stats


def written(output_dir: Path) -> dict[str, Any]:
    """JSON lines per folder that has any (receipts left out: one per delivery batch, and
    batching differs from run to run), the requests the receipts say were delivered, and the
    final daily figures of the ``total`` dimension as ``{'<date> <metric>': value}``."""
    lines: collections.Counter[str] = collections.Counter()
    delivered = 0
    totals = {}
    for path in sorted(output_dir.rglob("*.jsonl")):
        folder = str(path.parent.relative_to(output_dir))
        records = path.read_text(encoding="utf-8").splitlines()
        if folder == outputs.RECEIPTS_DIR:
            delivered += sum(len(json.loads(line)["delivered_ids"]) for line in records)
            continue
        lines[folder] += len(records)
        if folder == outputs.STATS_DIR:
            for stat in map(json.loads, records):
                if stat["is_final"] and stat["dimension"] == stats.TOTAL_DIMENSION:
                    totals[f"{stat['day']} {stat['metric']}"] = stat["value"]
    return {"lines": {folder: count for folder, count in sorted(lines.items()) if count}, "delivered": delivered, "daily_totals": dict(sorted(totals.items()))}
