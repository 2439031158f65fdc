"""Folder names that would take the engine's own tables, or share one table by accident:
real folders, real files, against a real DuckDB file and a real PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import ledger_mismatches
from pgdatahub_dagster.engine.sources.drive import FolderRegistry
from pgdatahub_dagster.engine.warehouse import Warehouse, connect
from pgdatahub_dagster.engine.warehouse.base import is_engine_name
from pgdatahub_dagster_tests.engine.test_importer import query, run_import, statuses
from pgdatahub_dagster_tests.files import write_csv

#: Every name the engine creates a table, sequence, index, temporary table, view or schema
#: under (grep for them), and names an engine object may take later.
ENGINE_NAMES = (
    "etl_imports",
    "etl_schema_changes",
    "drive_folder_registry",
    "etl_imports_id_seq",
    "pgdatahub_stage",
    "pgdatahub_keys",
    "pgdatahub_candidates",
    "pgdatahub_best",
    "pgdatahub_switch",
    "pgdatahub_set_aside",
    "pgdatahub_arrow",
    "pgdatahub_holders",
)


def _two_files(folder: Path) -> None:
    write_csv(folder / "a.csv", "name,amount\nAcme,1\nBlue,2\n")
    write_csv(folder / "b.csv", "name,amount\nCorn,3\nBlue,2\n")


# Through a DuckLake (30 s: a snapshot per import of every engine name) with -m long.
@pytest.mark.parametrize(
    "warehouse_url", ["duckdb", "postgres", pytest.param("ducklake", marks=pytest.mark.long)], indirect=True
)
def test_folders_named_like_engine_tables_load_into_a_prefixed_table(
    warehouse_url: str, tmp_path: Path
) -> None:
    for name in ENGINE_NAMES:
        _two_files(tmp_path / name)
    results = run_import(warehouse_url, tmp_path)

    assert set(statuses(results).values()) == {"success"}, [r.record.error for r in results]
    assert {r.record.table_name for r in results} == {f"data_{name}" for name in ENGINE_NAMES}
    for name in ENGINE_NAMES:
        assert query(warehouse_url, f"SELECT name, amount FROM data_{name} ORDER BY name") == [
            ("Acme", 1),
            ("Blue", 2),
            ("Corn", 3),
        ]
    # The engine's own tables are intact: one ledger row per file, nothing else.
    assert query(warehouse_url, "SELECT status, count(*) FROM etl_imports GROUP BY status") == [
        ("success", 2 * len(ENGINE_NAMES))
    ]
    changed = query(warehouse_url, "SELECT DISTINCT table_name FROM etl_schema_changes")
    assert {table for (table,) in changed} == {f"data_{name}" for name in ENGINE_NAMES}
    with connect(warehouse_url) as warehouse:
        assert ledger_mismatches(warehouse) == {}
        assert _drive_registry(warehouse) in (None, 0)


def _drive_registry(warehouse: Warehouse) -> int | None:
    """Create the Drive registry's tables and count its folders; on DuckLake, which Drive
    does not support yet, check that it is refused naming why (``None``)."""
    if warehouse.has_indexes:
        return FolderRegistry(warehouse).count()
    with pytest.raises(ConfigError, match="DuckLake is not supported for Drive yet"):
        FolderRegistry(warehouse)
    return None


def test_a_root_folder_named_like_an_engine_table_is_renamed_too(warehouse_url: str, tmp_path: Path) -> None:
    root = tmp_path / "etl_imports"
    write_csv(root / "top.csv", "name\nAcme\n")
    [result] = run_import(warehouse_url, root)
    assert result.status == "success"
    assert query(warehouse_url, "SELECT name FROM data_etl_imports") == [("Acme",)]


def test_every_object_the_engine_creates_has_a_reserved_name(warehouse_url: str, tmp_path: Path) -> None:
    """The rule that reserves names covers what a real import leaves in the database,
    so a new engine table cannot escape it unnoticed."""
    write_csv(tmp_path / "shop" / "a.csv", "sku\nA1\nA2\n")
    write_csv(tmp_path / "shop" / "b.csv", "sku\nA2\nA3\n")  # A2 is held twice: a holders table
    run_import(warehouse_url, tmp_path)
    with connect(warehouse_url) as warehouse:
        _drive_registry(warehouse)
        index = warehouse.row_key_index_name("shop")
        if warehouse_url.startswith("duckdb"):
            names = warehouse.fetchall("SELECT table_name FROM information_schema.tables")
            names += warehouse.fetchall("SELECT schema_name FROM information_schema.schemata")
            names += warehouse.fetchall("SELECT sequence_name FROM duckdb_sequences()")
            names += warehouse.fetchall("SELECT index_name FROM duckdb_indexes()")
        else:
            names = warehouse.fetchall(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema()"
            )
            names += warehouse.fetchall("SELECT nspname FROM pg_namespace")
    own = {str(name) for (name,) in names} - {"shop", index}
    system = {"main", "information_schema", "public", "temp"}
    unreserved = {n for n in own - system if not n.startswith("pg_") and not is_engine_name(n)}
    assert unreserved == set()


@pytest.mark.parametrize(
    "table", ["etl_imports", "pgdatahub_stage", "Drive Folder Registry", "etl_imports_x"]
)
def test_a_table_setting_naming_an_engine_table_stops_start_up(table: str) -> None:
    with pytest.raises(ConfigError, match=r"mapping\.yaml line 2: table .* the engine keeps for its own"):
        FolderMapping.parse(f"leads:\n  table: {table}\n", origin="mapping.yaml")


LONG = "quarterly revenue by region and product line for the board of directors"


@pytest.mark.parametrize(
    ("first", "second", "table"),
    [
        ("Leads", "leads", "leads"),
        ("café", "cafe", "cafe"),
        (f"{LONG} 2023", f"{LONG} 2024", "quarterly_revenue_by_region_and_product_line_for_the_board_of_d"),
    ],
)
def test_folders_that_clean_to_one_table_fail_naming_both(
    warehouse_url: str, tmp_path: Path, first: str, second: str, table: str
) -> None:
    _two_files(tmp_path / first)
    write_csv(tmp_path / second / "c.csv", "name,amount\nDune,4\n")
    write_csv(tmp_path / "other" / "d.csv", "name\nElm\n")
    results = run_import(warehouse_url, tmp_path)

    outcome = statuses(results)
    assert outcome.pop("other/d.csv") == "success"
    assert set(outcome.values()) == {"failed"}
    for result in results:
        if result.failed:
            assert result.record.table_name == table
            error = str(result.record.error)
            assert error.startswith(f"{result.record.source_file}: folders ")
            assert f"'{tmp_path.name}/{first}'" in error and f"'{tmp_path.name}/{second}'" in error
            assert f"would both load into table {table}" in error
    # No row of either folder went anywhere; the failed rows are in the ledger.
    with connect(warehouse_url) as warehouse:
        assert warehouse.table_exists(table) is False
        assert warehouse.fetchall(
            "SELECT count(*) FROM etl_imports WHERE status = 'failed' AND error LIKE '%would both load%'"
        ) == [(3,)]
    assert query(warehouse_url, "SELECT name FROM other") == [("Elm",)]


def test_folders_share_a_table_when_each_names_it(warehouse_url: str, tmp_path: Path) -> None:
    _two_files(tmp_path / "Leads")
    write_csv(tmp_path / "leads" / "c.csv", "name,amount\nDune,4\n")
    results = run_import(warehouse_url, tmp_path, "Leads:\n  table: leads\nleads:\n  table: leads\n")
    assert set(statuses(results).values()) == {"success"}
    assert query(warehouse_url, "SELECT count(*) FROM leads") == [(4,)]


def test_a_folder_whose_table_only_the_other_names_still_collides(warehouse_url: str, tmp_path: Path) -> None:
    _two_files(tmp_path / "old leads")
    write_csv(tmp_path / "leads" / "c.csv", "name,amount\nDune,4\n")
    results = run_import(warehouse_url, tmp_path, "old leads:\n  table: leads\n")
    assert set(statuses(results).values()) == {"failed"}
    error = str(next(r for r in results if r.record.source_file == "leads/c.csv").record.error)
    assert f"folders '{tmp_path.name}/leads' and '{tmp_path.name}/old leads'" in error


def test_a_folder_added_next_to_a_loaded_one_does_not_mix_into_it(warehouse_url: str, tmp_path: Path) -> None:
    _two_files(tmp_path / "Leads")
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    write_csv(tmp_path / "leads" / "c.csv", "name,amount\nDune,4\n")
    results = run_import(warehouse_url, tmp_path)
    assert set(statuses(results).values()) == {"failed"}
    # The rows already loaded stay, and only theirs.
    assert query(warehouse_url, "SELECT name FROM leads ORDER BY name") == [("Acme",), ("Blue",), ("Corn",)]


def test_a_folder_renamed_to_another_spelling_of_its_table_is_no_collision(
    warehouse_url: str, tmp_path: Path
) -> None:
    _two_files(tmp_path / "Leads")
    run_import(warehouse_url, tmp_path)
    os.rename(tmp_path / "Leads", tmp_path / "leads")
    results = run_import(warehouse_url, tmp_path)
    assert statuses(results) == {"leads/a.csv": "success", "leads/b.csv": "success"}
    assert query(warehouse_url, "SELECT count(*) FROM leads") == [(3,)]
