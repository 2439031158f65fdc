"""Revert as a Dagster job, and the warehouse's figures and checks in the UI."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetCheckEvaluation, AssetKey, DagsterInstance, Definitions

from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.files import write_csv


def _import_all(defs: Definitions, instance: DagsterInstance) -> None:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey("local_folder_sync")}
    )
    assert job.execute_in_process(instance=instance).success


def test_revert_job_undoes_one_files_import(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "t" / "a.csv", "name\nAcme\n")
    write_csv(source_dir / "t" / "b.csv", "name\nBlue\n")
    _import_all(test_defs, instance)
    job = test_defs.resolve_job_def("revert_imports")
    result = job.execute_in_process(
        instance=instance, run_config={"ops": {"revert_imports_op": {"config": {"file": "t/a.csv"}}}}
    )
    assert result.success
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT name FROM t") == [("Blue",)]
        assert warehouse.fetchall("SELECT status FROM etl_imports WHERE source_file = 't/a.csv'") == [
            ("reverted",)
        ]

    ambiguous = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"revert_imports_op": {"config": {"file": "t/b.csv", "run": "x"}}}},
        raise_on_error=False,
    )
    assert not ambiguous.success
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT name FROM t") == [("Blue",)]


def test_status_asset_carries_the_figures_and_its_checks_pass(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    write_csv(source_dir / "t" / "a.csv", "name\nAcme\nAcme\nBlue\n")
    (source_dir / "t" / "broken.xlsx").write_bytes(b"not a workbook")
    write_csv(source_dir / "u" / "b.csv", "n\n1\n")
    result = (
        test_defs.resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={AssetKey("local_folder_sync")})
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert not result.success  # broken.xlsx failed; the others were imported
    assert set(instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name)) == {
        "t/a.csv",
        "t/broken.xlsx",
        "u/b.csv",
    }

    status_job = test_defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey("warehouse_status")},
        asset_check_selection={
            check
            for check in test_defs.resolve_asset_graph().asset_check_keys
            if check.asset_key.path == ["warehouse_status"]
        },
    )
    outcome = status_job.execute_in_process(instance=instance)
    [materialization] = outcome.asset_materializations_for_node("warehouse_status")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["total_rows"] == 3 and metadata["files_imported"] == 2 and metadata["files_failed"] == 1
    assert "| t | 2 | 1 | 0 | 1 | 0 | 0 |" in str(metadata["tables"])
    assert "t/broken.xlsx: not a readable workbook" in str(metadata["recent_failures"])
    evaluations = {e.check_name: e.passed for e in outcome.get_asset_check_evaluations()}
    assert evaluations == {"unique_keys_hold": True, "ledger_matches_tables": True}


def _run_checks(defs: Definitions, instance: DagsterInstance) -> dict[str, AssetCheckEvaluation]:
    checks = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=set(defs.resolve_asset_graph().asset_check_keys)
    )
    outcome = checks.execute_in_process(instance=instance)
    return {e.check_name: e for e in outcome.get_asset_check_evaluations()}


def test_ledger_check_fails_when_rows_are_changed_behind_its_back(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "t" / "a.csv", "name\nAcme\nBlue\n")
    _import_all(test_defs, instance)
    with connect(warehouse_url) as warehouse:
        warehouse.execute("DELETE FROM t WHERE name = 'Blue'")
    evaluations = _run_checks(test_defs, instance)
    assert evaluations["unique_keys_hold"].passed
    assert not evaluations["ledger_matches_tables"].passed
    assert evaluations["ledger_matches_tables"].metadata["mismatches"].value == {
        "t": {"found": 1, "ledger": 2, "unaccounted": 0}
    }


def test_ledger_check_fails_when_a_row_names_an_import_that_holds_nothing(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "t" / "a.csv", "name\nAcme\nBlue\n")
    _import_all(test_defs, instance)
    with connect(warehouse_url) as warehouse:
        # The row count still matches the ledger, but one row claims a file nobody imported.
        warehouse.execute("UPDATE t SET source_file_id = 'ghost.csv' WHERE name = 'Blue'")
    evaluations = _run_checks(test_defs, instance)
    assert not evaluations["ledger_matches_tables"].passed
    assert evaluations["ledger_matches_tables"].metadata["mismatches"].value == {
        "t": {"found": 2, "ledger": 2, "unaccounted": 1}
    }
