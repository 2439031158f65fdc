"""``kill -9`` of the documented import command, at random points of its imports, on both
warehouses: the killed run leaves no half-loaded file, and the next run is not blocked by the
pool slot the dead run still holds, and ends with the warehouse equal to a clean import.

The command runs as a subprocess on a real DAGSTER_HOME with the repository's dagster.yaml (the
``warehouse`` pool has one slot) and no daemon, as ``dagster asset materialize`` runs in CI.
The source tree has a small file, a large one merged into the small one's table (PostgreSQL:
COPY into a stage, then INSERT … SELECT; DuckDB: Arrow into a stage, then INSERT) and a large
one filling a new table (PostgreSQL: COPY straight in; DuckDB: INSERT over Arrow). Each kill
lands at a random moment between the start of the import step and the time a clean import
takes; ``PGDATAHUB_FAULT_SEED`` repeats a sequence of kill points.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from pgdatahub_dagster.defs.assets import WAREHOUSE_POOL
from pgdatahub_dagster.defs.crashed_runs import PROCESS_TAG, end_crashed_runs, process_tag
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal, import_tree
from pgdatahub_dagster_tests.faults import MATERIALIZE, ROOT, command_env, dagster_home, run
from pgdatahub_dagster_tests.files import write_csv

LARGE_ROWS = 100_000


def _write_tree(root: Path) -> None:
    """Keys never repeat across files, so each file's rows are its own, all or none."""

    def rows(first: int, count: int) -> str:
        lines = (f"{i},customer {i},{i * 3 % 1000}.5,note {i * 7}\n" for i in range(first, first + count))
        return "id,name,amount,note\n" + "".join(lines)

    write_csv(root / "t" / "a_small.csv", rows(0, 10))
    write_csv(root / "t" / "b_large.csv", rows(1_000, LARGE_ROWS))
    write_csv(root / "u" / "c_large.csv", rows(1_000_000, LARGE_ROWS))


def _rows_by_file(url: str) -> dict[str, int]:
    with connect(url) as warehouse:
        counts: dict[str, int] = {}
        for table in ("t", "u"):
            if warehouse.table_columns(table) is not None:
                for source_file, rows in warehouse.fetchall(
                    f"SELECT source_file, count(*) FROM {table} GROUP BY source_file"
                ):
                    counts[str(source_file)] = int(rows)
        return counts


def _imported(url: str) -> set[str]:
    with connect(url) as warehouse:
        rows = warehouse.fetchall("SELECT source_file FROM etl_imports WHERE status = 'success'")
        return {str(source_file) for (source_file,) in rows}


