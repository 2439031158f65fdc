"""The whole path of a file, against a real DuckDB file and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from pgdatahub_dagster.engine.importer import LOAD_SLICE_ROWS, Importer, ImportResult
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import duplicate_keys, ledger_mismatches
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import Warehouse, connect
from pgdatahub_dagster_tests.files import write_csv, write_xlsx

LEADS_MAPPING = """\
leads:
  table: leads
  unique_key: [business_name, address, phone]
"""


def run_import(url: str, root: Path, mapping: str = "", batch_rows: int = 100_000) -> list[ImportResult]:
    with connect(url) as warehouse:
        importer = Importer(
            warehouse,
            LocalFolderSource(root),
            FolderMapping.parse(mapping),
            run_id="test-run",
            batch_rows=batch_rows,
        )
        return list(importer.import_all())


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with connect(url) as warehouse:
        return warehouse.fetchall(sql)


def statuses(results: list[ImportResult]) -> dict[str, str]:
    return {result.record.source_file: result.status for result in results}


def messy_leads(root: Path) -> None:
    write_csv(
        root / "leads" / "1-jan.csv",
        "Business Name,Address,Phone,Zip\n"
        "Acme Plumbing,12 Main St,(555) 123-4567,01234\n"
        "  Blue Bakery ,3 Elm Rd,555.987.6543,02115\n"
        "ACME PLUMBING,12  main st,+1 555 123 4567,01234\n",
    )
    write_xlsx(
        root / "leads" / "2-feb.xlsx",
        {
            "Sheet1": [
                ["Business Name", "Address", "Phone", "Zip"],
                ["acme plumbing", "12 Main St", "555-123-4567", "01234"],
                ["Corner Café", "7 Oak Ave", "555 222 3333", "10001"],
                ["Blue Bakery", "3 Elm Rd", "(555) 987-6543", "02115"],
            ]
        },
    )
    # January's export is older than February's.
    os.utime(root / "leads" / "1-jan.csv", (1_700_000_000, 1_700_000_000))
    os.utime(root / "leads" / "2-feb.xlsx", (1_702_000_000, 1_702_000_000))


def test_messy_folder_gives_one_row_per_business(warehouse_url: str, tmp_path: Path) -> None:
    messy_leads(tmp_path)
    results = run_import(warehouse_url, tmp_path, LEADS_MAPPING)
    assert statuses(results) == {"leads/2-feb.xlsx": "success", "leads/1-jan.csv": "success"}
    rows = query(
        warehouse_url,
        "SELECT business_name, address, phone, zip, source_file FROM leads ORDER BY lower(business_name)",
    )
    # Where both files hold a business, the newer file's values show (prefer: newest), as
    # stored in it, never the lower-cased key; inside one file the first occurrence counts.
    assert rows == [
        ("acme plumbing", "12 Main St", "555-123-4567", "01234", "leads/2-feb.xlsx"),
        ("Blue Bakery", "3 Elm Rd", "(555) 987-6543", "02115", "leads/2-feb.xlsx"),
        ("Corner Café", "7 Oak Ave", "555 222 3333", "10001", "leads/2-feb.xlsx"),
    ]
    ledger = {
        r.record.source_file: (r.record.rows_read, r.record.rows_inserted, r.record.rows_duplicate)
        for r in results
    }
    # January supplied two rows when it was imported; February took them over and added one.
    assert ledger == {"leads/1-jan.csv": (3, 2, 1), "leads/2-feb.xlsx": (3, 3, 0)}
    assert {r.record.source_file: r.record.rows_held for r in results} == {
        "leads/1-jan.csv": 2,
        "leads/2-feb.xlsx": 3,
    }


def test_prefer_oldest_shows_the_older_files_values(warehouse_url: str, tmp_path: Path) -> None:
    messy_leads(tmp_path)
    run_import(warehouse_url, tmp_path, LEADS_MAPPING + "  prefer: oldest\n")
    rows = query(
        warehouse_url, "SELECT business_name, phone, source_file FROM leads ORDER BY lower(business_name)"
    )
    assert rows == [
        ("Acme Plumbing", "(555) 123-4567", "leads/1-jan.csv"),
        ("Blue Bakery", "555.987.6543", "leads/1-jan.csv"),
        ("Corner Café", "555 222 3333", "leads/2-feb.xlsx"),
    ]


def test_the_rule_does_not_depend_on_the_order_of_imports(warehouse_url: str, tmp_path: Path) -> None:
    """February imported first, January later: the same table as in path order."""
    messy_leads(tmp_path)
    with connect(warehouse_url) as warehouse:
        importer = Importer(warehouse, LocalFolderSource(tmp_path), FolderMapping.parse(LEADS_MAPPING))
        files = sorted(importer.source.list_files(), key=lambda f: f.path, reverse=True)
        assert [importer.import_file(f).status for f in files] == ["success", "success"]
    rows = query(
        warehouse_url, "SELECT business_name, phone, source_file FROM leads ORDER BY lower(business_name)"
    )
    assert rows == [
        ("acme plumbing", "555-123-4567", "leads/2-feb.xlsx"),
        ("Blue Bakery", "(555) 987-6543", "leads/2-feb.xlsx"),
        ("Corner Café", "555 222 3333", "leads/2-feb.xlsx"),
    ]


def test_second_run_adds_nothing(warehouse_url: str, tmp_path: Path) -> None:
    messy_leads(tmp_path)
    run_import(warehouse_url, tmp_path, LEADS_MAPPING)
    again = run_import(warehouse_url, tmp_path, LEADS_MAPPING)
    assert set(statuses(again).values()) == {"skipped"}
    assert query(warehouse_url, "SELECT count(*) FROM leads") == [(3,)]
    assert query(
        warehouse_url, "SELECT status, count(*) FROM etl_imports GROUP BY status ORDER BY status"
    ) == [
        ("skipped", 2),
        ("success", 2),
    ]


def test_copy_rename_or_move_adds_no_rows_and_holds_them_too(warehouse_url: str, tmp_path: Path) -> None:
    messy_leads(tmp_path)
    run_import(warehouse_url, tmp_path, LEADS_MAPPING)
    shutil.copy(tmp_path / "leads" / "1-jan.csv", tmp_path / "leads" / "copy of 1-jan.csv")
    (tmp_path / "leads" / "2024").mkdir()
    (tmp_path / "leads" / "2-feb.xlsx").rename(tmp_path / "leads" / "2024" / "february.xlsx")
    results = run_import(warehouse_url, tmp_path, LEADS_MAPPING)
    by_file = {r.record.source_file: r.record for r in results}
    assert by_file["leads/1-jan.csv"].status == "skipped"
    # The copy and the moved file are files of their own: they hold the rows they contain
    # (so deleting the original leaves them), but add none.
    assert by_file["leads/copy of 1-jan.csv"].status == "success"
    assert by_file["leads/copy of 1-jan.csv"].rows_held == 2
    assert by_file["leads/2024/february.xlsx"].status == "success"
    assert by_file["leads/2024/february.xlsx"].rows_held == 3
    assert query(warehouse_url, "SELECT count(*) FROM leads") == [(3,)]
    with connect(warehouse_url) as warehouse:
        assert ledger_mismatches(warehouse) == {}


def test_same_content_in_another_table_is_imported(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "a" / "x.csv", "n\n1\n")
    write_csv(tmp_path / "b" / "x.csv", "n\n1\n")
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)") == [(2,)]


def test_a_failing_file_rolls_back_completely_and_others_continue(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "a_good.csv", "id,name\n1,one\n2,two\n")
    # Batches of 10 rows: the first batches are inserted (and a column added) before the
    # bad line is reached, so only a real rollback leaves nothing behind.
    lines = "".join(f"{i},name {i},extra\n" for i in range(100, 150))
    write_csv(tmp_path / "data" / "b_bad.csv", "id,name,new_col\n" + lines + "1,2,3,4,5\n")
    (tmp_path / "data" / "c_corrupt.xlsx").write_bytes(b"PK\x03\x04 this is not really a workbook")
    write_csv(tmp_path / "data" / "d_good.csv", "id,name\n3,three\n")

    results = run_import(warehouse_url, tmp_path, batch_rows=10)
    assert statuses(results) == {
        "data/a_good.csv": "success",
        "data/b_bad.csv": "failed",
        "data/c_corrupt.xlsx": "failed",
        "data/d_good.csv": "success",
    }
    errors = {r.record.source_file: r.record.error for r in results if r.failed}
    assert errors["data/b_bad.csv"].startswith("data/b_bad.csv: cannot be parsed")
    assert errors["data/c_corrupt.xlsx"].startswith("data/c_corrupt.xlsx: not a readable workbook")
    assert query(warehouse_url, "SELECT id FROM data ORDER BY id") == [(1,), (2,), (3,)]
    columns = query(
        warehouse_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'data'"
    )
    assert "new_col" not in {c for (c,) in columns}
    assert query(
        warehouse_url, "SELECT count(*) FROM etl_schema_changes WHERE source_file = 'data/b_bad.csv'"
    ) == [(0,)]
    failed = query(
        warehouse_url, "SELECT source_file, error FROM etl_imports WHERE status = 'failed' ORDER BY id"
    )
    assert [f for f, _ in failed] == ["data/b_bad.csv", "data/c_corrupt.xlsx"]


def test_schema_evolves_by_widening_and_every_change_is_audited(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "m" / "1.csv", "n,day,code\n1,2024-01-01,7\n")
    run_import(warehouse_url, tmp_path)
    write_csv(tmp_path / "m" / "2.csv", "n,day,code,extra\n3000000000,2024-01-02 10:30:00,7.5,x\n")
    run_import(warehouse_url, tmp_path)
    write_csv(tmp_path / "m" / "3.csv", "n,day,code\n2.5,soon,abc\n")
    results = run_import(warehouse_url, tmp_path)
    assert results[-1].status == "success"
    changes = query(
        warehouse_url,
        "SELECT change_type, column_name, old_type, new_type, source_file FROM etl_schema_changes "
        "WHERE change_type <> 'add_column' OR source_file <> 'm/1.csv' ORDER BY id",
    )
    assert changes == [
        ("create_table", None, None, None, "m/1.csv"),
        ("alter_type", "n", "INTEGER", "BIGINT", "m/2.csv"),
        ("alter_type", "day", "DATE", "TIMESTAMP", "m/2.csv"),
        ("alter_type", "code", "INTEGER", "DOUBLE PRECISION", "m/2.csv"),
        ("add_column", "extra", None, "TEXT", "m/2.csv"),
        ("alter_type", "n", "BIGINT", "DOUBLE PRECISION", "m/3.csv"),
        ("alter_type", "day", "TIMESTAMP", "TEXT", "m/3.csv"),
        ("alter_type", "code", "DOUBLE PRECISION", "TEXT", "m/3.csv"),
    ]
    run_ids = query(warehouse_url, "SELECT DISTINCT run_id FROM etl_schema_changes")
    assert run_ids == [("test-run",)]
    rows = query(warehouse_url, "SELECT n, day, code, extra FROM m ORDER BY n")
    # Existing values widen step by step: 2024-01-01 became a timestamp, then its text.
    assert rows == [
        (1.0, "2024-01-01 00:00:00", "7", None),
        (2.5, "soon", "abc", None),
        (3000000000.0, "2024-01-02 10:30:00", "7.5", "x"),
    ]


def test_a_narrower_file_is_cast_up_to_the_table(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "m" / "1.csv", "v\nhello\n")
    write_csv(tmp_path / "m" / "2.csv", "v\n42\n")
    write_xlsx(tmp_path / "m" / "3.xlsx", {"S": [["v"], [dt.date(2024, 5, 6)]]})
    results = run_import(warehouse_url, tmp_path)
    assert set(statuses(results).values()) == {"success"}
    assert sorted(query(warehouse_url, "SELECT v FROM m")) == [("2024-05-06",), ("42",), ("hello",)]
    assert query(
        warehouse_url, "SELECT count(*) FROM etl_schema_changes WHERE change_type = 'alter_type'"
    ) == [(0,)]


def test_lineage_columns_and_user_columns_with_their_names(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "t" / "f.csv", "source_file,select,order,user\nmine,1,2,3\n")
    [result] = run_import(warehouse_url, tmp_path)
    row = query(
        warehouse_url,
        "SELECT source_file, source_file_id, file_sha256, load_timestamp, source_file_2, "
        '"select", "order", "user" FROM t',
    )[0]
    assert row[:3] == ("t/f.csv", "t/f.csv", result.record.file_sha256)
    assert row[3] is not None
    assert row[4:] == ("mine", 1, 2, 3)


def test_unique_key_none_keeps_repeated_rows(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "log" / "f.csv", "event\nclick\nclick\n")
    run_import(warehouse_url, tmp_path, "log:\n  unique_key: none\n")
    assert query(warehouse_url, "SELECT count(*) FROM log") == [(2,)]


def test_unique_key_naming_a_missing_column_fails_clearly(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "leads" / "f.csv", "name,city\nAcme,Oslo\n")
    [result] = run_import(warehouse_url, tmp_path, LEADS_MAPPING)
    assert result.failed
    assert result.record.error == (
        "leads/f.csv: unique_key column(s) business_name, address, phone not found; the file has: name, city"
    )


def test_hostile_names_are_cleaned_and_quoted(warehouse_url: str, tmp_path: Path) -> None:
    header = '"Robert\'); DROP TABLE etl_imports;--","a""b"\n'
    write_csv(tmp_path / "x'; drop table y; --" / "f.csv", header + "1,2\n")
    [result] = run_import(warehouse_url, tmp_path)
    assert result.status == "success"
    assert result.record.table_name == "x_drop_table_y"
    assert query(warehouse_url, "SELECT robert_drop_table_etl_imports, a_b FROM x_drop_table_y") == [(1, 2)]
    assert query(warehouse_url, "SELECT count(*) FROM etl_imports") == [(1,)]


# The corpus through a DuckLake (50 s) runs with -m long; DuckDB and PostgreSQL in every run.
@pytest.mark.parametrize(
    "warehouse_url", ["duckdb", "postgres", pytest.param("ducklake", marks=pytest.mark.long)], indirect=True
)
def test_calamine_corpus_imports_or_fails_cleanly_per_file(
    warehouse_url: str, calamine_fixtures: Path
) -> None:
    results = run_import(warehouse_url, calamine_fixtures)
    files = sorted(p.name for p in calamine_fixtures.iterdir() if p.suffix != ".md")
    assert sorted(r.record.source_file for r in results) == files
    with connect(warehouse_url) as warehouse:
        tables = {r.record.table_name for r in results}
        assert tables == {"calamine"}
        loaded = {f for (f,) in warehouse.fetchall("SELECT DISTINCT source_file FROM calamine")}
        for result in results:
            record = result.record
            assert record.status in ("success", "skipped", "failed"), record
            if result.failed:
                assert record.error and record.error.startswith(record.source_file + ": "), record.error
                assert record.source_file not in loaded
        _assert_ledger_matches_tables(warehouse)
    failed = {r.record.source_file for r in results if r.failed}
    assert {"pass_protected.xlsx", "too_small.xls", "ptgexp-truncated-operand.xls"} <= failed
    assert len(failed) < len(results) / 4


def _assert_ledger_matches_tables(warehouse: Warehouse) -> None:
    assert ledger_mismatches(warehouse) == {}
    assert duplicate_keys(warehouse) == {}


def test_an_empty_key_column_keys_rows_the_same_in_every_file(warehouse_url: str, tmp_path: Path) -> None:
    mapping = "leads:\n  unique_key: [business_name, phone]\n"
    write_csv(tmp_path / "leads" / "a.csv", "business_name,phone\nAcme,\nBlue,555 123 4567\n")
    write_csv(tmp_path / "leads" / "b.csv", "business_name,phone,city\nAcme,,Oslo\n")  # phone all empty here
    os.utime(tmp_path / "leads" / "a.csv", (1_700_000_000, 1_700_000_000))
    os.utime(tmp_path / "leads" / "b.csv", (1_702_000_000, 1_702_000_000))
    results = run_import(warehouse_url, tmp_path, mapping)
    by_file = {r.record.source_file: r.record for r in results}
    # b's Acme is a's Acme: one row, showing the newer file's values.
    assert (by_file["leads/b.csv"].rows_read, by_file["leads/b.csv"].rows_held) == (1, 1)
    assert query(warehouse_url, "SELECT business_name, city FROM leads ORDER BY business_name") == [
        ("Acme", "Oslo"),
        ("Blue", None),
    ]


def test_every_row_of_a_sheet_decides_its_column_types(warehouse_url: str, tmp_path: Path) -> None:
    # In batches of 10 rows typed one by one, the first rows would make a column of doubles
    # that the late "n/a" widens to text, which then reads 0.5 where the sheet says 0.50.
    rows: list[list[Any]] = [["price"], *([f"{i}.50"] for i in range(30)), ["n/a"]]
    write_xlsx(tmp_path / "prices" / "a.xlsx", {"S": rows})
    [result] = run_import(warehouse_url, tmp_path, batch_rows=10)
    assert result.status == "success" and result.record.rows_inserted == 31
    assert [change.change_type for change in result.schema_changes] == ["create_table", "add_column"]
    assert query(warehouse_url, "SELECT min(price), max(price) FROM prices") == [("0.50", "n/a")]


def test_a_batch_is_typed_from_all_its_rows_and_loaded_in_slices(warehouse_url: str, tmp_path: Path) -> None:
    # More rows than a slice: the one number past 32 bits is in the last slice, and so is a
    # repeat of the first row.
    rows = LOAD_SLICE_ROWS + 10
    body = "".join(f"{i},{i}\n" for i in range(rows - 1)) + f"{rows - 1},{2**40}\n0,0\n"
    write_csv(tmp_path / "counts" / "a.csv", "id,n\n" + body)
    [result] = run_import(warehouse_url, tmp_path)
    assert (result.status, result.record.rows_read, result.record.rows_inserted) == (
        "success",
        rows + 1,
        rows,
    )
    assert [change.change_type for change in result.schema_changes] == [
        "create_table",
        "add_column",
        "add_column",
    ]
    with connect(warehouse_url) as warehouse:
        assert warehouse.table_columns("counts") == {"id": SqlType.INTEGER, "n": SqlType.BIGINT}
    assert query(warehouse_url, "SELECT count(*), count(DISTINCT _row_key), max(n) FROM counts") == [
        (rows, rows, 2**40)
    ]
