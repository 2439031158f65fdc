"""The assets executed by Dagster against real warehouses."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions

from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.defs.conftest import full_sync
from pgdatahub_dagster_tests.files import write_csv, write_xlsx

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _files(source_dir: Path) -> list[str]:
    write_csv(source_dir / "shop" / "a.csv", "sku,price\nA1,9.5\nA2,3\n")
    write_xlsx(source_dir / "shop" / "b.xlsx", {"Sheet1": [["sku", "price"], ["B1", 4], ["A1", 9.5]]})
    (source_dir / "shop" / "c.xlsx").write_bytes(b"definitely not a workbook")
    write_csv(source_dir / "shop" / "d.csv", "sku,price\nD1,1\n")
    return ["shop/a.csv", "shop/b.xlsx", "shop/c.xlsx", "shop/d.csv"]


def test_one_run_imports_a_range_of_partitions_and_fails_only_for_the_bad_file(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    keys = _files(source_dir)
    instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, keys)
    job = test_defs.resolve_job_def("import_local_files")
    result = job.execute_in_process(
        instance=instance, tags={RANGE_START: keys[0], RANGE_END: keys[-1]}, raise_on_error=False
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "1 of 4 files failed" in message
    assert "shop/c.xlsx: not a readable workbook" in message
    with connect(warehouse_url) as warehouse:
        # Everything else was committed before the run failed.
        assert warehouse.fetchall("SELECT sku FROM shop ORDER BY sku") == [("A1",), ("A2",), ("B1",), ("D1",)]

    # Re-running the range is safe: the good files are skipped by content, the bad one fails again.
    job.execute_in_process(
        instance=instance, tags={RANGE_START: keys[0], RANGE_END: keys[-1]}, raise_on_error=False
    )
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*) FROM shop") == [(4,)]
        statuses = warehouse.fetchall(
            "SELECT status, count(*) FROM etl_imports GROUP BY status ORDER BY status"
        )
        assert statuses == [("failed", 2), ("skipped", 3), ("success", 3)]


def test_single_file_run_reports_the_file_in_metadata(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    _files(source_dir)
    instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, ["shop/b.xlsx"])
    result = test_defs.resolve_job_def("import_local_files").execute_in_process(
        instance=instance, partition_key="shop/b.xlsx"
    )
    [table, materialization] = result.asset_materializations_for_node("local_spreadsheets")
    assert table.asset_key == AssetKey(["warehouse", "shop"])  # and the table the file wrote
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["status"] == "success"
    assert metadata["table"] == "shop"
    assert metadata["rows_read"] == 2 and metadata["rows_inserted"] == 2 and metadata["rows_duplicate"] == 0
    assert metadata["sheet"] == "Sheet1"
    assert len(metadata["file_sha256"]) == 64
    assert {change["change"] for change in metadata["schema_changes"]} == {"create_table", "add_column"}


def test_a_run_of_many_partitions_gives_each_its_own_file_metadata(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    write_csv(source_dir / "shop" / "a.csv", "sku,price\nA1,9.5\nA2,3\n")
    write_csv(source_dir / "shop" / "b.csv", "sku,price\nB1,4\n")
    write_csv(source_dir / "shop" / "c.csv", "sku,price\nC1,1\nC1,1\n")
    keys = ["shop/a.csv", "shop/b.csv", "shop/c.csv"]
    instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, keys)
    result = test_defs.resolve_job_def("import_local_files").execute_in_process(
        instance=instance, tags={RANGE_START: keys[0], RANGE_END: keys[-1]}
    )
    files = {
        m.partition: {key: value.value for key, value in m.metadata.items()}
        for m in result.asset_materializations_for_node("local_spreadsheets")
        if m.asset_key == AssetKey("local_spreadsheets")
    }
    assert {key: (m["source_file"], m["rows_inserted"]) for key, m in files.items()} == {
        "shop/a.csv": ("shop/a.csv", 2),
        "shop/b.csv": ("shop/b.csv", 1),
        "shop/c.csv": ("shop/c.csv", 1),
    }
    assert files["shop/c.csv"]["rows_duplicate"] == 1
    # One log line for the run's files, not one a file: each line is an event Dagster stores.
    # (A slow machine may add a line of progress, "IMPORTING: …", every 10 s.)
    lines = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.dagster_event is None]
    assert [line for line in lines if not line.startswith("IMPORTING")] == [
        "DONE: 3 files, 3 imported (4 new rows), 0 skipped, 0 failed"
    ]


def test_a_run_imports_a_linked_file_the_listing_reports_and_refuses_a_path_out_of_the_tree(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str, tmp_path: Path
) -> None:
    """A folder of links (the benchmarks', an archive unpacked elsewhere): the full sync
    imports them, so the backfill's runs do too. A key that names no file of the tree (a
    partition added by hand) fails the run with the reason, not a silent success."""
    write_csv(tmp_path / "elsewhere" / "a.csv", "sku\nA1\n")
    (source_dir / "shop").mkdir(parents=True)
    (source_dir / "shop" / "a.csv").symlink_to(tmp_path / "elsewhere" / "a.csv")
    write_csv(tmp_path / "outside.csv", "sku\nX9\n")
    instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, ["shop/a.csv", "../outside.csv"])
    job = test_defs.resolve_job_def("import_local_files")
    assert job.execute_in_process(instance=instance, partition_key="shop/a.csv").success
    refused = job.execute_in_process(instance=instance, partition_key="../outside.csv", raise_on_error=False)
    assert not refused.success
    failure = next(event for event in refused.all_events if event.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "../outside.csv: not a file of the source folder" in message
    assert instance.get_materialized_partitions(AssetKey("local_spreadsheets")) == {"shop/a.csv"}
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT sku, source_file FROM shop") == [("A1", "shop/a.csv")]


def test_folder_sync_imports_everything_and_marks_the_file_partitions(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "shop" / "a.csv", "sku\nA1\n")
    write_csv(source_dir / "people" / "p.csv", "name\nAda\n")
    result = (
        test_defs.resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={AssetKey("local_folder_sync")})
        .execute_in_process(instance=instance)
    )
    assert result.success
    assert set(instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name)) == {
        "shop/a.csv",
        "people/p.csv",
    }
    materialized = instance.get_materialized_partitions(AssetKey("local_spreadsheets"))
    assert materialized == {"shop/a.csv", "people/p.csv"}
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT sku FROM shop") == [("A1",)]
        assert warehouse.fetchall("SELECT name FROM people") == [("Ada",)]


def test_folder_sync_is_a_full_sync_that_applies_on_delete(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    (source_dir / "pgdatahub.yaml").write_text("shop:\n  on_delete: retract\n")
    write_csv(source_dir / "shop" / "a.csv", "sku\nA1\nA2\n")
    write_csv(source_dir / "shop" / "b.csv", "sku\nA2\nB1\n")
    assert full_sync(test_defs, instance).success
    (source_dir / "shop" / "a.csv").unlink()
    result = full_sync(test_defs, instance)
    assert result.success
    [materialization] = [
        m
        for m in result.asset_materializations_for_node("local_folder_sync")
        if m.asset_key.path == ["local_folder_sync"]
    ]
    assert materialization.metadata["files_gone"].value == 1
    assert materialization.metadata["rows_retracted"].value == 1  # A2 stays: b.csv holds it
    assert set(instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name)) == {"shop/b.csv"}
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT sku, source_file FROM shop ORDER BY sku") == [
            ("A2", "shop/b.csv"),
            ("B1", "shop/b.csv"),
        ]
    # The deletion reported the table it changed.
    table = instance.get_latest_materialization_event(AssetKey(["warehouse", "shop"]))
    assert table is not None and table.asset_materialization is not None
    assert table.asset_materialization.metadata["dagster/row_count"].value == 2
    # Nothing left to do: a repeated sync changes nothing.
    assert full_sync(test_defs, instance).success
    with connect(warehouse_url) as warehouse:
        assert warehouse.count("shop") == 2


def test_folder_sync_fails_on_a_missing_source_folder_and_deletes_nothing(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    (source_dir / "pgdatahub.yaml").write_text("shop:\n  on_delete: retract\n")
    write_csv(source_dir / "shop" / "a.csv", "sku\nA1\n")
    assert full_sync(test_defs, instance).success
    moved = source_dir.rename(source_dir.with_name("unmounted"))
    result = full_sync(test_defs, instance)
    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert f"the source folder {source_dir} does not exist" in message
    assert "Traceback" not in message
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT sku FROM shop") == [("A1",)]
    assert moved.is_dir()
