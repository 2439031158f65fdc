"""Bulk imports are Dagster backfills, run by the real daemon: pausing one is cancelling the
backfill, resuming it is backfilling again the partitions that are missing or failed, and the
warehouse then holds exactly what one uninterrupted import of the same files gives.

``dagster-daemon run`` (what ``bin/ui`` starts next to the UI) runs as a subprocess in a
process group of its own, on a SQLite instance in a temporary DAGSTER_HOME holding the
repository's dagster.yaml (run queue, the ``warehouse`` pool). It evaluates the backfills,
splits them into runs of ``PGDATAHUB_FILES_PER_RUN`` files (``BackfillPolicy.multi_run``),
queues and launches them, and cancels them; the runs import into PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    materialize,
)

# The backfill model is not exported by `dagster`; it is what the UI's GraphQL mutations use
# (see "Backfills as the UI launches and cancels them" below). Dagster is pinned, 1.13.27.
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
    PARTITION_NAME_TAG,
)
from dagster._core.utils import make_new_backfill_id

from pgdatahub_dagster.definitions import defs
from pgdatahub_dagster.defs.assets import WAREHOUSE_POOL
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER, LocalFolderResource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.deploy.conftest import BIN, Processes, base_env, wait_for
from pgdatahub_dagster_tests.faults import TableLock
from pgdatahub_dagster_tests.files import write_csv, write_xlsx

LOCAL_SPREADSHEETS = AssetKey(LOCAL_FOLDER.asset_name)

ROOT = Path(__file__).resolve().parents[2]
SUCCESS, CANCELED = DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED
FILES_PER_RUN = 2
# The run that the test catches in the middle of an import: it commits the first file, then
# waits for the lock of the second one's table (see TableLock).
HELD_RUN = ["leads/2026-05.xlsx", "returns/week_1.csv"]
HELD_TABLE = "returns"
# Ledger columns that say what an import did, not when or in which run.
LEDGER_CONTENT = ("table_name", "status", "rows_read", "rows_inserted", "rows_duplicate", "file_sha256")


def _write_files(root: Path) -> list[str]:
    """12 files in 3 folders (3 tables), returned as partition keys (their paths) in the order
    the backfill takes them: leads/ ×5, returns/ ×1, stock/ ×6, so that with 2 files per run
    one run holds HELD_RUN. No two files share content or a business key, so what an import
    inserts does not depend on the order in which runs take the files; there are duplicate
    rows within files, and across files a new column and a widened type."""
    root.mkdir()
    (root / "pgdatahub.yaml").write_text("leads:\n  unique_key: [business_name, phone]\n")
    for n in range(1, 6):
        write_xlsx(
            root / "leads" / f"2026-0{n}.xlsx",
            {
                "Sheet1": [
                    ["Business Name", "Zip", "Phone", "Signed"],
                    [f"Shop {n}", f"0{n}234", f"(555) 20{n}-1000", dt.date(2026, n, 2)],
                    [f"Bakery {n}", f"9{n}765", f"555-30{n}-2000", dt.date(2026, n, 9)],
                    [f" shop {n} ", f"0{n}234", f"555.20{n}.1000", dt.date(2026, n, 2)],  # a duplicate
                ]
            },
        )
    write_csv(root / "returns" / "week_1.csv", "order_id,reason\n101,damaged\n102,late\n")
    for n in range(6):
        header: list[object] = ["SKU", "Count"]
        first: list[object] = [f"S{n}", 2.5 if n == 3 else n]  # shelf_3 widens count to DOUBLE
        if n == 5:  # shelf_5 adds a column
            header, first = [*header, "Aisle"], [*first, "B7"]
        rows = [header, first, [f"T{n}", n * 10], [f"T{n}", n * 10]]
        if n % 2:
            write_xlsx(root / "stock" / f"shelf_{n}.xlsx", {"Sheet1": rows})
        else:
            write_csv(root / "stock" / f"shelf_{n}.csv", "".join(",".join(map(str, r)) + "\n" for r in rows))
    return sorted(str(path.relative_to(root)) for path in root.glob("*/*"))


@pytest.fixture
def held_table(postgres_url: str) -> Iterator[TableLock]:
    lock = TableLock(postgres_url, HELD_TABLE)
    try:
        yield lock
    finally:
        lock.release()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """The daemon and all it starts (code server, run workers, step processes) share its
    process group, which is stopped when the test ends, passed or failed."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def reference_url(postgres_admin_url: str) -> Iterator[str]:
    """A second fresh PostgreSQL database, for the uninterrupted import."""
    database = f"pgdatahub_reference_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    yield urlunsplit(urlsplit(postgres_admin_url)._replace(path=f"/{database}"))
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# -- Backfills as the UI launches and cancels them ------------------------------------------------
#
# The UI launches a backfill with the GraphQL mutation launchPartitionBackfill and cancels one
# with cancelPartitionBackfill. Their resolvers (dagster_graphql/implementation/execution/
# backfill.py: create_and_launch_partition_backfill, cancel_partition_backfill) do this on the
# instance: PartitionBackfill.from_asset_partitions + add_backfill, and update_backfill of the
# re-read backfill with status CANCELING. The test calls the same instance methods rather than
# running a webserver: GraphQL adds only permission checks on top, a webserver would be a
# second code server on a 2-core machine, and this way the first backfill is stored before the
# daemon starts, which picks it up at its first iteration instead of one 30 s later. All the
# rest (evaluating backfills, splitting them into runs, queueing, launching and cancelling
# runs, marking backfills CANCELED or COMPLETED) is the daemon's own work.


