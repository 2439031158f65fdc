"""The documented commands meet faults as a user meets them: a broken folder mapping, a lost
connection, a full disk. Each ends with a non-zero exit code and a message that names what
failed and why, never a Python traceback; a run that stops has still reported the files it
committed, and a new run goes on from there."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from pgdatahub_dagster.engine.settings import redact_url
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.deploy.conftest import BIN, wait_for
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal, import_tree
from pgdatahub_dagster_tests.faults import (
    MATERIALIZE,
    ROOT,
    TableLock,
    command_env,
    dagster_home,
    importer_waiting_for_lock,
    on_small_disk,
    run,
    terminate_backend,
    with_password,
)
from pgdatahub_dagster_tests.files import write_csv

BROKEN_MAPPINGS = {
    "unknown key": ("leads:\n  tabel: leads\n", "line 2: unknown key 'tabel'"),
    "malformed YAML": ("leads:\n  table: [leads\n", "line 3: not valid YAML"),
    "bad on_delete": ("leads:\n  on_delete: nuke\n", "line 2: on_delete must be one of keep, retract"),
}
STOPPED = "(the run stopped; the files it imported before stay imported, and a new run goes on from there)"


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.mark.parametrize("case", sorted(BROKEN_MAPPINGS))
def test_a_broken_mapping_stops_both_commands_with_its_message_alone(case: str, tmp_path: Path) -> None:
    text, problem = BROKEN_MAPPINGS[case]
    write_csv(tmp_path / "inbox" / "leads" / "a.csv", "name\nAcme\n")
    (tmp_path / "inbox" / "pgdatahub.yaml").write_text(text)
    env = command_env(dagster_home(tmp_path), tmp_path / "inbox", f"duckdb:///{tmp_path / 'w.duckdb'}")
    message = f"{tmp_path / 'inbox' / 'pgdatahub.yaml'} {problem}"

    materialized = run(MATERIALIZE, env)
    assert materialized.returncode == 1
    assert "Traceback" not in materialized.stderr
    # Dagster's own deprecation warning for the command aside, the message is all there is.
    [line] = _lines_with(materialized.stderr, message)
    assert line.startswith(f"Error: {message}")

    reverted = run([str(BIN / "pgdatahub"), "revert", "--file", "leads/a.csv"], env)
    assert reverted.returncode == 1
    assert reverted.stderr.startswith(f"pgdatahub: {message}")
    assert len(reverted.stderr.splitlines()) == 1


def test_a_lost_connection_stops_the_run_and_keeps_the_files_it_committed(
    tmp_path: Path, postgres_url: str, make_database: Callable[[str], str]
) -> None:
    url, password = with_password(postgres_url)
    source = tmp_path / "inbox"
    write_csv(source / "a" / "one.csv", "n\n1\n2\n")
    write_csv(source / "b" / "two.csv", "n\n3\n")
    home = dagster_home(tmp_path)
    env = command_env(home, source, url)
    lock = TableLock(postgres_url, "b")
    try:
        command = subprocess.Popen(
            MATERIALIZE, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            # a/one.csv is committed; b/two.csv waits for its table's lock: the connection goes.
            waiting = wait_for("the import to wait", lambda: importer_waiting_for_lock(url), 120)
            terminate_backend(postgres_url, waiting)
            output, _ = command.communicate(timeout=120)
        finally:
            if command.poll() is None:
                command.send_signal(signal.SIGKILL)
                command.wait()
    finally:
        lock.release()
    assert command.returncode == 1, output[-3000:]
    assert "Traceback" not in output and password not in output
    failures = _lines_with(output, "the connection was lost")
    message = (
        f"warehouse {redact_url(url)}: the connection was lost: "
        f"terminating connection due to administrator command {STOPPED}"
    )
    assert failures and all(line.endswith(message) for line in failures), output[-3000:]

    # The file committed before the fault is reported as materialised, with its metadata.
    with DagsterInstance.from_config(str(home)) as instance:
        spreadsheets = AssetKey("local_spreadsheets")
        assert instance.get_materialized_partitions(spreadsheets) == {"a/one.csv"}
        [event] = instance.fetch_materializations(spreadsheets, limit=10).records
        metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
        assert (metadata["status"].value, metadata["rows_inserted"].value) == ("success", 2)
    with connect(postgres_url) as warehouse:
        assert warehouse.fetchall("SELECT source_file, status FROM etl_imports") == [("a/one.csv", "success")]
        assert warehouse.table_columns("b") is None

    again = run(MATERIALIZE, env)
    assert again.returncode == 0, again.stderr[-3000:]
    clean = make_database("clean")
    import_tree(clean, source)
    assert_tables_equal(postgres_url, clean)
    assert_ledger_consistent(postgres_url)


def _rows(lines: int) -> str:
    rows = (f"{i},name {i},a note that takes some room {i * 7}\n" for i in range(lines))
    return "id,name,note\n" + "".join(rows)


@pytest.mark.long
def test_a_full_disk_stops_the_run_naming_the_warehouse(tmp_path: Path) -> None:
    source = tmp_path / "inbox"
    write_csv(source / "a" / "small.csv", _rows(10))
    write_csv(source / "b" / "large.csv", _rows(400_000))
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    url = f"duckdb:///{disk / 'w.duckdb'}"
    env = command_env(dagster_home(tmp_path), source, url)

    stopped = run(on_small_disk(MATERIALIZE, disk, "6m", kept), env)
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    failures = _lines_with(stopped.stderr, "the disk is full")
    assert failures, stopped.stderr[-3000:]
    assert all(f"warehouse {url}: the disk is full: " in line for line in failures)
    assert all("No space left on device" in line and line.endswith(STOPPED) for line in failures)

    # What the disk kept: the small file, nothing of the large one.
    kept_url = f"duckdb:///{kept / 'w.duckdb'}"
    with connect(kept_url) as warehouse:
        ledger = warehouse.fetchall("SELECT source_file, status FROM etl_imports")
        assert ledger == [("a/small.csv", "success")]
        assert warehouse.table_columns("b") is None
    # On a disk with room the next run goes on from there.
    again = run(MATERIALIZE, {**env, "PGDATAHUB_DATABASE_URL": kept_url})
    assert again.returncode == 0, again.stderr[-3000:]
    clean = f"duckdb:///{tmp_path / 'clean.duckdb'}"
    import_tree(clean, source)
    assert_tables_equal(kept_url, clean)


def test_the_cli_names_the_warehouse_when_its_disk_is_full(tmp_path: Path) -> None:
    source = tmp_path / "inbox"
    write_csv(source / "a" / "small.csv", _rows(1_000))
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    import_tree(f"duckdb:///{kept / 'w.duckdb'}", source)
    url = f"duckdb:///{disk / 'w.duckdb'}"
    env = command_env(dagster_home(tmp_path), source, url)

    command = [str(BIN / "pgdatahub"), "revert", "--file", "a/small.csv"]
    reverted = run(on_small_disk(command, disk, "16m", kept, full=True), env)
    assert reverted.returncode == 1
    assert reverted.stderr.startswith(f"pgdatahub: warehouse {url}: the disk is full: "), reverted.stderr
    assert "No space left on device" in reverted.stderr
    assert len(reverted.stderr.splitlines()) == 1
    with connect(f"duckdb:///{kept / 'w.duckdb'}") as warehouse:  # nothing was reverted
        assert warehouse.fetchall("SELECT status FROM etl_imports") == [("success",)]
