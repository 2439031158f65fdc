"""Revert by file, id, content hash and run; with and without schema changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import ledger_mismatches
from pgdatahub_dagster.engine.revert import RevertError, revert
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.engine.test_importer import query
from pgdatahub_dagster_tests.files import write_csv


def _import(url: str, root: Path, run_id: str) -> None:
    with connect(url) as warehouse:
        list(Importer(warehouse, LocalFolderSource(root), FolderMapping(), run_id=run_id).import_all())


def _setup(url: str, root: Path) -> None:
    write_csv(root / "t" / "a.csv", "name\nAcme\nBlue\n")
    _import(url, root, "run-1")
    write_csv(root / "t" / "b.csv", "name,score\nCorner,1.5\n")
    _import(url, root, "run-2")


@pytest.mark.parametrize(
    ("selector", "value"),
    [("file", "t/a.csv"), ("file_id", "t/a.csv"), ("run", "run-1")],
)
def test_revert_removes_the_rows_and_marks_the_ledger(
    warehouse_url: str, tmp_path: Path, selector: str, value: str
) -> None:
    _setup(warehouse_url, tmp_path)
    with connect(warehouse_url) as warehouse:
        report = revert(warehouse, selector=selector, value=value)
        assert [(i.source_file, i.rows_deleted) for i in report.imports] == [("t/a.csv", 2)]
        assert ledger_mismatches(warehouse) == {}
    assert query(warehouse_url, "SELECT name FROM t") == [("Corner",)]
    assert query(
        warehouse_url, "SELECT source_file, status FROM etl_imports WHERE status <> 'skipped' ORDER BY id"
    ) == [
        ("t/a.csv", "reverted"),
        ("t/b.csv", "success"),
    ]
    # Reverted content is released: importing the folder again brings the file back.
    _import(warehouse_url, tmp_path, "run-3")
    assert query(warehouse_url, "SELECT count(*) FROM t") == [(3,)]


def test_revert_by_content_hash(warehouse_url: str, tmp_path: Path) -> None:
    _setup(warehouse_url, tmp_path)
    [(sha,)] = query(warehouse_url, "SELECT file_sha256 FROM etl_imports WHERE source_file = 't/b.csv'")
    with connect(warehouse_url) as warehouse:
        report = revert(warehouse, selector="sha256", value=sha)
    assert [i.source_file for i in report.imports] == ["t/b.csv"]
    assert query(warehouse_url, "SELECT name FROM t ORDER BY name") == [("Acme",), ("Blue",)]


def test_dry_run_changes_nothing(warehouse_url: str, tmp_path: Path) -> None:
    _setup(warehouse_url, tmp_path)
    with connect(warehouse_url) as warehouse:
        report = revert(warehouse, selector="run", value="run-2", schema=True, dry_run=True)
    assert report.dry_run and report.rows_deleted == 1
    assert [(u.column_name, u.done) for u in report.schema] == [("score", True)]
    assert query(warehouse_url, "SELECT count(*) FROM t") == [(3,)]
    assert query(warehouse_url, "SELECT count(*) FROM etl_imports WHERE status = 'reverted'") == [(0,)]
    columns = query(
        warehouse_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 't'"
    )
    assert ("score",) in columns


def test_an_added_column_no_row_uses_is_dropped(warehouse_url: str, tmp_path: Path) -> None:
    _setup(warehouse_url, tmp_path)
    with connect(warehouse_url) as warehouse:
        report = revert(warehouse, selector="run", value="run-2", schema=True)
        assert [(u.column_name, u.done) for u in report.schema] == [("score", True)]
        assert warehouse.column_names("t")[:1] == ["name"] and "score" not in warehouse.column_names("t")
        assert ledger_mismatches(warehouse) == {}
    audit = query(
        warehouse_url,
        "SELECT change_type, column_name, run_id FROM etl_schema_changes WHERE change_type = 'drop_column'",
    )
    assert audit == [("drop_column", "score", None)]
    assert query(warehouse_url, "SELECT name FROM t ORDER BY name") == [("Acme",), ("Blue",)]


def test_columns_in_use_are_kept_empty_tables_dropped_and_narrowing_refused(
    warehouse_url: str, tmp_path: Path
) -> None:
    _setup(warehouse_url, tmp_path)
    write_csv(tmp_path / "t" / "c.csv", "name,score\nDelta,2.5\n")
    write_csv(tmp_path / "u" / "d.csv", "id\n1\n")
    _import(warehouse_url, tmp_path, "run-3")
    write_csv(tmp_path / "u" / "e.csv", "id\nx\n")  # widens u.id to TEXT
    _import(warehouse_url, tmp_path, "run-4")
    with connect(warehouse_url) as warehouse:
        added = revert(warehouse, selector="run", value="run-2", schema=True)
        widened = revert(warehouse, selector="run", value="run-4", schema=True)
        created = revert(warehouse, selector="run", value="run-3", schema=True)
    # c.csv (run-3) still uses score when run-2 is reverted.
    assert [(u.column_name, u.done, u.reason) for u in added.schema] == [
        ("score", False, "kept: 1 rows still use it")
    ]
    [refusal] = widened.schema
    assert not refusal.done
    assert refusal.reason == (
        "refused: u.id stays TEXT; narrowing it back to INTEGER could not hold the values written since"
    )
    # run-3 created u; with run-4's row reverted it is empty, so it goes, columns and all.
    assert [(u.table_name, u.change_type, u.done) for u in created.schema] == [("u", "create_table", True)]
    with connect(warehouse_url) as warehouse:
        assert not warehouse.table_exists("u")
    assert query(warehouse_url, "SELECT name FROM t ORDER BY name") == [("Acme",), ("Blue",)]


def test_nothing_matches(warehouse_url: str, tmp_path: Path) -> None:
    _setup(warehouse_url, tmp_path)
    with connect(warehouse_url) as warehouse:
        assert revert(warehouse, selector="file", value="nope.csv").imports == []
        with pytest.raises(RevertError):
            revert(warehouse, selector="colour", value="x")
