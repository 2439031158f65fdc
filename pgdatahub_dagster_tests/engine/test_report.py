"""What ``pgdatahub status`` reports, and the ledger indexes its queries and the imports use.
Against a real DuckDB file, a DuckLake and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster.engine import report
from pgdatahub_dagster.engine.report import TableStatus, table_status
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, Warehouse, connect
from pgdatahub_dagster_tests.engine.test_importer import run_import
from pgdatahub_dagster_tests.files import write_csv

MAPPING = "bad:\n  unique_key: [missing]\n"


def _one_table_at_a_time(warehouse: Warehouse, table: str) -> TableStatus:
    """The status of one table, asked with a query per figure."""
    p = warehouse.placeholder

    def number(condition: str) -> int:
        sql = f"SELECT count(*) FROM {LEDGER_TABLE} WHERE table_name = {p} AND {condition}"
        return int(warehouse.fetchall(sql, (table,))[0][0])

    last = warehouse.fetchall(
        f"SELECT max(finished_at) FROM {LEDGER_TABLE} WHERE table_name = {p} AND status = 'success'", (table,)
    )[0][0]
    error = warehouse.fetchall(
        f"SELECT error FROM {LEDGER_TABLE} WHERE table_name = {p} AND status = 'failed' ORDER BY id DESC",
        (table,),
    )
    return TableStatus(
        table_name=table,
        imported=number("status = 'success'"),
        skipped=number("status = 'skipped'"),
        failed=number("status = 'failed'"),
        reverted=number("status = 'reverted'"),
        deleted=number("status IN ('deleted', 'retracted')"),
        rows=warehouse.count(table) if warehouse.table_exists(table) else None,
        last_import=last,
        last_error=error[0][0] if error else None,
    )


def test_status_of_many_tables_equals_asking_table_by_table(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(5):
        write_csv(tmp_path / f"t{number}" / "a.csv", "id,v\n" + "".join(f"{i},x\n" for i in range(number)))
    write_csv(tmp_path / "t1" / "b.csv", "id,v\n1,x\n7,y\n")
    write_csv(tmp_path / "bad" / "x.csv", "id\n1\n")  # fails: no column 'missing'
    write_csv(tmp_path / "bad" / "y.csv", "other\n2\n")
    run_import(warehouse_url, tmp_path, MAPPING)
    write_csv(tmp_path / "t2" / "a.csv", "id,v\n1,changed\n")
    run_import(warehouse_url, tmp_path, MAPPING)  # one changed, the others skipped
    # Several statements' worth of tables, as thousands of tables would need.
    monkeypatch.setattr(report, "_COUNTED_PER_STATEMENT", 2)
    with connect(warehouse_url) as warehouse:
        statuses = table_status(warehouse)
        tables = sorted({str(row[0]) for row in warehouse.fetchall(f"SELECT table_name FROM {LEDGER_TABLE}")})
        assert statuses == [_one_table_at_a_time(warehouse, table) for table in tables]
    by_table = {status.table_name: status for status in statuses}
    assert by_table["bad"].rows is None and by_table["bad"].failed == 4
    assert by_table["bad"].last_error is not None and "y.csv" in by_table["bad"].last_error
    assert [by_table[f"t{n}"].rows for n in range(5)] == [None, 3, 1, 3, 4]  # t0: a header only


def _ledger_indexes(warehouse: Warehouse) -> set[str]:
    if warehouse.name == "PostgreSQL":
        rows = warehouse.fetchall("SELECT indexname FROM pg_indexes WHERE tablename = %s", (LEDGER_TABLE,))
    else:
        rows = warehouse.fetchall(
            "SELECT index_name FROM duckdb_indexes() WHERE table_name = ?", (LEDGER_TABLE,)
        )
    return {str(name) for (name,) in rows}


def test_a_ledger_made_before_its_indexes_gets_them_on_open(warehouse_url: str) -> None:
    with connect(warehouse_url) as warehouse:
        if not warehouse.has_indexes:  # DuckLake: nothing to index, and nothing may be
            assert warehouse.fetchall("SELECT count(*) FROM duckdb_indexes()") == [(0,)]
            return
        made = _ledger_indexes(warehouse)
        with warehouse.transaction():
            for index in made - {f"{LEDGER_TABLE}_pkey"}:
                warehouse.execute(f"DROP INDEX {index}")
    with connect(warehouse_url) as warehouse:
        assert _ledger_indexes(warehouse) == made
        assert {
            f"{LEDGER_TABLE}_file",
            f"{LEDGER_TABLE}_file_id",
            f"{LEDGER_TABLE}_table_status",
            f"{LEDGER_TABLE}_source",
        } <= made
    with connect(warehouse_url) as warehouse:  # and opening again changes nothing
        assert _ledger_indexes(warehouse) == made
