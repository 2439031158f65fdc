"""A file's faults fail that file; the system's faults stop the run, naming the warehouse.

Against a real PostgreSQL and real DuckDB files: a file too wide for PostgreSQL, a DuckDB
statement that aborts its transaction, a connection terminated while the import waits for a
table lock, temporary space running out mid-import.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
import psycopg
import pytest

from pgdatahub_dagster.engine.errors import DataRefusedError, WarehouseError
from pgdatahub_dagster.engine.importer import Importer, ImportResult
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.schema import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.settings import redact_url
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import Lineage, connect
from pgdatahub_dagster_tests.deploy.conftest import wait_for
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal, import_tree
from pgdatahub_dagster_tests.faults import (
    TableLock,
    importer_waiting_for_lock,
    terminate_backend,
    with_password,
)
from pgdatahub_dagster_tests.files import write_csv


def _import(url: str, root: Path) -> list[ImportResult]:
    with connect(url) as warehouse:
        return list(Importer(warehouse, LocalFolderSource(root), FolderMapping(), run_id="r").import_all())


def _wide(columns: int, first: int = 0) -> str:
    names = [f"c{i}" for i in range(first, first + columns)]
    return ",".join(names) + "\n" + ",".join(str(i) for i in range(columns)) + "\n"


def _ledger(url: str) -> list[tuple[str, str, str | None]]:
    with connect(url) as warehouse:
        return [
            (str(file), str(status), error)
            for file, status, error in warehouse.fetchall(
                "SELECT source_file, status, error FROM etl_imports ORDER BY id"
            )
        ]


def test_a_file_wider_than_postgresql_allows_fails_alone(warehouse_url: str, tmp_path: Path) -> None:
    # Within the read limit of 1,600 columns (PGDATAHUB_MAX_COLUMNS), past what PostgreSQL
    # leaves for a file's own columns.
    write_csv(tmp_path / "wide" / "a.csv", _wide(1_598))
    write_csv(tmp_path / "wide" / "b.csv", "c1,c2\n5,6\n")
    results = _import(warehouse_url, tmp_path)
    if not warehouse_url.startswith("postgresql"):  # DuckDB and DuckLake have no such limit
        assert [result.status for result in results] == ["success", "success"]
        return
    assert [result.status for result in results] == ["failed", "success"]
    assert results[0].record.error == (
        "wide/a.csv: has 1,598 columns; PostgreSQL allows at most 1,600 per table, 5 of which "
        "pgdatahub uses for lineage and the row key: split it into files of at most 1,595 columns"
    )
    assert _ledger(warehouse_url) == [
        ("wide/a.csv", "failed", results[0].record.error),
        ("wide/b.csv", "success", None),
    ]
    with connect(warehouse_url) as warehouse:
        assert warehouse.table_columns("wide") == {"c1": SqlType.INTEGER, "c2": SqlType.INTEGER}


def test_a_file_that_would_widen_a_table_past_the_limit_names_the_table(
    postgres_url: str, tmp_path: Path
) -> None:
    write_csv(tmp_path / "wide" / "a.csv", _wide(1_000))
    assert [result.status for result in _import(postgres_url, tmp_path)] == ["success"]
    write_csv(tmp_path / "wide" / "b.csv", _wide(1_000, first=700))  # 700 new columns
    [skipped, failed] = _import(postgres_url, tmp_path)
    assert (skipped.status, failed.status) == ("skipped", "failed")
    assert failed.record.error == (
        "wide/b.csv: would give table wide 1,700 columns (700 of them new); PostgreSQL allows at "
        "most 1,600 per table, 5 of which pgdatahub uses for lineage and the row key"
    )
    with connect(postgres_url) as warehouse:
        assert len(warehouse.table_columns("wide") or {}) == 1_000


def test_a_limit_only_postgresql_knows_of_fails_the_file_not_the_run(
    postgres_url: str, tmp_path: Path
) -> None:
    # PostgreSQL counts dropped columns towards its 1,600, so only the server can tell.
    write_csv(tmp_path / "wide" / "a.csv", _wide(1_590))
    assert [result.status for result in _import(postgres_url, tmp_path)] == ["success"]
    with connect(postgres_url) as warehouse:
        drops = ", ".join(f"DROP COLUMN c{i}" for i in range(1_400, 1_590))
        warehouse.execute(f"ALTER TABLE wide {drops}")
    (tmp_path / "wide" / "a.csv").unlink()
    write_csv(tmp_path / "wide" / "b.csv", _wide(50, first=5_000))
    write_csv(tmp_path / "wide" / "c.csv", "c1\n7\n")
    results = _import(postgres_url, tmp_path)
    assert [result.status for result in results] == ["failed", "success"]
    assert results[0].record.error == (
        "wide/b.csv: PostgreSQL refused the data: tables can have at most 1600 columns"
    )


def test_a_failed_duckdb_statement_over_arrow_raises_its_own_error(tmp_path: Path) -> None:
    lineage = Lineage("f.csv", "f.csv", "0" * 64, dt.datetime.now(dt.UTC))
    frame = pl.DataFrame({"n": ["not a number"], "_row_key": ["00000000-0000-0000-0000-000000000001"]})
    with connect(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        # The fast path of a new table (an INSERT over Arrow, in the background) and the
        # staging of an existing one (a CREATE over Arrow): the statement fails, the
        # transaction is aborted, and what surfaces is that statement's error.
        refused = pytest.raises(DataRefusedError, match="Could not convert string 'not a number'")
        with refused, warehouse.transaction():
            warehouse.apply_schema_changes(
                "t",
                [
                    SchemaChange("create_table", None, None, None),
                    SchemaChange("add_column", "n", None, SqlType.INTEGER),
                ],
            )
            warehouse.insert_fresh("t", frame, lineage)
            warehouse.count("t")
        unkeyed = pl.DataFrame({"n": [1], "_row_key": ["not a key"]})
        refused = pytest.raises(DataRefusedError, match="Could not convert string 'not a key'")
        with refused, warehouse.transaction(), warehouse.staged(unkeyed, {"n": SqlType.INTEGER}):
            pass
        # Nothing of either is left, and the connection goes on.
        assert warehouse.table_columns("t") is None
        assert warehouse.fetchall("SELECT 42") == [(42,)]


def test_a_lost_connection_stops_the_run_naming_the_warehouse(
    postgres_url: str, make_database: Callable[[str], str], tmp_path: Path
) -> None:
    url, password = with_password(postgres_url)
    write_csv(tmp_path / "a" / "one.csv", "n\n1\n2\n")
    write_csv(tmp_path / "b" / "two.csv", "n\n3\n")
    write_csv(tmp_path / "c" / "three.csv", "n\n4\n")
    lock = TableLock(postgres_url, "b")
    raised: list[BaseException] = []
    results: list[ImportResult] = []

    def run() -> None:
        with connect(url) as warehouse:
            importer = Importer(warehouse, LocalFolderSource(tmp_path), FolderMapping(), run_id="r")
            try:
                results.extend(importer.import_all())
            except BaseException as error:
                raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        # The import of b/two.csv waits for the table's lock: its connection goes now.
        waiting = wait_for("the import to wait", lambda: importer_waiting_for_lock(url), 60)
        terminate_backend(postgres_url, waiting)
        thread.join(60)
    finally:
        lock.release()
    [error] = raised
    assert isinstance(error, WarehouseError)
    assert str(error) == (
        f"warehouse {redact_url(url)}: the connection was lost: "
        "terminating connection due to administrator command"
    )
    assert password not in str(error)
    assert [result.record.source_file for result in results] == ["a/one.csv"]
    # Nothing of the interrupted file, and no ledger row blaming it.
    assert _ledger(postgres_url) == [("a/one.csv", "success", None)]
    with connect(postgres_url) as warehouse:
        assert warehouse.table_columns("b") is None

    assert [result.status for result in _import(url, tmp_path)] == ["skipped", "success", "success"]
    clean = make_database("clean")
    import_tree(clean, tmp_path)
    assert_tables_equal(postgres_url, clean)
    assert_ledger_consistent(postgres_url)


def test_running_out_of_temporary_space_stops_the_run(
    postgres_url: str, postgres_admin_url: str, make_database: Callable[[str], str], tmp_path: Path
) -> None:
    # The server's own limit on temporary files stands in for a full disk (both are class 53,
    # insufficient resources): building the unique index of 100,000 keys in 1 MB of memory
    # spills to temporary files, past the limit.
    database = psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" SET temp_file_limit = 256')
        admin.execute(f'ALTER DATABASE "{database}" SET maintenance_work_mem = 1024')
    write_csv(tmp_path / "a" / "small.csv", "n\n1\n")
    write_csv(tmp_path / "b" / "large.csv", "n,s\n" + "".join(f"{i},row {i}\n" for i in range(100_000)))
    with pytest.raises(WarehouseError) as stopped:
        _import(postgres_url, tmp_path)
    assert str(stopped.value) == (
        f"warehouse {redact_url(postgres_url)}: out of resources: temporary file size exceeds "
        '"temp_file_limit" (256kB)'
    )
    assert _ledger(postgres_url) == [("a/small.csv", "success", None)]
    with connect(postgres_url) as warehouse:
        assert warehouse.table_columns("b") is None

    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" RESET temp_file_limit')
    assert [result.status for result in _import(postgres_url, tmp_path)] == ["skipped", "success"]
    clean = make_database("clean")
    import_tree(clean, tmp_path)
    assert_tables_equal(postgres_url, clean)