def _launch_backfill(instance: DagsterInstance, keys: list[str], title: str) -> str:
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=defs.resolve_asset_graph(),
        partition_names=keys,
        asset_selection=[LOCAL_SPREADSHEETS],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def _cancel_backfill(instance: DagsterInstance, backfill_id: str) -> None:
    backfill = instance.get_backfill(backfill_id)
    assert backfill is not None
    instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))


def _status(instance: DagsterInstance, backfill_id: str) -> BulkActionStatus:
    backfill = instance.get_backfill(backfill_id)
    assert backfill is not None
    return backfill.status


def _runs(instance: DagsterInstance, backfill_id: str) -> list[DagsterRun]:
    return list(instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})))


def _partitions_of(run: DagsterRun, keys: list[str]) -> list[str]:
    """The partitions of one run: a range of the registered keys, or a single key."""
    if PARTITION_NAME_TAG in run.tags:
        return [run.tags[PARTITION_NAME_TAG]]
    start = keys.index(run.tags[ASSET_PARTITION_RANGE_START_TAG])
    end = keys.index(run.tags[ASSET_PARTITION_RANGE_END_TAG])
    return keys[start : end + 1]


def _unmaterialized_targets(instance: DagsterInstance, backfill_id: str) -> list[str]:
    """What the UI's "Re-execute from failure" of a finished backfill requests: its target
    partitions minus those it materialized (dagster_graphql's retry_partition_backfill)."""
    backfill = instance.get_backfill(backfill_id)
    assert backfill is not None
    data = backfill.get_asset_backfill_data(defs.resolve_asset_graph())
    remaining = data.target_subset - data.materialized_subset
    return sorted(str(item.partition_key) for item in remaining.iterate_asset_partitions())


# -- The warehouse --------------------------------------------------------------------------------


def _tables(url: str) -> dict[str, tuple[dict[str, str], list[tuple[Any, ...]]]]:
    """Each data table: its columns with their types, and its rows without the load time, sorted."""
    result = {}
    with connect(url) as warehouse:
        for table in sorted({str(row["table_name"]) for row in warehouse.ledger()}):
            columns = {
                str(name): str(kind)
                for name, kind in warehouse.fetchall(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                )
            }
            names = sorted(name for name in columns if name != "load_timestamp")
            select = ", ".join(warehouse.quote(name) for name in names)
            rows = warehouse.fetchall(f"SELECT {select} FROM {warehouse.quote(table)}")
            result[table] = (columns, sorted(rows, key=repr))
    return result


def _ledger(url: str) -> list[dict[str, Any]]:
    with connect(url) as warehouse:
        return list(warehouse.ledger())


def _content(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["source_file"], *(row[name] for name in LEDGER_CONTENT))


# -- The test -------------------------------------------------------------------------------------


