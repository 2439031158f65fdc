"""The warehouse's tables as assets: declared from the folders, reported by every import with
what the warehouse holds, read back through Dagster's instance API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, TableSchema
from dagster._utils.test.definitions import scoped_definitions_load_context, scoped_reconstruction_metadata

from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.testing.drive_server import DriveTestServer
from pgdatahub_dagster_tests.defs.conftest import (
    assert_table_asset_shows_the_warehouse,
    code_location,
    full_sync,
    latest_metadata,
)
from pgdatahub_dagster_tests.exact_sync import SensorDaemon
from pgdatahub_dagster_tests.files import write_csv, write_xlsx

SHOP, PEOPLE = AssetKey(["warehouse", "shop"]), AssetKey(["warehouse", "people"])
CONTACTS = AssetKey(["warehouse", "contacts"])
TABLE_CHECKS = {"unique_keys_hold", "ledger_matches_tables", "schema_drift"}
#: Nothing listens there: connecting is refused at once.
UNREACHABLE_URL = "postgresql://nobody@127.0.0.1:1/nothing"


def _two_folders(source_dir: Path) -> None:
    (source_dir / "pgdatahub.yaml").write_text("shop:\n  unique_key: [sku]\n")
    write_csv(source_dir / "shop" / "a.csv", "sku,price\nA1,9.5\nA2,3\n")
    write_xlsx(source_dir / "shop" / "b.xlsx", {"Sheet1": [["sku", "price", "size"], ["B1", 4, "L"]]})
    write_csv(source_dir / "people" / "p.csv", "name,zip\nAda,01234\nBob,99999\nAda,01234\n")


def test_the_tables_of_the_folders_are_assets_downstream_of_the_imports(
    test_defs: Definitions, source_dir: Path, warehouse_url: str
) -> None:
    assert not any(key.path[0] == "warehouse" for key in test_defs.resolve_all_asset_keys())
    _two_folders(source_dir)
    graph = code_location(warehouse_url).resolve_asset_graph()
    assert {key for key in graph.get_all_asset_keys() if key.path[0] == "warehouse"} == {SHOP, PEOPLE}
    kind = "duckdb" if warehouse_url.startswith("duckdb") else "postgres"
    for key in (SHOP, PEOPLE):
        table = graph.get(key)
        assert table.group_name == "local_folder"
        assert set(table.kinds) == {kind, "table"}
        assert table.parent_keys == {AssetKey("local_spreadsheets"), AssetKey("local_folder_sync")}
        checks = {check.name for check in graph.get_check_keys_for_assets({key})}
        assert checks == TABLE_CHECKS
    # A new folder is a new table asset at the next load, without a code change.
    write_csv(source_dir / "shop" / "eu" / "x.csv", "sku\nE1\n")
    keys = code_location(warehouse_url).resolve_asset_graph().get_all_asset_keys()
    assert AssetKey(["warehouse", "shop_eu"]) in keys


@pytest.fixture
def drive_contacts(
    drive_server: DriveTestServer, drive_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watched Drive folder whose folder Contacts loads into the table contacts, which no
    local folder loads into."""
    root = drive_server.add_folder("Sales Inbox")
    contacts = drive_server.add_folder("Contacts", root)
    drive_server.add_file("c.csv", contacts, b"name,city\nAcme,Oslo\nBlue,Rome\n")
    monkeypatch.setenv("PGDATAHUB_DRIVE_FOLDER_ID", root)
    monkeypatch.setenv("PGDATAHUB_DRIVE_CREDENTIALS", str(drive_credentials))
    monkeypatch.setenv("PGDATAHUB_DRIVE_API_ENDPOINT", drive_server.api_endpoint)


