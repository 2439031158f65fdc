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
from pgdatahub_dagster.engine.warehouse import connect
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
