"""The production instance (deploy/dagster.yaml, everything stored in PostgreSQL) with a real
`dagster-daemon`: the folder sensor finds a new spreadsheet, its run waits in the queue, the
queued run coordinator launches it, and the rows land in a PostgreSQL warehouse."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.deploy.conftest import (
    BIN,
    Processes,
    base_env,
    count_rows,
    deploy_config,
    production_home,
    sqlalchemy_url,
    wait_for,
)
from pgdatahub_dagster_tests.files import write_xlsx

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _values(node: object) -> list[object]:
    if isinstance(node, dict):
        return [value for child in node.values() for value in _values(child)]
    if isinstance(node, list):
        return [value for child in node for value in _values(child)]
    return [node]


def test_deploy_config_keeps_every_secret_in_the_environment() -> None:
    config = deploy_config()
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}}
    assert not [value for value in _values(config) if "://" in str(value)]


@pytest.mark.timeout(180)
def test_daemon_on_the_postgres_instance_imports_what_the_sensor_finds(
    tmp_path: Path,
    postgres_url: str,
    make_database: Callable[[str], str],
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse_url = make_database("warehouse")
    source = tmp_path / "inbox"
    write_xlsx(
        source / "leads" / "march.xlsx",
        {
            "Leads": [
                ["Business Name", "Zip", "Signed"],
                ["Acme", "01234", dt.date(2026, 3, 2)],
                ["Blue Bottle", "98765", dt.date(2026, 3, 9)],
            ]
        },
    )
    home = production_home(tmp_path)
    instance_url = sqlalchemy_url(postgres_url)
    env = base_env(
        DAGSTER_HOME=str(home),
        DAGSTER_POSTGRES_URL=instance_url,
        PGDATAHUB_DATABASE_URL=warehouse_url,
        PGDATAHUB_SOURCE_DIR=str(source),
        PGDATAHUB_SENSOR_INTERVAL="1",
        PGDATAHUB_SENSOR_SETTLE_SECONDS="0",
    )
    processes.start(
        "dagster-daemon",
        [str(BIN / "dagster-daemon"), "run", "-m", "pgdatahub_dagster.definitions"],
        env,
        tmp_path,
    )

    wait_for(
        "the rows in the warehouse", lambda: count_rows(warehouse_url, "leads") == 2, 120, processes.logs
    )

    # The same instance, opened here the way every Dagster process opens it.
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)
    with DagsterInstance.from_config(str(home)) as instance:

        def finished_run() -> RunRecord | None:
            records = instance.get_run_records(RunsFilter(job_name="import_local_files"))
            return records[0] if len(records) == 1 and records[0].dagster_run.status in FINISHED else None

        record = wait_for("the run to finish", finished_run, 60, processes.logs)
        run = record.dagster_run
        assert run.status == DagsterRunStatus.SUCCESS, processes.logs()
        assert run.job_name == "import_local_files"
        assert run.tags["dagster/sensor_name"] == "local_folder_sensor"
        assert run.tags["dagster/partition"] == "leads/march.xlsx"
        assert run.tags["pgdatahub/source"] == "local"
        # It went through the run queue, and the import held a slot of the "warehouse" pool,
        # whose limit is the deploy config's default.
        assert instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_ENQUEUED)
        assert instance.get_concurrency_config().run_queue_config is not None
        limit = deploy_config()["concurrency"]["pools"]["default_limit"]
        info = instance.event_log_storage.get_concurrency_info("warehouse")
        assert info.slot_count == limit
        assert info.claimed_slots == []  # released after the run
        assert instance.get_dynamic_partitions("local_files") == ["leads/march.xlsx"]

    # Nothing was stored in SQLite under DAGSTER_HOME: runs, events and schedules live in PostgreSQL.
    assert not list(home.rglob("*.db"))

    with connect(warehouse_url) as warehouse:
        rows = warehouse.fetchall("SELECT business_name, zip, signed FROM leads ORDER BY business_name")
        assert rows == [("Acme", "01234", dt.date(2026, 3, 2)), ("Blue Bottle", "98765", dt.date(2026, 3, 9))]
        ledger = warehouse.fetchall("SELECT status, source_file, run_id FROM etl_imports")
        assert ledger == [("success", "leads/march.xlsx", run.run_id)]
