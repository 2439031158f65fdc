"""Changed and deleted files, against both warehouses."""

from __future__ import annotations

from pathlib import Path

from pgdatahub_dagster.engine.lifecycle import record_deletion
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import ledger_mismatches
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.engine.test_importer import query, run_import
from pgdatahub_dagster_tests.files import write_csv


def test_a_changed_file_replaces_its_rows_in_one_transaction(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "t" / "f.csv", "name,qty\nAcme,1\nBlue,2\n")
    write_csv(tmp_path / "t" / "other.csv", "name,qty\nZeta,9\n")
    [first, _] = run_import(warehouse_url, tmp_path)
    write_csv(tmp_path / "t" / "f.csv", "name,qty\nAcme,1\nBlue,3\nCorner,4\n")
    results = run_import(warehouse_url, tmp_path)
    changed = next(r.record for r in results if r.record.source_file == "t/f.csv")
    assert changed.status == "success"
    # Every column is the key: Acme,1 is taken over in place, Blue,2 leaves, two rows are new.
    assert (changed.rows_deleted, changed.rows_inserted, changed.replaced_import_id) == (
        1,
        3,
        first.record.id,
    )
    assert query(warehouse_url, "SELECT name, qty FROM t ORDER BY name") == [
        ("Acme", 1),
        ("Blue", 3),
        ("Corner", 4),
        ("Zeta", 9),
    ]
    assert query(warehouse_url, f"SELECT status FROM etl_imports WHERE id = {first.record.id}") == [
        ("replaced",)
    ]
    with connect(warehouse_url) as warehouse:
        assert ledger_mismatches(warehouse) == {}


def test_a_failed_new_version_keeps_the_old_rows(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "t" / "f.csv", "name\nAcme\n")
    run_import(warehouse_url, tmp_path)
    # A row wider than the first 50 lines, in a later batch: the file fails after its
    # first batches were loaded.
    write_csv(tmp_path / "t" / "f.csv", "name\nBlue\n" + "x\n" * 60 + "a,b,c\n")
    [result] = run_import(warehouse_url, tmp_path, batch_rows=10)
    assert result.failed
    assert "a row has more fields than any of the file's first 50 lines (1)" in (result.record.error or "")
    assert query(warehouse_url, "SELECT name FROM t") == [("Acme",)]
    assert query(warehouse_url, "SELECT status FROM etl_imports ORDER BY id") == [("success",), ("failed",)]


def test_deletion_keeps_or_retracts_by_folder(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "kept" / "a.csv", "n\n1\n2\n")
    write_csv(tmp_path / "gone" / "b.csv", "n\n3\n")
    run_import(warehouse_url, tmp_path)
    mapping = FolderMapping.parse("gone:\n  on_delete: retract\n")
    with connect(warehouse_url) as warehouse:
        [kept] = record_deletion(warehouse, mapping, "kept/a.csv", "run-1")
        [gone] = record_deletion(warehouse, mapping, "gone/b.csv", "run-1")
        assert record_deletion(warehouse, mapping, "never/imported.csv", "run-1") == []
        assert (kept.status, kept.rows_deleted, gone.status, gone.rows_deleted) == (
            "deleted",
            0,
            "retracted",
            1,
        )
        assert warehouse.fetchall("SELECT count(*) FROM kept") == [(2,)]
        assert warehouse.fetchall("SELECT count(*) FROM gone") == [(0,)]
        assert ledger_mismatches(warehouse) == {}
    # The retracted content can come back later and is imported again.
    results = run_import(warehouse_url, tmp_path)
    assert {r.record.source_file: r.status for r in results} == {
        "gone/b.csv": "success",
        "kept/a.csv": "skipped",
    }
