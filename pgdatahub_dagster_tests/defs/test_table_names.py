"""Folders that would share a table by accident, seen by a user of the code location."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, Definitions

from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.defs.conftest import full_sync as _sync
from pgdatahub_dagster_tests.files import write_csv


def test_a_full_sync_fails_the_colliding_folders_alone_naming_both(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "Leads" / "a.csv", "name\nAcme\n")
    write_csv(source_dir / "leads" / "b.csv", "name\nBlue\n")
    write_csv(source_dir / "shop" / "c.csv", "sku\nA1\n")

    result = _sync(test_defs, instance)

    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "2 of 3 files failed; the others were imported" in message
    assert "Leads/a.csv: folders 'inbox/Leads' and 'inbox/leads' would both load into table leads" in message
    assert "leads/b.csv: folders 'inbox/leads' and 'inbox/Leads' would both load into table leads" in message
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT sku FROM shop") == [("A1",)]
        assert not warehouse.table_exists("leads")
        failed = warehouse.fetchall("SELECT source_file FROM etl_imports WHERE status = 'failed' ORDER BY 1")
        assert failed == [("Leads/a.csv",), ("leads/b.csv",)]
