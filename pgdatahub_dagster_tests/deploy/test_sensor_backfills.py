"""A large batch through the sensor and a real `dagster-daemon`: Dagster's own resolution of
the tick (partition requests, the backfill request, the backfill daemon's runs), not the
sensor function alone. A first load above PGDATAHUB_SENSOR_BACKFILL_FILES becomes one
backfill whose runs import every file; one file more gets a run of its own; the first tick
evaluated again asks for nothing new; every file deleted at once is one deletion run, the
partitions removed by the tick itself (none left to the daemon's partition requests)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, SensorResult, build_sensor_context
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.scheduler.instigation import InstigatorTick, InstigatorType

from pgdatahub_dagster.definitions import build_defs
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.local import LocalFolderResource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.deploy.conftest import (
    BIN,
    Processes,
    base_env,
    count_rows,
    production_home,
    sqlalchemy_url,
    wait_for,
)
from pgdatahub_dagster_tests.files import write_csv

FILES = 30
ROWS = 4
FILES_PER_RUN = 10
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _write(source: Path, index: int) -> None:
    lines = "".join(f"{index}-{row},{index * 100 + row}\n" for row in range(ROWS))
    write_csv(source / "leads" / f"f{index:03}.csv", f"code,amount\n{lines}")


def _expected(files: int) -> list[tuple[str, int]]:
    """What a from-scratch import of the files holds."""
    return sorted((f"{i}-{row}", i * 100 + row) for i in range(files) for row in range(ROWS))


def _finished(instance: DagsterInstance) -> list[DagsterRunStatus]:
    return [run.status for run in instance.get_runs(RunsFilter(job_name="import_local_files"))]


@pytest.mark.long
@pytest.mark.timeout(600)
def test_a_first_load_becomes_one_backfill_one_file_one_run_and_a_mass_deletion_one_run(
    tmp_path: Path,
    postgres_url: str,
    make_database: Callable[[str], str],
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse_url = make_database("warehouse")
    source = tmp_path / "inbox"
    for index in range(FILES):
        _write(source, index)
    (source / "pgdatahub.yaml").write_text("leads:\n  on_delete: retract\n")
    home = production_home(tmp_path, {"concurrency": {"pools": {"default_limit": 2}}})
    instance_url = sqlalchemy_url(postgres_url)
    settings = {
        "PGDATAHUB_DATABASE_URL": warehouse_url,
        "PGDATAHUB_SOURCE_DIR": str(source),
        "PGDATAHUB_SENSOR_INTERVAL": "1",
        "PGDATAHUB_SENSOR_SETTLE_SECONDS": "0",
        "PGDATAHUB_SENSOR_BACKFILL_FILES": "10",
        "PGDATAHUB_FILES_PER_RUN": str(FILES_PER_RUN),
    }
    env = base_env(DAGSTER_HOME=str(home), DAGSTER_POSTGRES_URL=instance_url, **settings)
    processes.start(
        "dagster-daemon",
        [str(BIN / "dagster-daemon"), "run", "-m", "pgdatahub_dagster.definitions"],
        env,
        tmp_path,
    )
    wait_for(
        "the first load", lambda: count_rows(warehouse_url, "leads") == FILES * ROWS, 300, processes.logs
    )

    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        wait_for(
            "the backfill to end",
            lambda: [b.status for b in instance.get_backfills()] == [BulkActionStatus.COMPLETED_SUCCESS],
            120,
            processes.logs,
        )
        (backfill,) = instance.get_backfills()
        assert backfill.tags["pgdatahub/source"] == "local"
        assert backfill.tags["dagster/sensor_name"] == "local_folder_sensor"
        # One backfill, FILES_PER_RUN files a run, and no run of its own for any file.
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert len(runs) == FILES // FILES_PER_RUN
        assert not instance.get_runs(RunsFilter(job_name="import_local_files"))
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs), processes.logs()
        assert len(instance.get_dynamic_partitions("local_files")) == FILES

        # The first tick evaluated again (Dagster does so when it could not keep its result):
        # the same files at the same versions are the same batch, and its backfill exists.
        defs = build_defs(
            {
                "warehouse": WarehouseResource(database_url=warehouse_url),
                "folder_mapping": FolderMappingResource(),
                "local_folder": LocalFolderResource(),
            }
        )
        sensor = defs.resolve_sensor_def("local_folder_sensor")
        with build_sensor_context(instance=instance, cursor=None, resources=defs.resources) as context:
            again = sensor(context)
        assert isinstance(again, SensorResult)
        assert not again.run_requests

        # One new file: one run, with the file's run key, as before.
        _write(source, FILES)
        wait_for(
            "the new file",
            lambda: count_rows(warehouse_url, "leads") == (FILES + 1) * ROWS,
            120,
            processes.logs,
        )
        wait_for("its run to end", lambda: set(_finished(instance)) <= FINISHED, 60, processes.logs)
        runs = instance.get_runs(RunsFilter(job_name="import_local_files"))
        single = [run for run in runs if "dagster/backfill" not in run.tags]
        assert len(single) == 1
        assert single[0].tags["dagster/partition"] == "leads/f030.csv"
        assert single[0].tags["dagster/run_key"].startswith("leads/f030.csv:")
        assert len(instance.get_backfills()) == 1
        with connect(warehouse_url) as warehouse:
            assert sorted(warehouse.fetchall("SELECT code, amount FROM leads")) == _expected(FILES + 1)
            ledger = warehouse.fetchall("SELECT status, count(*) FROM etl_imports GROUP BY status")
            assert ledger == [("success", FILES + 1)]

        # Every file deleted at once: one deletion run retracts them all, as a fresh import of
        # the empty tree would hold nothing; the tick removed the partitions itself.
        shutil.rmtree(source / "leads")
        wait_for("the deletion", lambda: count_rows(warehouse_url, "leads") == 0, 180, processes.logs)
        (deletion,) = instance.get_runs(RunsFilter(job_name="handle_deleted_files"))
        config = deletion.run_config["ops"]["handle_deleted_files_op"]["config"]
        assert config["file_ids"] == [f"leads/f{index:03}.csv" for index in range(FILES + 1)]
        assert instance.get_dynamic_partitions("local_files") == []
        removals = [
            result
            for tick in _sensor_ticks(instance, "local_folder_sensor")
            for result in tick.tick_data.dynamic_partitions_request_results
            if result.deleted_partitions
        ]
        assert not removals

    with connect(warehouse_url) as warehouse:
        ledger = warehouse.fetchall("SELECT status, count(*) FROM etl_imports GROUP BY status")
    assert sorted(ledger) == [("retracted", 2 * (FILES + 1))]


def _sensor_ticks(instance: DagsterInstance, sensor_name: str) -> list[InstigatorTick]:
    (state,) = [
        state
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if state.instigator_name == sensor_name
    ]
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
