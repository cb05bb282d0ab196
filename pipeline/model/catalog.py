"""The product catalog: manufacturers, then initial stock and reorder rules per SKU, from a JSON Lines file.

A manufacturer a line, then one SKU a line::

    {"manufacturer": {"id": "MFR-21", "name": "Ningbo Kitchenware Co., Ltd.",
                      "contact": "orders@mfr-21.example.com", "lead_time_days": 12}}
    {"sku": "SKU-0001", "initial_stock": 19, "reorder_threshold": 15, "reorder_quantity": 85,
     "manufacturer_id": "MFR-21", "product_name": "Product 0001", "warehouse_id": "WH-SHA"}

``manufacturer_id``, ``product_name`` and ``warehouse_id`` are optional. When the catalog lists
manufacturers, every ``manufacturer_id`` must be one of them; a catalog without manufacturer
lines is valid too (its items then have no manufacturer details). Each item comes back with its
manufacturer's ``manufacturer_name``, ``manufacturer_contact`` and ``lead_time_days`` joined in
(None when it names no listed manufacturer). The default catalog, ``pipeline/data/catalog.jsonl``,
covers the synthetic traffic's SKU-0001..SKU-0200 and is written by
``python -m pipeline.model.catalog [--out PATH]``.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any, Iterable, Optional

from apache_beam.io.filesystems import FileSystems

DEFAULT_CATALOG = Path(__file__).resolve().parents[1] / "data" / "catalog.jsonl"

# sku, initial_stock, reorder_threshold, reorder_quantity, manufacturer_id, product_name, warehouse_id,
# and the manufacturer's details: manufacturer_name, manufacturer_contact, lead_time_days
CatalogItem = dict[str, Any]
Manufacturer = dict[str, Any]  # id, name, contact, lead_time_days

_REQUIRED_COUNTS = {"initial_stock": 0, "reorder_threshold": 0, "reorder_quantity": 1}  # field -> minimum
_OPTIONAL_TEXT = ("manufacturer_id", "product_name", "warehouse_id")
_MANUFACTURER_TEXT = ("id", "name", "contact")
_NO_MANUFACTURER = {"manufacturer_name": None, "manufacturer_contact": None, "lead_time_days": None}


def parse_catalog(lines: Iterable[str], source: str = "catalog") -> dict[str, CatalogItem]:
    """SKU -> item (every field present, optional ones None), in file order; blank lines are skipped.

    Raises:
        ValueError: naming the line and the bad value, e.g. ``catalog line 3:
            reorder_quantity must be an integer >= 1, got 0``.
    """
    manufacturers: dict[str, Manufacturer] = {}
    catalog: dict[str, CatalogItem] = {}
    named: list[tuple[str, str]] = []  # (where, manufacturer_id) of the items that name one
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
        if "manufacturer" in obj:
            manufacturer = _manufacturer(obj, where)
            if manufacturer["id"] in manufacturers:
                raise ValueError(f"{where}: manufacturer {manufacturer['id']!r} is listed twice")
            manufacturers[manufacturer["id"]] = manufacturer
            continue
        item = _item(obj, where)
        if item["sku"] in catalog:
            raise ValueError(f"{where}: sku {item['sku']!r} is listed twice")
        catalog[item["sku"]] = item
        if item["manufacturer_id"] is not None:
            named.append((where, item["manufacturer_id"]))
    if manufacturers:
        for where, manufacturer_id in named:
            if manufacturer_id not in manufacturers:
                raise ValueError(f"{where}: manufacturer_id {manufacturer_id!r} is not a listed manufacturer; "
                                 "list it on a manufacturer line or correct the id")
    for item in catalog.values():
        details = manufacturers.get(item["manufacturer_id"])
        item.update(_NO_MANUFACTURER if details is None else {
            "manufacturer_name": details["name"], "manufacturer_contact": details["contact"],
            "lead_time_days": details["lead_time_days"],
        })
    return catalog


def _manufacturer(obj: dict[str, Any], where: str) -> Manufacturer:
    """A manufacturer line's entry, checked: ``{"manufacturer": {id, name, contact, lead_time_days}}``."""
    unknown = sorted(set(obj) - {"manufacturer"})
    if unknown:
        raise ValueError(f"{where}: a manufacturer line holds only \"manufacturer\", got also {', '.join(unknown)}")
    entry = obj["manufacturer"]
    if not isinstance(entry, dict):
        raise ValueError(
            f"{where}: manufacturer must be an object with id, name, contact, lead_time_days, got {entry!r}")
    unknown = sorted(set(entry) - {*_MANUFACTURER_TEXT, "lead_time_days"})
    if unknown:
        raise ValueError(f"{where}: unknown manufacturer field(s) {', '.join(unknown)}")
    for field in _MANUFACTURER_TEXT:
        value = entry.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: manufacturer {field} must be a non-empty string, got {value!r}")
    lead_time = entry.get("lead_time_days")
    if type(lead_time) is not int or lead_time < 0:
        raise ValueError(f"{where}: manufacturer lead_time_days must be an integer >= 0, got {lead_time!r}")
    return {field: entry[field] for field in (*_MANUFACTURER_TEXT, "lead_time_days")}