@pytest.mark.usefixtures("drive_contacts")
def test_a_reload_declares_the_tables_only_drive_loads_into(
    test_defs: Definitions, instance: DagsterInstance, warehouse_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert CONTACTS not in test_defs.resolve_all_asset_keys()
    SensorDaemon(test_defs, instance, "drive_sensor").sync()
    # Reload definitions: the code location reads the tables from the warehouse's ledger.
    with scoped_definitions_load_context() as code_server:
        reloaded = code_location(warehouse_url)
    graph = reloaded.resolve_asset_graph()
    contacts = graph.get(CONTACTS)
    assert contacts.group_name == "google_drive"
    assert contacts.parent_keys == {AssetKey("drive_spreadsheets")}
    assert set(contacts.kinds) == {"duckdb" if warehouse_url.startswith("duckdb") else "postgres", "table"}
    assert {check.name for check in graph.get_check_keys_for_assets({CONTACTS})} == TABLE_CHECKS
    # A run rebuilds the same assets from the state the code location kept, without reading
    # the warehouse (here it could not: nothing answers at that URL).
    with scoped_reconstruction_metadata(code_server.get_pending_reconstruction_metadata()):
        in_a_run = code_location(UNREACHABLE_URL).resolve_asset_graph()
    assert in_a_run.get(CONTACTS).parent_keys == {AssetKey("drive_spreadsheets")}
    assert "Cannot read the tables" not in caplog.text
    # Its checks run on it like on any table.
    outcome = reloaded.resolve_job_def("check_warehouse").execute_in_process(instance=instance)
    evaluations = {
        e.check_name: e.passed for e in outcome.get_asset_check_evaluations() if e.asset_key == CONTACTS
    }
    assert evaluations == dict.fromkeys(TABLE_CHECKS, True)


@contextmanager
def _unreadable(warehouse_url: str, postgres_admin_url: str) -> Iterator[None]:
    """The warehouse cannot be read: a DuckDB file another process is writing (as an import
    does), a PostgreSQL database that accepts no connections (a server down)."""
    if warehouse_url.startswith("duckdb"):
        path = warehouse_url.split("://", 1)[1].removeprefix("/")
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import duckdb, sys; c = duckdb.connect({path!r}); print(1, flush=True); sys.stdin.read()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert holder.stdout is not None and holder.stdout.readline()
        try:
            yield
        finally:
            holder.communicate()
        return
    database = psycopg.conninfo.conninfo_to_dict(warehouse_url)["dbname"]
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def test_the_code_location_loads_when_the_warehouse_cannot_be_read(
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_csv(source_dir / "shop" / "a.csv", "sku\nA1\n")
    write_csv(source_dir / "people" / "p.csv", "name\nAda\n")
    assert full_sync(test_defs, instance).success
    # The folder shop is gone; its rows stay (on_delete: keep): the ledger still declares it.
    shutil.rmtree(source_dir / "shop")
    assert SHOP in code_location(warehouse_url).resolve_all_asset_keys()
    admin_url = "" if warehouse_url.startswith("duckdb") else request.getfixturevalue("postgres_admin_url")
    with _unreadable(warehouse_url, admin_url):
        graph = code_location(warehouse_url).resolve_asset_graph()
    # The tables of the last load that read the ledger, and those of the tree.
    assert {key for key in graph.get_all_asset_keys() if key.path[0] == "warehouse"} == {SHOP, PEOPLE}
    assert {check.name for check in graph.get_check_keys_for_assets({SHOP})} == TABLE_CHECKS
    assert "Cannot read the tables of the warehouse" in caplog.text
    assert "declaring the 2 tables it held at the last load that could read it" in caplog.text
    # A warehouse never read: the tree's tables alone.
    caplog.clear()
    keys = code_location(UNREACHABLE_URL).resolve_all_asset_keys()
    assert {key for key in keys if key.path[0] == "warehouse"} == {PEOPLE}
    assert "declaring the 0 tables" in caplog.text


def test_an_import_of_two_folders_reports_each_table_as_the_warehouse_holds_it(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    _two_folders(source_dir)
    assert full_sync(code_location(warehouse_url), instance).success
    for table in ("shop", "people"):
        assert_table_asset_shows_the_warehouse(instance, warehouse_url, table)
    shop = latest_metadata(instance, SHOP)
    assert shop["dagster/row_count"] == 3 and shop["files_held"] == 2 and shop["rows_held"] == 3
    schema = shop["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    keys = {c.name for c in schema.columns if c.tags.get("key") == "true"}
    assert keys == {"sku", "_row_key"}  # unique_key: [sku]
    assert shop["last_schema_change"] == {
        "change": "add_column",
        "column": "size",
        "old_type": None,
        "new_type": "TEXT",
        "source_file": "shop/b.xlsx",
        "changed_at": shop["last_schema_change"]["changed_at"],  # type: ignore[index]
    }
    people = latest_metadata(instance, PEOPLE)
    assert people["dagster/row_count"] == 2  # Ada twice: one key
    people_schema = people["dagster/column_schema"]
    assert isinstance(people_schema, TableSchema)
    assert {c.name for c in people_schema.columns if c.tags.get("key") == "true"} == {
        "name",
        "zip",
        "_row_key",
    }

    # A file imported alone, by its partition, reports its table too.
    write_csv(source_dir / "people" / "q.csv", "name,zip\nCy,12345\n")
    instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, ["people/q.csv"])
    code_location(warehouse_url).resolve_job_def("import_local_files").execute_in_process(
        instance=instance, partition_key="people/q.csv"
    )
    assert latest_metadata(instance, PEOPLE)["dagster/row_count"] == 3
    assert_table_asset_shows_the_warehouse(instance, warehouse_url, "people")


def test_a_failed_file_has_its_reason_on_its_partition(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    write_csv(source_dir / "shop" / "a.csv", "sku\nA1\n")
    (source_dir / "shop" / "c.xlsx").write_bytes(b"definitely not a workbook")
    assert not full_sync(test_defs, instance).success
    [record] = instance.fetch_observations(AssetKey("local_spreadsheets"), limit=10).records
    assert record.partition_key == "shop/c.xlsx"
    observation = record.asset_observation
    assert observation is not None
    assert observation.metadata["status"].value == "failed"
    assert "shop/c.xlsx: not a readable workbook" in str(observation.metadata["error"].value)
    # A run of the file's partition alone records it the same way.
    test_defs.resolve_job_def("import_local_files").execute_in_process(
        instance=instance, partition_key="shop/c.xlsx", raise_on_error=False
    )
    records = instance.fetch_observations(AssetKey("local_spreadsheets"), limit=10).records
    assert [r.partition_key for r in records] == ["shop/c.xlsx", "shop/c.xlsx"]


def test_a_long_import_logs_its_progress_per_batch(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    rows = "\n".join(f"R{i},{i}" for i in range(250_000))
    write_csv(source_dir / "big" / "big.csv", f"id,n\n{rows}\n")
    result = full_sync(test_defs, instance)
    assert result.success
    lines = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.user_message.startswith("PROGRESS big/big.csv")
    ]
    # Batches of 100,000 rows: the second and the third are logged, with their running total.
    assert [line.split(": ")[1].split(" rows")[0] for line in lines] == ["200,000", "250,000"]
    assert all(line.endswith(" rows/s") for line in lines)


@pytest.mark.parametrize("kind", ["duckdb", "ducklake"])
def test_loading_before_any_import_creates_no_warehouse(
    kind: str,
    source_dir: Path,
    tmp_path: Path,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(source_dir))
    write_csv(source_dir / "people" / "p.csv", "name\nAda\n")
    store = tmp_path / "not-yet"
    url = (
        f"duckdb:///{store / 'warehouse.duckdb'}"
        if kind == "duckdb"
        else f"ducklake:///{store / 'meta.ducklake'}?data={store / 'data'}/"
    )
    defs = code_location(url)
    assert {key for key in defs.resolve_all_asset_keys() if key.path[0] == "warehouse"} == {PEOPLE}
    assert not store.exists()
    assert "Cannot read the tables" not in caplog.text
    # The first import creates it.
    assert full_sync(defs, instance).success
    assert any(store.iterdir())
    assert_table_asset_shows_the_warehouse(instance, url, "people")
