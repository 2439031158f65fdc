"""A real Dagster instance (SQLite, in a temporary DAGSTER_HOME) and test definitions that
reuse the code location's assets, jobs and sensors with resources pointed at test data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    DagsterInstance,
    Definitions,
    DeleteDynamicPartitionsRequest,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    TableSchema,
    instance_for_test,
    partition_loading_context,
)
from dagster._core.definitions.automation_tick_evaluation_context import (
    build_run_requests_with_backfill_policies,
)
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.utils import make_new_backfill_id

from pgdatahub_dagster.definitions import build_defs
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.drive import DriveResource
from pgdatahub_dagster.defs.sources.local import LocalFolderResource
from pgdatahub_dagster.engine.warehouse import LINEAGE_COLUMNS, connect


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


@pytest.fixture
def test_defs(source_dir: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch) -> Definitions:
    """Configured through the environment, as users do: the source folder (and so its
    pgdatahub.yaml, if any) from PGDATAHUB_SOURCE_DIR."""
    monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(source_dir))
    monkeypatch.delenv("PGDATAHUB_CONFIG", raising=False)
    return code_location(warehouse_url)


def code_location(warehouse_url: str) -> Definitions:
    """The code location as it loads now, with the source folder of the environment: its
    table assets are the tables of the folders there at this moment."""
    return build_defs(
        {
            "warehouse": WarehouseResource(database_url=warehouse_url),
            "folder_mapping": FolderMappingResource(),
            "local_folder": LocalFolderResource(),
            "drive": DriveResource(),
        }
    )


def full_sync(defs: Definitions, instance: DagsterInstance) -> ExecuteInProcessResult:
    """``dagster asset materialize --select local_folder_sync``, in process; a failed file
    fails the run, which is an outcome here, not an error."""
    return (
        defs.resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={AssetKey("local_folder_sync")})
        .execute_in_process(instance=instance, raise_on_error=False)
    )


def apply_partition_requests(instance: DagsterInstance, result: SensorResult) -> None:
    """What the sensor daemon does with a tick's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            assert isinstance(request, DeleteDynamicPartitionsRequest)
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def launch(defs: Definitions, instance: DagsterInstance, request: RunRequest) -> bool:
    """What the daemon does with one run request: execute its job, partition, config and
    tags in process, or the runs of the backfill it asks for. A run that fails (a file failed
    to import) is an outcome, not an error."""
    if request.requires_backfill_daemon():
        return _run_backfill(defs, instance, request)
    job = defs.resolve_job_def(str(request.job_name))
    result = job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=dict(request.tags),
        raise_on_error=False,
    )
    return result.success


def _run_backfill(defs: Definitions, instance: DagsterInstance, request: RunRequest) -> bool:
    """What the daemons do with a backfill request: store the backfill with the request's tags
    (a tick evaluated again finds it by them), split it into runs by the assets' backfill
    policies, as the backfill daemon does, and execute them one after another; whether every
    run succeeded. The real daemons are exercised in ``deploy/test_sensor_backfills.py``."""
    subset = request.asset_graph_subset
    assert subset is not None
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=make_new_backfill_id(),
        backfill_timestamp=time.time(),
        tags=request.tags,
        dynamic_partitions_store=instance,
        asset_graph_subset=subset,
        title=None,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    with partition_loading_context(dynamic_partitions_store=instance):
        runs = build_run_requests_with_backfill_policies(
            list(subset.iterate_asset_partitions()), defs.resolve_asset_graph(), instance
        )
    job = defs.resolve_implicit_global_asset_job_def()
    outcomes = [
        job.get_subset(asset_selection=set(run.asset_selection or []))
        .execute_in_process(
            instance=instance,
            tags={**request.tags, **run.tags, BACKFILL_ID_TAG: backfill.backfill_id},
            raise_on_error=False,
        )
        .success
        for run in runs
    ]
    status = BulkActionStatus.COMPLETED_SUCCESS if all(outcomes) else BulkActionStatus.COMPLETED_FAILED
    instance.update_backfill(backfill.with_status(status))
    return all(outcomes)


def latest_metadata(instance: DagsterInstance, key: AssetKey) -> dict[str, object]:
    """The metadata of the asset's latest materialisation, as plain values."""
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None, key
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def assert_table_asset_shows_the_warehouse(instance: DagsterInstance, warehouse_url: str, table: str) -> None:
    """The table asset's latest materialisation carries the table's row count, qualified name
    and columns with their SQL types, its lineage columns marked."""
    metadata = latest_metadata(instance, AssetKey(["warehouse", table]))
    with connect(warehouse_url) as warehouse:
        rows = warehouse.count(table)
        columns = warehouse.column_types(table)
        database, schema = warehouse.fetchall("SELECT current_database(), current_schema()")[0]
    assert metadata["dagster/row_count"] == rows
    assert metadata["dagster/table_name"] == f"{database}.{schema}.{table}"
    schema_value = metadata["dagster/column_schema"]
    assert isinstance(schema_value, TableSchema)
    assert [(c.name, c.type) for c in schema_value.columns] == columns
    lineage = {c.name for c in schema_value.columns if c.tags.get("lineage") == "true"}
    assert lineage == set(LINEAGE_COLUMNS)