def _item(obj: dict[str, Any], where: str) -> CatalogItem:
    """A SKU line's item, checked (without its manufacturer's details)."""
    unknown = sorted(set(obj) - {"sku", *_REQUIRED_COUNTS, *_OPTIONAL_TEXT})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    sku = obj.get("sku")
    if not isinstance(sku, str) or not sku:
        raise ValueError(f"{where}: sku must be a non-empty string, got {sku!r}")
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
    return item


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


DEFAULT_WAREHOUSES = ("WH-SHA", "WH-HGH", "WH-CAN")
_CITIES = ("Ningbo", "Suzhou", "Dongguan", "Yiwu", "Foshan")
_TRADES = ("Kitchenware", "Textiles", "Electronics", "Toys", "Furniture")


def default_catalog(skus: int = 200, seed: int = 7) -> list[CatalogItem]:
    """A deterministic catalog of ``SKU-0001`` .. ``SKU-<skus>``, as the synthetic traffic sells them.

    A synthetic day of 20,000 events pays about 30 units per SKU; initial stocks of 10 to 60
    with thresholds of 5 to 20 make about two thirds of the SKUs cross their threshold. Every
    fifth SKU is shipped by its manufacturer (no warehouse); the others are kept in one of
    :data:`DEFAULT_WAREHOUSES`.
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
            "warehouse_id": None if n % 5 == 0 else DEFAULT_WAREHOUSES[n % len(DEFAULT_WAREHOUSES)],
        })
    return items


def default_manufacturers(seed: int = 7) -> list[Manufacturer]:
    """The 25 manufacturers ``MFR-01`` .. ``MFR-25`` the default catalog's SKUs name, lead times 3 to 30 days."""
    rng = random.Random(seed)
    return [
        {"id": f"MFR-{n:02d}", "name": f"{_CITIES[(n - 1) // 5]} {_TRADES[(n - 1) % 5]} Co., Ltd.",
         "contact": f"orders@mfr-{n:02d}.example.com", "lead_time_days": rng.randint(3, 30)}
        for n in range(1, 26)
    ]


def write_catalog(path: Path, items: Iterable[CatalogItem], manufacturers: Iterable[Manufacturer] = ()) -> None:
    """JSON Lines: a line per manufacturer, then a line per item, in the order given."""
    lines = [{"manufacturer": manufacturer} for manufacturer in manufacturers] + list(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the default catalog (SKU-0001..SKU-0200) as JSON Lines.")
    parser.add_argument("--out", type=Path, default=DEFAULT_CATALOG, help="where to write it (default %(default)s)")
    args = parser.parse_args(argv)
    write_catalog(args.out, default_catalog(), default_manufacturers())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