@pytest.mark.long  # about 100 s with a real daemon: CI runs it with -m long
@pytest.mark.timeout(300)
# Dagster's own backfill code (asset_backfill.py) calls a deprecated method of its own.
@pytest.mark.filterwarnings("ignore:Function `AssetSelection.sources` is deprecated:DeprecationWarning")
def test_a_cancelled_and_relaunched_backfill_imports_exactly_what_an_uninterrupted_one_does(
    tmp_path: Path,
    postgres_url: str,
    reference_url: str,
    held_table: TableLock,
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "inbox"
    keys = _write_files(source)
    assert len(keys) == 12 and keys[4:6] == HELD_RUN
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = base_env(
        DAGSTER_HOME=str(home),
        PGDATAHUB_DATABASE_URL=postgres_url,
        PGDATAHUB_SOURCE_DIR=str(source),
        PGDATAHUB_FILES_PER_RUN=str(FILES_PER_RUN),
        # The code location's sensors start RUNNING, and local_folder_sensor would request a run
        # for every file at its first tick. Stopping it through the instance would race with
        # that tick (the daemon ticks it as soon as it starts); instead it may request no run at
        # all (a limit of 0 runs per tick: every file waits "for the next tick"), and ticks once
        # an hour. The test checks below that every run came from its backfills. drive_sensor
        # skips: Drive is not configured (base_env drops every PGDATAHUB_ variable).
        PGDATAHUB_SENSOR_MAX_RUNS="0",
        PGDATAHUB_SENSOR_MAX_FILES="0",
        PGDATAHUB_SENSOR_INTERVAL="3600",
    )

    with DagsterInstance.from_config(str(home)) as instance:
        # PostgreSQL takes imports side by side: two slots (README: raise the pool for
        # PostgreSQL). With dagster.yaml's single slot, the held run would stall all others.
        instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 2)
        # What local_folder_sensor or local_folder_sync would have registered.
        instance.add_dynamic_partitions(LOCAL_FOLDER.partitions_name, keys)
        bulk = _launch_backfill(instance, keys, "bulk import")
        processes.start(
            "dagster-daemon",
            [str(BIN / "dagster-daemon"), "run", "-m", "pgdatahub_dagster.definitions"],
            env,
            tmp_path,
        )

        # Pause while an import is in progress. The daemon acts on a cancel at its next backfill
        # iteration (every 30 s); a real bulk import has far more than that left to do, 12
        # small files may not, hence the held table: the run of HELD_RUN commits its first file
        # and waits for the second, inside its transaction, until the cancel stops it.
        def one_succeeded_and_one_waits() -> bool:
            # A fresh connection each time: pg_stat_activity is a snapshot per transaction.
            with psycopg.connect(postgres_url, autocommit=True) as probe:
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (held_table.pid,),
                ).fetchone()
            succeeded = any(run.status == SUCCESS for run in _runs(instance, bulk))
            return waiting == (1,) and succeeded

        wait_for(
            "a run of the backfill to succeed and the held one to wait in its import",
            one_succeeded_and_one_waits,
            120,
            processes.logs,
        )
        _cancel_backfill(instance, bulk)

        # While the daemon gets to the cancel: the reference, every file imported in one run of
        # local_folder_sync into a second database (in this process, on an ephemeral instance,
        # so the daemon's instance sees nothing of it).
        monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(source))
        monkeypatch.delenv("PGDATAHUB_CONFIG", raising=False)
        reference = materialize(
            [defs.get_assets_def("local_folder_sync")],
            resources={
                "warehouse": WarehouseResource(database_url=reference_url),
                "local_folder": LocalFolderResource(),
                "folder_mapping": FolderMappingResource(),
            },
        )
        assert reference.success

        def bulk_stopped() -> bool:
            stopping = _status(instance, bulk) in (BulkActionStatus.CANCELING, BulkActionStatus.CANCELED)
            return stopping and all(run.status not in NOT_FINISHED_STATUSES for run in _runs(instance, bulk))

        wait_for("the cancelled backfill's runs to stop", bulk_stopped, 90, processes.logs)
        held_table.release()  # the cancelled import is gone; the resumed one will need the table
        bulk_runs = _runs(instance, bulk)
        outcome = {run.run_id: (run.status, _partitions_of(run, keys)) for run in bulk_runs}
        report = f"runs of the cancelled backfill: {outcome}\n{processes.logs()}"
        assert {status for status, _ in outcome.values()} == {SUCCESS, CANCELED}, report
        assert (CANCELED, HELD_RUN) in outcome.values(), report

        # Resume: the partitions the UI's partition dialog selects with the status filters
        # "Missing" and "Failed" (those of cancelled runs show as missing).
        statuses = instance.get_status_by_partition(LOCAL_SPREADSHEETS, keys, LOCAL_FOLDER.partitions_def)
        assert statuses is not None
        report = f"partitions: {statuses}\n{report}"
        assert AssetPartitionStatus.IN_PROGRESS not in statuses.values(), report
        resume_keys = [key for key in keys if statuses[key] in (None, AssetPartitionStatus.FAILED)]
        done = [key for key in keys if statuses[key] == AssetPartitionStatus.MATERIALIZED]
        assert sorted(done + resume_keys) == keys, report
        # Dagster counts a run's files all or none: the run reports them together at its end. A
        # successful run's are materialized; so are those of a run cancelled in its last moments,
        # after it reported them.
        for status, partitions in outcome.values():
            materialized, left = set(partitions) <= set(done), set(partitions) <= set(resume_keys)
            assert materialized or (status == CANCELED and left), report
        assert set(HELD_RUN) <= set(resume_keys), report
        # The daemon marks the backfill CANCELED at its next iteration, now that its runs have
        # all stopped. Relaunching at once rather than after that saves 30 s: the same iteration
        # then marks the one and starts the other.
        resume = _launch_backfill(instance, resume_keys, "bulk import, resumed")

        def resumed() -> bool:
            status = _status(instance, resume)
            assert status in (BulkActionStatus.REQUESTED, BulkActionStatus.COMPLETED_SUCCESS), report
            return status == BulkActionStatus.COMPLETED_SUCCESS

        wait_for("the resumed backfill to complete", resumed, 150, processes.logs)
        assert _status(instance, bulk) == BulkActionStatus.CANCELED
        assert not [run for run in _runs(instance, bulk) if run.status in NOT_FINISHED_STATUSES]
        # The UI's one-click alternative, "Re-execute from failure" of the cancelled backfill,
        # would have requested exactly the same partitions.
        assert _unmaterialized_targets(instance, bulk) == resume_keys
        resume_runs = _runs(instance, resume)
        assert {run.status for run in resume_runs} == {SUCCESS}
        assert sorted(key for run in resume_runs for key in _partitions_of(run, keys)) == resume_keys
        assert instance.get_materialized_partitions(LOCAL_SPREADSHEETS) == set(keys)

        # The multi-run policy batched the work: at most FILES_PER_RUN files per run, and the
        # full batches hold that many.
        for run in [*bulk_runs, *resume_runs]:
            assert 1 <= len(_partitions_of(run, keys)) <= FILES_PER_RUN, run.tags
        assert all(len(partitions) == FILES_PER_RUN for _, partitions in outcome.values())
        # Every run came from the two backfills: the sensors requested none.
        assert {run.tags.get(BACKFILL_ID_TAG) for run in instance.get_runs()} == {bulk, resume}
        # The cancelled runs gave their warehouse slots back.
        pool = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        assert (pool.slot_count, pool.claimed_slots, pool.pending_steps) == (2, [], [])
        bulk_run_ids = {run.run_id for run in bulk_runs}
        resume_run_ids = {run.run_id for run in resume_runs}

    # The tables are exactly those of the uninterrupted import: columns, types and rows.
    assert _tables(postgres_url) == _tables(reference_url)

    # The ledgers. Each file has exactly one success row, equal in content to the uninterrupted
    # import's, written by the first backfill for the files it materialized. A file of the
    # resumed backfill was either committed by a run of the first one before that run was
    # cancelled (the run never reported it): then the resumed backfill imports it again and the
    # ledger records that as `skipped`, same content already loaded by that very file. Or it
    # was not: then the resumed backfill's import is its success row; a file interrupted in
    # mid-import left nothing behind (its transaction rolled back). Nothing else: no failure.
    ledger = _ledger(postgres_url)
    expected = _ledger(reference_url)
    assert {row["status"] for row in expected} == {"success"}
    successes = [row for row in ledger if row["status"] == "success"]
    assert sorted(map(_content, successes)) == sorted(map(_content, expected))
    imported_by = {row["source_file"]: row["run_id"] for row in successes}
    assert {imported_by[key] for key in done} <= bulk_run_ids
    committed_by_cancelled_runs = sorted(key for key in resume_keys if imported_by[key] in bulk_run_ids)
    assert HELD_RUN[0] in committed_by_cancelled_runs  # the held run's first file
    assert HELD_RUN[1] not in committed_by_cancelled_runs  # the one it was importing
    assert {
        imported_by[key] for key in resume_keys if key not in committed_by_cancelled_runs
    } <= resume_run_ids
    others = [row for row in ledger if row["status"] != "success"]
    assert sorted((row["source_file"], row["status"], row["duplicate_of"]) for row in others) == [
        (name, "skipped", name) for name in committed_by_cancelled_runs
    ]
    assert {row["run_id"] for row in others} <= resume_run_ids
    assert {row["rows_inserted"] for row in others} == {0}
