"""The checks on each table asset, each failing for a state made for real in the warehouse,
and the schedule that runs them with warehouse_status."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetKey, DagsterInstance

from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.defs.conftest import code_location, full_sync
from pgdatahub_dagster_tests.files import write_csv

Evaluations = dict[tuple[str, str], AssetCheckEvaluation]


def _check_warehouse(warehouse_url: str, instance: DagsterInstance) -> Evaluations:
    """What the hourly schedule launches: warehouse_status and every check."""
    defs = code_location(warehouse_url)
    schedule = defs.resolve_schedule_def("check_warehouse_hourly")
    outcome = defs.resolve_job_def(schedule.job_name).execute_in_process(instance=instance)
    return {(e.asset_key.to_user_string(), e.check_name): e for e in outcome.get_asset_check_evaluations()}


def _two_tables(source_dir: Path, warehouse_url: str, instance: DagsterInstance) -> None:
    write_csv(source_dir / "shop" / "a.csv", "sku,price\nA1,9.5\nA2,3\n")
    write_csv(source_dir / "people" / "p.csv", "name\nAda\nBob\n")
    assert full_sync(code_location(warehouse_url), instance).success


@pytest.mark.usefixtures("test_defs")  # the environment: PGDATAHUB_SOURCE_DIR
def test_every_check_of_every_table_passes_after_an_import(
    source_dir: Path, warehouse_url: str, instance: DagsterInstance
) -> None:
    _two_tables(source_dir, warehouse_url, instance)
    evaluations = _check_warehouse(warehouse_url, instance)
    assert {key for key, e in evaluations.items() if e.passed} == {
        (table, check)
        for table in ("warehouse/shop", "warehouse/people")
        for check in ("unique_keys_hold", "ledger_matches_tables", "schema_drift")
    } | {("warehouse_status", "unique_keys_hold"), ("warehouse_status", "ledger_matches_tables")}
    schedule = code_location(warehouse_url).resolve_schedule_def("check_warehouse_hourly")
    assert schedule.cron_schedule == "0 * * * *"


@pytest.mark.usefixtures("test_defs")  # the environment: PGDATAHUB_SOURCE_DIR
def test_unique_keys_hold_fails_on_the_table_with_a_repeated_key_alone(
    source_dir: Path, warehouse_url: str, instance: DagsterInstance
) -> None:
    _two_tables(source_dir, warehouse_url, instance)
    with connect(warehouse_url) as warehouse:
        # Someone dropped the unique index and copied a row by hand.
        warehouse.execute(f"DROP INDEX {warehouse.quote(warehouse.row_key_index_name('shop'))}")
        warehouse.execute("INSERT INTO shop SELECT * FROM shop WHERE sku = 'A1'")
    evaluations = _check_warehouse(warehouse_url, instance)
    failed = evaluations["warehouse/shop", "unique_keys_hold"]
    assert not failed.passed and failed.metadata["repeated_keys"].value == 1
    assert evaluations["warehouse/people", "unique_keys_hold"].passed


@pytest.mark.usefixtures("test_defs")  # the environment: PGDATAHUB_SOURCE_DIR
def test_ledger_matches_tables_fails_on_the_table_changed_behind_its_back_alone(
    source_dir: Path, warehouse_url: str, instance: DagsterInstance
) -> None:
    _two_tables(source_dir, warehouse_url, instance)
    with connect(warehouse_url) as warehouse:
        warehouse.execute("DELETE FROM people WHERE name = 'Bob'")
    evaluations = _check_warehouse(warehouse_url, instance)
    failed = evaluations["warehouse/people", "ledger_matches_tables"]
    assert not failed.passed
    assert failed.metadata["mismatch"].value == {"found": 1, "ledger": 2, "unaccounted": 0}
    assert evaluations["warehouse/shop", "ledger_matches_tables"].passed
    # The scheduled run also brought the table asset up to date (an observation: nothing imported).
    [observation] = instance.fetch_observations(AssetKey(["warehouse", "people"]), limit=1).records
    assert observation.asset_observation is not None
    assert observation.asset_observation.metadata["dagster/row_count"].value == 1


@pytest.mark.usefixtures("test_defs")  # the environment: PGDATAHUB_SOURCE_DIR
def test_schema_drift_warns_after_an_import_that_added_or_widened_columns(
    source_dir: Path, warehouse_url: str, instance: DagsterInstance
) -> None:
    _two_tables(source_dir, warehouse_url, instance)
    write_csv(source_dir / "shop" / "b.csv", "sku,price,size\nB1,n/a,L\n")
    assert full_sync(code_location(warehouse_url), instance).success
    drift = _check_warehouse(warehouse_url, instance)["warehouse/shop", "schema_drift"]
    assert not drift.passed and drift.severity == AssetCheckSeverity.WARN
    assert drift.description == (
        "the last import changed columns: price widened from DOUBLE PRECISION to TEXT, "
        "size added as TEXT (by shop/b.csv)"
    )
    # An import that changes no column clears it.
    write_csv(source_dir / "shop" / "c.csv", "sku,price\nC1,x\n")
    assert full_sync(code_location(warehouse_url), instance).success
    assert _check_warehouse(warehouse_url, instance)["warehouse/shop", "schema_drift"].passed
