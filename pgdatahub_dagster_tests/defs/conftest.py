"""A real Dagster instance (SQLite, in a temporary DAGSTER_HOME) and test definitions that
reuse the code location's assets, jobs and sensors with resources pointed at test data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AddDynamicPartitionsRequest, DagsterInstance, Definitions, SensorResult, instance_for_test

from pgdatahub_dagster.defs.assets import local_folder_sync, local_spreadsheets
from pgdatahub_dagster.defs.jobs import import_local_files
from pgdatahub_dagster.defs.resources import LocalFolderResource, WarehouseResource
from pgdatahub_dagster.defs.sensors import local_folder_sensor


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
def test_defs(source_dir: Path, warehouse_url: str) -> Definitions:
    return Definitions(
        assets=[local_spreadsheets, local_folder_sync],
        jobs=[import_local_files],
        sensors=[local_folder_sensor],
        resources={
            "warehouse": WarehouseResource(database_url=warehouse_url),
            "local_folder": LocalFolderResource(source_dir=str(source_dir)),
        },
    )


def apply_partition_requests(instance: DagsterInstance, result: SensorResult) -> None:
    """What the sensor daemon does with a tick's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
