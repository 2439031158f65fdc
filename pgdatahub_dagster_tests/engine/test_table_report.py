"""What the engine tells about one table (for its Dagster asset), and the importer's
progress callback, on DuckDB, PostgreSQL and DuckLake."""

from __future__ import annotations

from pathlib import Path

from pgdatahub_dagster.engine.importer import Importer, ImportProgress
from pgdatahub_dagster.engine.mapping import FolderMapping, FolderSettings, unique_key_read_as
from pgdatahub_dagster.engine.report import schema_drift, table_details
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.engine.test_importer import run_import
from pgdatahub_dagster_tests.files import write_csv


def test_the_key_a_ledger_row_was_read_under() -> None:
    for key in (None, (), ("name",), ("name", "phone")):
        assert unique_key_read_as(FolderSettings(table="t", sheet="a;key=x", unique_key=key).read_as()) == key


def test_a_tables_details_are_what_it_holds(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "shop" / "a.csv", "sku,price\nA1,9.5\nA2,3\n")
    write_csv(tmp_path / "shop" / "b.csv", "sku,price\nA2,3\nB1,4\n")
    mapping = "shop:\n  unique_key: [sku]\n"
    run_import(warehouse_url, tmp_path, mapping)
    with connect(warehouse_url) as warehouse:
        details = table_details(warehouse, "shop")
        assert details is not None and table_details(warehouse, "nothing") is None
        assert details.row_count == 3 == warehouse.count("shop")
        assert (details.files_held, details.rows_held) == (2, 4)  # A2 is held by both files
        assert [(c.name, c.sql_type) for c in details.columns] == warehouse.column_types("shop")
        assert {c.name for c in details.columns if c.is_key} == {"sku", "_row_key"}
        lineage = {c.name for c in details.columns if c.is_lineage}
        assert lineage == {"source_file", "source_file_id", "file_sha256", "load_timestamp"}
        assert details.qualified_name.endswith(".shop") and details.qualified_name.count(".") == 2
        assert details.last_schema_change is not None
        assert details.last_schema_change.source_file == "shop/a.csv"  # b.csv changed no column
        assert schema_drift(warehouse, "shop") == []

    write_csv(tmp_path / "shop" / "c.csv", "sku,price,size\nC1,n/a,L\n")
    run_import(warehouse_url, tmp_path, mapping)
    with connect(warehouse_url) as warehouse:
        drift = [(c.change_type, c.column_name, c.new_type) for c in schema_drift(warehouse, "shop")]
    assert sorted(drift) == [("add_column", "size", "TEXT"), ("alter_type", "price", "TEXT")]


def test_the_importer_reports_its_progress_after_each_batch(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "big" / "a.csv", "n\n" + "".join(f"{i}\n" for i in range(25)))
    heard: list[ImportProgress] = []
    with connect(warehouse_url) as warehouse:
        importer = Importer(
            warehouse,
            LocalFolderSource(tmp_path),
            FolderMapping.parse(""),
            batch_rows=10,
            progress=heard.append,
        )
        list(importer.import_all())
    assert [(p.source_file, p.table, p.rows_read) for p in heard] == [
        ("big/a.csv", "big", n) for n in (10, 20, 25)
    ]
    assert all(p.seconds >= 0 and p.rows_per_second >= 0 for p in heard)
