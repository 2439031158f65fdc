"""DuckLake's snapshots: each import commits one that names it, ``pgdatahub status`` lists
them, and the query the README documents reads a table as of an earlier import. Compaction
(the Dagster job ``compact_warehouse``) merges the small files many imports leave, and
changes no table."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from dagster import instance_for_test

from pgdatahub_dagster.cli import main
from pgdatahub_dagster.defs.maintenance import compact_warehouse
from pgdatahub_dagster.defs.resources import WarehouseResource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.conftest import url_of_warehouse
from pgdatahub_dagster_tests.engine.test_importer import run_import
from pgdatahub_dagster_tests.exact_sync import (
    assert_ledger_consistent,
    assert_tables_equal,
    fresh_tables,
    import_tree,
)
from pgdatahub_dagster_tests.files import write_csv

#: The README's query (section "Lakehouse"), with the lake attached as ``lake``: the table
#: ``leads`` as the import ``$import_id`` left it.
AS_OF_IMPORT = (
    "SET VARIABLE version = (SELECT max(snapshot_id) FROM lake.snapshots() "
    "WHERE list_contains(json_extract(commit_extra_info, '$.import_ids')::BIGINT[], $import_id))",
    "SELECT * FROM lake.leads AT (VERSION => getvariable('version')) ORDER BY _row_key",
)


@pytest.fixture
def lake_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_of_warehouse("ducklake", request, tmp_path)


def test_each_import_commits_one_snapshot_that_names_it(
    lake_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "files"
    write_csv(root / "leads" / "a.csv", "name,score\nAcme,1\nBlue,2\n")
    [first] = run_import(lake_url, root)
    with connect(lake_url) as warehouse:
        before = warehouse.fetchall("SELECT * FROM leads ORDER BY _row_key")

    write_csv(root / "leads" / "a.csv", "name,score,city\nAcme,10,Oslo\nCyan,3,Rome\n")
    write_csv(root / "leads" / "b.csv", "name,score\nBlue,2\nDune,4\n")
    (root / "leads" / "c.xlsx").write_bytes(b"broken")
    later = run_import(lake_url, root)
    assert sorted(r.status for r in later) == ["failed", "success", "success"]

    with connect(lake_url) as warehouse:
        ledger = [row["id"] for row in warehouse.ledger()]
        snapshots = warehouse.snapshots(100)
        named = [i for snapshot in snapshots for i in snapshot.import_ids]
        # One snapshot per import, failed ones included (their ledger row), none twice.
        assert sorted(named) == sorted(ledger) and len(ledger) == 4
        assert all(len(snapshot.import_ids) <= 1 for snapshot in snapshots)
        messages = {s.import_ids[0]: s.message for s in snapshots if s.import_ids}
        assert messages[first.record.id] == f"import {first.record.id}: success leads/a.csv"
        now = warehouse.fetchall("SELECT * FROM leads ORDER BY _row_key")
        assert now != before

        set_version, select = AS_OF_IMPORT
        warehouse.execute(set_version.replace("$import_id", str(first.record.id)))
        assert warehouse.fetchall(select) == before

    assert main(["--database-url", lake_url, "status", "--snapshots", "3"]) == 0
    out = capsys.readouterr().out
    latest = "\n".join(out.split("Latest snapshots")[1].splitlines()[3:])
    assert len(latest.splitlines()) == 3
    assert all(f"import {r.record.id}: {r.status} {r.record.source_file}" in latest for r in later)


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_other_warehouses_keep_no_snapshots(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = url_of_warehouse(kind, request, tmp_path)
    write_csv(tmp_path / "leads" / "a.csv", "name\nAcme\n")
    run_import(url, tmp_path)
    with connect(url) as warehouse:
        assert warehouse.snapshots(10) == []
        assert warehouse.compact(timedelta(days=1)).endswith("nothing to compact")


def _data_files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.parquet"))


def test_compaction_merges_the_small_files_of_many_imports_and_changes_no_table(
    lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "files"
    for n in range(8):
        rows = "".join(f"n{n}-{i},{i}\n" for i in range(40))
        for folder in ("leads", "crm"):
            write_csv(root / folder / f"{n:02}.csv", "name,score\n" + rows)
    run_import(lake_url, root)
    # A changed file deletes its old rows: compaction rewrites the files they leave holes in.
    write_csv(root / "leads" / "00.csv", "name,score\n" + "".join(f"m{i},{i}\n" for i in range(40)))
    run_import(lake_url, root)
    data = tmp_path / "lake" / "data"
    before, tables = _data_files(data), fresh_tables(lake_url)

    # Every snapshot but the latest is older than this.
    monkeypatch.setenv("PGDATAHUB_SNAPSHOT_RETENTION_DAYS", "0.000001")
    with instance_for_test() as instance:
        result = compact_warehouse.execute_in_process(
            instance=instance, resources={"warehouse": WarehouseResource(database_url=lake_url)}
        )
    assert result.success

    after = _data_files(data)
    assert after < before / 4, f"{before} data files before compaction, {after} after"
    assert fresh_tables(lake_url) == tables
    expected = f"duckdb:///{tmp_path / 'fresh.duckdb'}"
    import_tree(expected, root)
    assert_tables_equal(lake_url, expected)
    assert_ledger_consistent(lake_url)
    with connect(lake_url) as warehouse:
        assert len(warehouse.snapshots(100)) == 1
