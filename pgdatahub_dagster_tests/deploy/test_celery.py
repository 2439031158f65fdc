"""Scale-out: import runs whose steps execute on Celery workers (PGDATAHUB_EXECUTOR=celery).

Everything is real and needs no server beyond the tests' PostgreSQL: the broker is kombu's
SQLAlchemy transport on a PostgreSQL database, the result backend Celery's file backend, the
workers are started with `dagster-celery worker start` and deploy/celery/worker.yaml, and the
runs are `dagster job execute` of the code location's own `import_local_files` job, on the
production instance (deploy/dagster.yaml).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, EventLogEntry, RunsFilter

from pgdatahub_dagster.defs.partitions import partition_key_for
from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.deploy.conftest import (
    BIN,
    DEPLOY,
    Processes,
    base_env,
    production_home,
    sqlalchemy_url,
    wait_for,
)
from pgdatahub_dagster_tests.files import write_csv

WORKERS = ["pgdatahub-test-1", "pgdatahub-test-2"]
PROCESSES_PER_WORKER = 2
POOL_SLOTS = 2
FILES = {"leads/a.csv": "name\nAcme\n", "leads/b.csv": "name\nBlue\nCorner\n", "leads/c.csv": "name\nDelta\n"}


def _ready(worker_log: Path) -> bool:
    return " ready." in worker_log.read_text()


def _exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


def _single(events: Sequence[EventLogEntry], event_type: DagsterEventType) -> EventLogEntry:
    matching = [event for event in events if event.dagster_event and event.dagster_event_type == event_type]
    assert len(matching) == 1, [event.message for event in events]
    return matching[0]


@pytest.mark.long
@pytest.mark.timeout(180)
def test_import_runs_execute_on_several_celery_workers(
    tmp_path: Path,
    postgres_url: str,
    make_database: Callable[[str], str],
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse_url = make_database("warehouse")
    broker_url = "sqla+" + sqlalchemy_url(make_database("broker"))
    results = tmp_path / "celery_results"
    results.mkdir()
    source = tmp_path / "inbox"
    for file_id, text in FILES.items():
        write_csv(source / file_id, text)
    home = production_home(tmp_path)
    instance_url = sqlalchemy_url(postgres_url)
    env = base_env(
        DAGSTER_HOME=str(home),
        DAGSTER_POSTGRES_URL=instance_url,
        PGDATAHUB_DATABASE_URL=warehouse_url,
        PGDATAHUB_SOURCE_DIR=str(source),
        PGDATAHUB_EXECUTOR="celery",
        PGDATAHUB_CELERY_BROKER=broker_url,
        PGDATAHUB_CELERY_BACKEND=results.as_uri(),
    )

    # What the sensor does before requesting runs: register one partition per file.
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_url)
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(
            LOCAL_FOLDER.partitions_name, [partition_key_for(file_id) for file_id in FILES]
        )
    # The deployment step of docs/deployment.md: the pool's limit set explicitly. Fewer slots
    # than runs, so a run may have to wait for a slot while the others import.
    pool = subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "warehouse", str(POOL_SLOTS)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pool.returncode == 0, pool.stderr[-3000:]

    # Workers one after the other, each ready before the next starts: kombu creates its broker
    # tables on first connection, and two processes creating them at once collide.
    for name in WORKERS:
        worker = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
        worker += ["-y", str(DEPLOY / "celery" / "worker.yaml"), "-n", name]
        worker += ["--", "--concurrency", str(PROCESSES_PER_WORKER)]
        processes.start(name, worker, env, tmp_path)
        wait_for(f"worker {name}", partial(_ready, tmp_path / f"{name}.log"), 90, processes.logs)

    # One run per file, all at once, as the sensor requests them.
    runs: dict[str, subprocess.Popen[bytes]] = {}
    for file_id in FILES:
        command = [str(BIN / "dagster"), "job", "execute", "-m", "pgdatahub_dagster.definitions"]
        command += ["-j", "import_local_files", "--tags", json.dumps({"dagster/partition": file_id})]
        runs[file_id] = processes.start(f"run_{file_id.replace('/', '_')}", command, env, tmp_path)
    for file_id, run in runs.items():
        wait_for(f"the run of {file_id}", partial(_exited, run), 120, processes.logs)
        assert run.returncode == 0, processes.logs()

    with connect(warehouse_url) as warehouse:
        names = warehouse.fetchall("SELECT name FROM leads ORDER BY name")
        ledger = warehouse.fetchall(
            "SELECT source_file, status, run_id, started_at, finished_at FROM etl_imports "
            "ORDER BY source_file"
        )
    assert names == [("Acme",), ("Blue",), ("Corner",), ("Delta",)]
    assert [(row[0], row[1]) for row in ledger] == [(file_id, "success") for file_id in FILES]
    # The pool held across processes: no moment had more imports in progress than slots.
    for row in ledger:
        assert len([other for other in ledger if other[3] <= row[3] < other[4]]) <= POOL_SLOTS

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(RunsFilter(job_name="import_local_files"))
        assert {record.dagster_run.run_id for record in records} == {row[2] for row in ledger}
        for record in records:
            assert record.dagster_run.status == DagsterRunStatus.SUCCESS
            events = instance.all_logs(record.dagster_run.run_id)
            messages = [event.message for event in events]
            # The run handed its step to Celery, one of the workers executed it, and it ran in
            # that worker's process, not in the run's.
            assert any("Submitting celery task" in message for message in messages), messages
            in_worker = [event for event in events if "in celery worker" in event.message]
            assert len(in_worker) == 1, messages
            worker_name = in_worker[0].get_dagster_event().engine_event_data.metadata["Celery worker"].value
            assert str(worker_name).split("@")[0] in WORKERS
            run_pid = _single(events, DagsterEventType.RUN_START).get_dagster_event().pid
            step_pid = _single(events, DagsterEventType.STEP_START).get_dagster_event().pid
            assert step_pid is not None and step_pid != run_pid