def _kill_during_import(env: dict[str, str], log: Path, delay: float) -> bool:
    """Start the command, SIGKILL it ``delay`` seconds into its import step (if it still runs);
    whether it was killed."""
    killed = False
    with log.open("w") as output:
        command = subprocess.Popen(MATERIALIZE, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while command.poll() is None and "STEP_START" not in log.read_text():
            assert time.monotonic() < deadline, f"the import step never started:\n{log.read_text()[-3000:]}"
            time.sleep(0.02)
        time.sleep(delay)
        if command.poll() is None:
            os.kill(command.pid, signal.SIGKILL)
            killed = True
    finally:
        if command.poll() is None:
            command.kill()
        command.wait()
    return killed


def _last_run_succeeded(home: Path) -> bool:
    with DagsterInstance.from_config(str(home)) as instance:
        latest = instance.get_runs(limit=1)
        return bool(latest) and latest[0].status == DagsterRunStatus.SUCCESS


def _probe(kills: int, tmp_path: Path, new_warehouse: Callable[[str], str]) -> None:
    """``kills`` runs killed at random points, each into a fresh warehouse and all on one
    Dagster instance: each killed run's successor must get the pool slot the dead run held
    (it could not start its import step otherwise). After each kill the warehouse holds whole
    files only, and a re-run (the engine's, to save Dagster's start-up; the last one Dagster's)
    makes it equal to a clean import."""
    source = tmp_path / "inbox"
    _write_tree(source)
    clean = new_warehouse("clean")
    started = time.monotonic()
    import_tree(clean, source)
    window = time.monotonic() - started
    whole = _rows_by_file(clean)
    home = dagster_home(tmp_path)
    seed = int(os.environ.get("PGDATAHUB_FAULT_SEED") or time.time_ns() % 1_000_000)
    chance = random.Random(seed)
    # A kill that lands after the run was recorded a success (the process still tidies up)
    # counts as no kill.
    killed = 0
    for attempt in range(kills):
        url = new_warehouse("crash")
        env = command_env(home, source, url)
        delay = chance.uniform(0, window)
        where = f"(PGDATAHUB_FAULT_SEED={seed}, kill {attempt + 1} at {delay:.2f} s of {window:.2f} s)"
        if _kill_during_import(env, tmp_path / f"killed-{attempt}.log", delay):
            killed += not _last_run_succeeded(home)

        # Every file is loaded whole with its success row, or not at all.
        present = _rows_by_file(url)
        assert all(present[name] == whole[name] for name in present), (where, present, whole)
        assert _imported(url) == set(present), (where, present)

        if attempt < kills - 1:
            import_tree(url, source)
        else:
            again = run(MATERIALIZE, env, timeout=150)
            assert again.returncode == 0, f"{where}\n{again.stderr[-3000:]}"
        assert_tables_equal(url, clean, history=[where])
        assert_ledger_consistent(url, history=[where])

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots == []
        runs = instance.get_runs()
        assert all(PROCESS_TAG in run.tags for run in runs)
        # The killed runs were marked failed, by their successors or by the final run.
        assert [run.status for run in runs].count(DagsterRunStatus.FAILURE) >= killed - 1, (seed, killed)
        assert {run.status for run in runs} <= {DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS}


@pytest.mark.long
@pytest.mark.timeout(240)
def test_a_killed_import_never_wedges_the_next_run_nor_leaves_half_a_file(
    tmp_path: Path, new_warehouse: Callable[[str], str]
) -> None:
    _probe(2, tmp_path, new_warehouse)


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_many_kills_at_random_points(tmp_path: Path, new_warehouse: Callable[[str], str]) -> None:
    _probe(10, tmp_path, new_warehouse)


def test_only_runs_of_this_machine_whose_process_is_gone_give_their_slots_back(
    instance: DagsterInstance,
) -> None:
    child = subprocess.Popen(["sleep", "60"])
    crashed = process_tag(child.pid)
    child.kill()
    child.wait()
    tags = {
        "crashed": {PROCESS_TAG: crashed},
        # Killed after its step had given the slot back: it holds none, but would stay STARTED.
        "crashed, holding no slot": {PROCESS_TAG: crashed},
        "elsewhere": {PROCESS_TAG: "another-machine " + crashed.rpartition(" ")[2]},
        "alive": {PROCESS_TAG: process_tag(os.getpid())},
        "untagged": {},
    }
    instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, len(tags))
    runs = {}
    for name, run_tags in tags.items():
        run = DagsterRun(
            job_name="import", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED, tags=run_tags
        )
        runs[name] = instance.add_run(run)
        if name != "crashed, holding no slot":
            instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "import")
    current = instance.add_run(DagsterRun(job_name="import", run_id=str(uuid.uuid4())))

    ended = {run.run_id for run in end_crashed_runs(instance, current)}
    assert ended == {runs["crashed"].run_id, runs["crashed, holding no slot"].run_id}
    claimed = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots
    kept = ("elsewhere", "alive", "untagged")
    assert {slot.run_id for slot in claimed} == {runs[name].run_id for name in kept}
    for name, run in runs.items():
        now = instance.get_run_by_id(run.run_id)
        assert now is not None
        assert now.status == (DagsterRunStatus.STARTED if name in kept else DagsterRunStatus.FAILURE), name
