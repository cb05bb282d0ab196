"""The product catalog: initial stock and reorder rules per SKU, from a JSON Lines file.

One SKU a line::

    {"sku": "SKU-0001", "initial_stock": 19, "reorder_threshold": 15, "reorder_quantity": 85,
     "manufacturer_id": "MFR-21", "product_name": "Product 0001"}

``manufacturer_id`` and ``product_name`` are optional. The default catalog,
``pipeline/data/catalog.jsonl``, covers the synthetic traffic's SKU-0001..SKU-0200 and is
written by ``python -m pipeline.model.catalog [--out PATH]``.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any, Iterable, Optional

from apache_beam.io.filesystems import FileSystems

DEFAULT_CATALOG = Path(__file__).resolve().parents[1] / "data" / "catalog.jsonl"

CatalogItem = dict[str, Any]  # sku, initial_stock, reorder_threshold, reorder_quantity, manufacturer_id, product_name

_REQUIRED_COUNTS = {"initial_stock": 0, "reorder_threshold": 0, "reorder_quantity": 1}  # field -> minimum
_OPTIONAL_TEXT = ("manufacturer_id", "product_name")


def parse_catalog(lines: Iterable[str], source: str = "catalog") -> dict[str, CatalogItem]:
    """SKU -> item (every field present, optional ones None), in file order; blank lines are skipped.

    Raises:
        ValueError: naming the line and the bad value, e.g. ``catalog line 3:
            reorder_quantity must be an integer >= 1, got 0``.
    """
    catalog: dict[str, CatalogItem] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error}); expected one object per line") from error
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {obj!r}")
        unknown = sorted(set(obj) - {"sku", *_REQUIRED_COUNTS, *_OPTIONAL_TEXT})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        sku = obj.get("sku")
        if not isinstance(sku, str) or not sku:
            raise ValueError(f"{where}: sku must be a non-empty string, got {sku!r}")
        if sku in catalog:
            raise ValueError(f"{where}: sku {sku!r} is listed twice")
        item: CatalogItem = {"sku": sku}
        for field, minimum in _REQUIRED_COUNTS.items():
            value = obj.get(field)
            if type(value) is not int or value < minimum:
                raise ValueError(f"{where}: {field} must be an integer >= {minimum}, got {value!r}")
            item[field] = value
        for field in _OPTIONAL_TEXT:
            value = obj.get(field)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {field} must be a string or null, got {value!r}")
            item[field] = value
        catalog[sku] = item
    return catalog


def load_catalog(path: str) -> dict[str, CatalogItem]:
    """:func:`parse_catalog` of a local or ``gs://`` file.

    Raises:
        ValueError: the file cannot be read, or is not a catalog.
    """
    try:
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"catalog {path}: cannot be read: {error}") from error
    return parse_catalog(text.splitlines(), source=path)


def default_catalog(skus: int = 200, seed: int = 7) -> list[CatalogItem]:
    """A deterministic catalog of ``SKU-0001`` .. ``SKU-<skus>``, as the synthetic traffic sells them.

    A synthetic day of 20,000 events pays about 30 units per SKU; initial stocks of 10 to 60
    with thresholds of 5 to 20 make about two thirds of the SKUs cross their threshold.
    """
    rng = random.Random(seed)
    items = []
    for n in range(1, skus + 1):
        threshold = rng.randint(5, 20)
        items.append({
            "sku": f"SKU-{n:04d}",
            "initial_stock": rng.randint(10, 60),
            "reorder_threshold": threshold,
            "reorder_quantity": 5 * rng.randint(threshold // 5 + 2, 20),
            "manufacturer_id": f"MFR-{rng.randint(1, 25):02d}",
            "product_name": f"Product {n:04d}",
        })
    return items


def write_catalog(path: Path, items: Iterable[CatalogItem]) -> None:
    """JSON Lines, one item a line, in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the default catalog (SKU-0001..SKU-0200) as JSON Lines.")
    parser.add_argument("--out", type=Path, default=DEFAULT_CATALOG, help="where to write it (default %(default)s)")
    args = parser.parse_args(argv)
    write_catalog(args.out, default_catalog())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
