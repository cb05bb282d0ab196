"""The stock form after a whole local run: the current view's ``stock`` table, and the newest row per SKU in
``stock/``, equal a recount of the orders the job accepted; every suggestion carries its manufacturer's details from
the catalog."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.io.outputs import CURRENT_VIEW_FILE, INVENTORY_DIR, ORDERS_DIR, STOCK_DIR
from pipeline.io.stock_view import stock_rank
from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG, load_catalog
from pipeline.model.json_records import read_folder
from pipeline.stages.inventory import CATALOG_DETAILS
from tests.unit.stages.test_stock_levels import recount


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["batch", "streaming"])
def test_the_stock_table_after_a_local_run_is_the_recount_of_its_orders(tmp_path: Path, mode: list[str]) -> None:
    result = cli.run([f"--runner={LOCAL_RUNNER}", "--source=synthetic", "--events=1500", "--seed=11",
                      f"--output_dir={tmp_path}", *mode])
    assert result.balanced
    orders = read_folder(tmp_path / ORDERS_DIR, schemas.ORDER_EVENT)
    catalog = load_catalog(str(DEFAULT_CATALOG))
    expected = recount(orders, catalog)
    with closing(sqlite3.connect(tmp_path / CURRENT_VIEW_FILE)) as db:
        table = db.execute("SELECT sku, warehouse_id, quantity, below_threshold FROM stock").fetchall()
    assert {(sku, warehouse): (quantity, bool(below)) for sku, warehouse, quantity, below in table} == expected
    # stock/ (what a deployed job writes, or --stock_topic) holds every row; its newest per SKU is the table's
    newest: dict[tuple[str, str], dict] = {}
    for row in read_folder(tmp_path / STOCK_DIR, schemas.STOCK_LEVEL):
        key = (row["sku"], row["warehouse_id"])
        if key not in newest or stock_rank(row) > stock_rank(newest[key]):
            newest[key] = row
    assert {key: (row["quantity"], row["below_threshold"]) for key, row in newest.items()} == expected
    # the run moved stock and left some SKUs below their threshold, with and without a warehouse
    assert any(quantity != catalog[sku]["initial_stock"] for (sku, _), (quantity, _) in expected.items())
    assert {warehouse for (_, warehouse), (_, below) in expected.items() if below} >= {"", "WH-SHA"}

    suggestions = [json.loads(line) for path in sorted((tmp_path / INVENTORY_DIR).glob("*.jsonl"))
                   for line in path.read_text().splitlines()]
    assert suggestions and {s["sku"] for s in suggestions} <= set(catalog)
    for suggestion in suggestions:
        assert {field: suggestion[field] for field in CATALOG_DETAILS} == \
            {field: catalog[suggestion["sku"]][field] for field in CATALOG_DETAILS}
        assert suggestion["manufacturer_name"] and suggestion["manufacturer_contact"]
        assert suggestion["lead_time_days"] is not None
