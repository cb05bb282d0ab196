"""The catalog's manufacturer lines and warehouses: joined into each item, refused with a one-line error when bad."""
from __future__ import annotations

import json

import pytest

from pipeline.model.catalog import parse_catalog

ACME = {"id": "MFR-01", "name": "Acme Kitchenware", "contact": "orders@acme.example", "lead_time_days": 12}


def sku_line(sku: str = "S", **fields: object) -> str:
    return json.dumps({"sku": sku, "initial_stock": 5, "reorder_threshold": 2, "reorder_quantity": 10, **fields})


def manufacturer_line(**entry: object) -> str:
    return json.dumps({"manufacturer": {**ACME, **entry}})


def test_an_item_gets_its_manufacturers_details_and_its_warehouse() -> None:
    catalog = parse_catalog([manufacturer_line(), sku_line(manufacturer_id="MFR-01", warehouse_id="WH-1")])
    assert catalog["S"] == {
        "sku": "S", "initial_stock": 5, "reorder_threshold": 2, "reorder_quantity": 10, "manufacturer_id": "MFR-01",
        "product_name": None, "warehouse_id": "WH-1", "manufacturer_name": "Acme Kitchenware",
        "manufacturer_contact": "orders@acme.example", "lead_time_days": 12,
    }


def test_a_manufacturer_may_be_listed_after_the_skus_that_name_it() -> None:
    catalog = parse_catalog([sku_line(manufacturer_id="MFR-01"), manufacturer_line()])
    assert catalog["S"]["lead_time_days"] == 12


def test_a_catalog_without_manufacturer_lines_keeps_ids_without_details() -> None:
    catalog = parse_catalog([sku_line(manufacturer_id="MFR-77")])
    assert catalog["S"]["manufacturer_id"] == "MFR-77"
    assert (catalog["S"]["manufacturer_name"], catalog["S"]["manufacturer_contact"], catalog["S"]["lead_time_days"]) \
        == (None, None, None)


@pytest.mark.parametrize(
    "lines, message",
    [
        ([manufacturer_line(name="")], r"^catalog line 1: manufacturer name must be a non-empty string, got ''$"),
        ([manufacturer_line(contact=None)],
         r"^catalog line 1: manufacturer contact must be a non-empty string, got None$"),
        ([manufacturer_line(id=7)], r"^catalog line 1: manufacturer id must be a non-empty string, got 7$"),
        ([manufacturer_line(lead_time_days=-1)],
         r"^catalog line 1: manufacturer lead_time_days must be an integer >= 0, got -1$"),
        ([manufacturer_line(lead_time_days="2 weeks")],
         r"^catalog line 1: manufacturer lead_time_days must be an integer >= 0, got '2 weeks'$"),
        ([manufacturer_line(lead_time_days=True)],
         r"^catalog line 1: manufacturer lead_time_days must be an integer >= 0, got True$"),
        ([manufacturer_line(phone="123")], r"^catalog line 1: unknown manufacturer field\(s\) phone$"),
        ([json.dumps({"manufacturer": "Acme"})],
         r"^catalog line 1: manufacturer must be an object with id, name, contact, lead_time_days, got 'Acme'$"),
        ([json.dumps({"manufacturer": ACME, "sku": "S"})],
         r'^catalog line 1: a manufacturer line holds only "manufacturer", got also sku$'),
        (["", manufacturer_line(), manufacturer_line(name="Other")],
         r"^catalog line 3: manufacturer 'MFR-01' is listed twice$"),
        ([manufacturer_line(), sku_line(manufacturer_id="MFR-02")],
         r"^catalog line 2: manufacturer_id 'MFR-02' is not a listed manufacturer; "
         r"list it on a manufacturer line or correct the id$"),
        ([sku_line(warehouse_id=3)], r"^catalog line 1: warehouse_id must be a string or null, got 3$"),
    ],
)
def test_a_bad_manufacturer_or_warehouse_is_refused_on_one_line(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_catalog(lines)
    assert "\n" not in str(refused.value)
