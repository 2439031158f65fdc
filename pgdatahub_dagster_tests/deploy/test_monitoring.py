"""A run worker that dies mid-import, on the production instance with a real daemon: the code
server marks the run failed, run retries start it again, and run monitoring frees the pool slot
the dead run still held, without which the retry could never import (the pool has one slot).

deploy/dagster.yaml is used as it is but for two things: the pool has one slot, and the
monitoring daemon polls every second and frees slots one second after a run ended, instead of
30 and 60 seconds, so the test does not wait minutes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.deploy.conftest import (
    BIN,
    Processes,
    base_env,
    production_home,
    sqlalchemy_url,
    wait_for,
)
from pgdatahub_dagster_tests.files import write_csv

OVERRIDES = {
    "concurrency": {"pools": {"default_limit": 1}},
    "run_monitoring": {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1},
}


def _waiting_for_advisory_lock(warehouse_url: str) -> bool:
    with psycopg.connect(warehouse_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
        return bool(row and row[0])


def _pid(instance: DagsterInstance, run_id: str, event_type: DagsterEventType) -> int:
    events = instance.all_logs(run_id, of_type=event_type)
    assert len(events) == 1
    pid = events[0].get_dagster_event().pid
    assert pid is not None
    return pid


@pytest.mark.long
@pytest.mark.timeout(180)
def test_a_crashed_run_is_retried_and_its_pool_slot_freed(
    tmp_path: Path,
    postgres_url: str,
    make_database: Callable[[str], str],
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse_url = make_database("warehouse")
    source = tmp_path / "inbox"
    write_csv(source / "leads" / "march.csv", "name,city\nAcme,Berlin\nBlue,Paris\n")
    home = production_home(tmp_path, OVERRIDES)
    instance_url = sqlalchemy_url(postgres_url)
    env = base_env(
        DAGSTER_HOME=str(home),
        DAGSTER_POSTGRES_URL=instance_url,
        PGDATAHUB_DATABASE_URL=warehouse_url,
        PGDATAHUB_SOURCE_DIR=str(source),
        PGDATAHUB_SENSOR_INTERVAL="1",
        PGDATAHUB_SENSOR_SETTLE_SECONDS="0",
    )
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)

    with DagsterInstance.from_config(str(home)) as instance:
        # Another writer of the table `leads` holds its lock, so the import, once it holds the
        # pool's only slot, waits inside the run: the moment to kill the run's processes.
        with connect(warehouse_url) as other_writer, other_writer.transaction():
            other_writer.lock("leads")
            command = [str(BIN / "dagster-daemon"), "run", "-m", "pgdatahub_dagster.definitions"]
            processes.start("dagster-daemon", command, env, tmp_path)
            wait_for(
                "the import to wait for the table lock",
                lambda: _waiting_for_advisory_lock(warehouse_url),
                120,
                processes.logs,
            )
            [record] = instance.get_run_records(RunsFilter(job_name="import_local_files"))
            crashed = record.dagster_run
            assert crashed.status == DagsterRunStatus.STARTED
            [slot] = instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
            assert slot.run_id == crashed.run_id
            # The run worker and its step process die at once, as when a host is lost.
            os.kill(_pid(instance, crashed.run_id, DagsterEventType.RUN_START), signal.SIGKILL)
            os.kill(_pid(instance, crashed.run_id, DagsterEventType.STEP_START), signal.SIGKILL)

        def retry() -> DagsterRun | None:
            for run in instance.get_runs():
                if run.tags.get("dagster/parent_run_id") == crashed.run_id and run.is_finished:
                    return run
            return None

        retried = wait_for("the retry to finish", retry, 120, processes.logs)
        assert retried.status == DagsterRunStatus.SUCCESS, processes.logs()
        assert retried.tags["dagster/retry_number"] == "1"
        crashed_now = instance.get_run_by_id(crashed.run_id)
        assert crashed_now is not None and crashed_now.status == DagsterRunStatus.FAILURE
        # The retry could only import with the pool's one slot back, and nothing but the
        # monitoring daemon frees the slots of a run whose processes are gone. (Its "Freed N
        # slots" log line never prints: dagster 1.13's free_concurrency_slots_for_run returns None.)
        assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []

    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT name FROM leads ORDER BY name") == [("Acme",), ("Blue",)]
        ledger = warehouse.fetchall("SELECT status, run_id FROM etl_imports")
        assert ledger == [("success", retried.run_id)]
