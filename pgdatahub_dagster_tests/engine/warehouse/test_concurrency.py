"""Two runs importing the same content at the same moment load its rows once, and both
files hold them (PostgreSQL, where runs really are concurrent; a DuckDB file has a single
writer)."""

from __future__ import annotations

import threading
from pathlib import Path

from pgdatahub_dagster.engine.importer import Importer, ImportResult
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import ledger_mismatches
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import Warehouse, connect
from pgdatahub_dagster.engine.warehouse.base import HOLDERS_SCHEMA
from pgdatahub_dagster_tests.files import write_csv


def test_concurrent_imports_of_the_same_content_load_its_rows_once(postgres_url: str, tmp_path: Path) -> None:
    rows = "".join(f"{i},name {i}\n" for i in range(20_000))
    write_csv(tmp_path / "t" / "copy1.csv", "id,name\n" + rows)
    write_csv(tmp_path / "t" / "copy2.csv", "id,name\n" + rows)
    source = LocalFolderSource(tmp_path)
    files = sorted(source.list_files(), key=lambda f: f.path)
    results: list[ImportResult] = []
    start = threading.Barrier(len(files))

    def worker(index: int) -> None:
        with connect(postgres_url) as warehouse:
            importer = Importer(warehouse, source, FolderMapping(), run_id=f"run-{index}")
            start.wait()
            results.append(importer.import_file(files[index]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(files))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(result.status for result in results) == ["success", "success"]
    assert sorted(result.record.rows_held for result in results) == [20_000, 20_000]
    with connect(postgres_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*) FROM t") == [(20_000,)]
        assert ledger_mismatches(warehouse) == {}


def _holder_indexes(warehouse: Warehouse) -> list[tuple[str, str]]:
    """The holders tables' indexes: (name suffix, definition's column list)."""
    rows = warehouse.fetchall(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY indexname",
        [HOLDERS_SCHEMA],
    )
    return [(str(name).rsplit("_", 1)[1], str(sql).split(" USING btree ")[1]) for name, sql in rows]


def test_holders_are_indexed_by_import_and_key_and_older_warehouses_get_that_index(
    postgres_url: str, tmp_path: Path
) -> None:
    """A file holding another file's rows records them in the holders table, looked up by
    import and key: with an index on the import alone every lookup scanned all the import's
    keys (a second file of 20,000 shared rows took 65 s). A warehouse made before the new
    index gets it when it is next opened, and its rows stay as they are."""
    rows = "id,name\n" + "".join(f"{i},name {i}\n" for i in range(50))
    write_csv(tmp_path / "t" / "a.csv", rows)
    write_csv(tmp_path / "t" / "b.csv", rows)
    source = LocalFolderSource(tmp_path)
    with connect(postgres_url) as warehouse:
        importer = Importer(warehouse, source, FolderMapping(), run_id="run")
        for file in sorted(source.list_files(), key=lambda f: f.path):
            assert importer.import_file(file).status == "success"
        expected = [("ik", "(_import_id, _row_key)"), ("k", "(_row_key)")]
        assert _holder_indexes(warehouse) == expected
        # What a warehouse made before 2026-12-02 has: an index on the import alone.
        [(name,)] = warehouse.fetchall(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND indexname LIKE '%%\\_ik'",
            [HOLDERS_SCHEMA],
        )
        old = str(name)[: -len("_ik")] + "_i"
        warehouse.execute(f'DROP INDEX "{HOLDERS_SCHEMA}"."{name}"')
        warehouse.execute(f'CREATE INDEX "{old}" ON "{HOLDERS_SCHEMA}"."t" ("_import_id")')
        assert _holder_indexes(warehouse) == [("i", "(_import_id)"), ("k", "(_row_key)")]
        before = warehouse.fetchall(f'SELECT * FROM "{HOLDERS_SCHEMA}"."t" ORDER BY 1, 2')
    with connect(postgres_url) as warehouse:
        assert _holder_indexes(warehouse) == expected
        assert warehouse.fetchall(f'SELECT * FROM "{HOLDERS_SCHEMA}"."t" ORDER BY 1, 2') == before
        assert len(before) == 50
        assert ledger_mismatches(warehouse) == {}
