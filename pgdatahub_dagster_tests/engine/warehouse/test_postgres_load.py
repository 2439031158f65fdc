"""PostgreSQL's two ways of loading a file must store exactly the same thing.

A table created by the import itself is loaded by COPY straight into it, its unique index
built before commit; an existing table gets rows through staging and INSERT … ON
CONFLICT. These tests load the same files both ways into real PostgreSQL databases.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pgdatahub_dagster.engine.dedup.keys import SeenKeys
from pgdatahub_dagster.engine.importer import Importer, ImportResult
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.schema import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import Lineage, connect
from pgdatahub_dagster.engine.warehouse import postgres as postgres_module
from pgdatahub_dagster_tests.conftest import _with_database
from pgdatahub_dagster_tests.files import write_csv

MAPPING = "leads:\n  table: leads\n  unique_key: [name, phone]\n"


def _leads(rows: int) -> str:
    """Leads with exact and messy repeats spread over the file, and some empty phones."""
    lines = ["Name,Phone,City,Score"]
    for i in range(rows):
        business = i % (rows // 3 + 1)
        phone = "" if business % 11 == 0 else f"(555) {100 + business % 800:03d}-{business % 10_000:04d}"
        name = f"Business {business}"
        if i % 5 == 1:
            name, phone = f"  BUSINESS  {business} ", phone.replace("(555) ", "+1 555 ").replace("-", " ")
        lines.append(f"{name},{phone},City {i % 7},{i}")
    return "\n".join(lines) + "\n"


def _import(url: str, root: Path, batch_rows: int, mapping: str = MAPPING) -> list[ImportResult]:
    with connect(url) as warehouse:
        importer = Importer(warehouse, LocalFolderSource(root), FolderMapping.parse(mapping), batch_rows=batch_rows)
        return list(importer.import_all())


def _rows(url: str, source_file: str) -> list[tuple[Any, ...]]:
    with connect(url) as warehouse:
        return warehouse.fetchall(
            "SELECT name, phone, city, score, _row_key::text FROM leads WHERE source_file = %s "
            "ORDER BY _row_key, score",
            (source_file,),
        )


@pytest.fixture
def second_database(postgres_url: str) -> str:
    """Another empty database on the same server, dropped with the test's own."""
    import psycopg

    name = postgres_url.rsplit("/", 1)[1].split("?")[0] + "_b"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(postgres_url, name)


def test_a_new_table_stores_what_an_existing_table_would(
    postgres_url: str, second_database: str, tmp_path: Path
) -> None:
    new_root, old_root = tmp_path / "new", tmp_path / "old"
    write_csv(new_root / "leads" / "a.csv", _leads(400))
    # The same file, after another file created the table: it goes through staging.
    write_csv(old_root / "leads" / "0-first.csv", "Name,Phone,City,Score\nSomeone Else,,Nowhere,1\n")
    write_csv(old_root / "leads" / "a.csv", _leads(400))

    fresh = _import(postgres_url, new_root, batch_rows=37)
    staged = _import(second_database, old_root, batch_rows=37)

    assert [r.status for r in fresh] == ["success"]
    assert [r.status for r in staged] == ["success", "success"]
    counts = [(r.record.rows_read, r.record.rows_inserted, r.record.rows_duplicate) for r in (fresh[0], staged[1])]
    assert counts[0] == counts[1]
    assert counts[0][1] < counts[0][0]  # the file does hold repeats
    assert _rows(postgres_url, "leads/a.csv") == _rows(second_database, "leads/a.csv")


def test_a_new_table_ends_with_its_unique_index_and_plain_columns(postgres_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "leads" / "a.csv", _leads(120))
    [result] = _import(postgres_url, tmp_path, batch_rows=50)
    with connect(postgres_url) as warehouse:
        indexes = warehouse.fetchall("SELECT indexdef FROM pg_indexes WHERE tablename = 'leads'")
        defaults = warehouse.fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'leads' AND column_default IS NOT NULL"
        )
        lineage = warehouse.fetchall(
            "SELECT DISTINCT source_file, source_file_id, file_sha256, load_timestamp FROM leads"
        )
    assert len(indexes) == 1 and "UNIQUE" in indexes[0][0] and "_row_key" in indexes[0][0]
    assert defaults == []
    assert lineage == [("leads/a.csv", "leads/a.csv", result.record.file_sha256, result.record.started_at)]


def test_past_its_key_budget_a_new_table_goes_on_through_staging(
    postgres_url: str, second_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path / "leads" / "a.csv", _leads(300))
    unlimited = _import(second_database, tmp_path, batch_rows=20)
    monkeypatch.setattr(postgres_module, "FRESH_TABLE_MAX_KEYS", 45)
    limited = _import(postgres_url, tmp_path, batch_rows=20)
    assert [(r.status, r.record.rows_inserted) for r in limited] == [
        (r.status, r.record.rows_inserted) for r in unlimited
    ]
    assert _rows(postgres_url, "leads/a.csv") == _rows(second_database, "leads/a.csv")


def test_without_a_key_a_new_table_keeps_every_row(postgres_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "leads" / "a.csv", "Name,City\nAcme,Oslo\nAcme,Oslo\nBlue,Rome\n" * 10)
    mapping = "leads:\n  table: leads\n  unique_key: none\n"
    [result] = _import(postgres_url, tmp_path, batch_rows=7, mapping=mapping)
    assert (result.status, result.record.rows_inserted, result.record.rows_duplicate) == ("success", 30, 0)
    with connect(postgres_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*), count(_row_key) FROM leads") == [(30, 0)]


def test_a_failure_after_some_batches_leaves_nothing_and_the_next_import_starts_clean(
    postgres_url: str, tmp_path: Path
) -> None:
    write_csv(tmp_path / "leads" / "a.csv", _leads(60).rstrip("\n") + "\nx,y,z,1,2,3\n")
    [failed] = _import(postgres_url, tmp_path, batch_rows=10)
    assert failed.status == "failed" and "cannot be parsed" in (failed.record.error or "")
    with connect(postgres_url) as warehouse:
        assert warehouse.table_columns("leads") is None
    (tmp_path / "leads" / "a.csv").unlink()
    write_csv(tmp_path / "leads" / "b.csv", _leads(60))
    [done] = _import(postgres_url, tmp_path, batch_rows=10)
    assert done.status == "success"
    with connect(postgres_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*) FROM pg_indexes WHERE tablename = 'leads'") == [(1,)]


def test_a_new_table_widens_between_batches(postgres_url: str, tmp_path: Path) -> None:
    body = "".join(f"Business {i},555-100-{i:04d},City,{i}\n" for i in range(30))
    write_csv(tmp_path / "leads" / "a.csv", "Name,Phone,City,Score\n" + body + "Late,555-200-0000,City,n/a\n")
    [result] = _import(postgres_url, tmp_path, batch_rows=10)
    assert result.status == "success" and result.record.rows_inserted == 31
    assert [(c.change_type, c.column_name, c.new_type) for c in result.schema_changes][-1] == (
        "alter_type",
        "score",
        SqlType.TEXT,
    )
    with connect(postgres_url) as warehouse:
        assert warehouse.table_columns("leads") == {
            "name": SqlType.TEXT,
            "phone": SqlType.TEXT,
            "city": SqlType.TEXT,
            "score": SqlType.TEXT,
        }
        assert warehouse.fetchall("SELECT count(*) FROM pg_indexes WHERE tablename = 'leads'") == [(1,)]


def _frame(keys: list[str | None], values: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"n": pl.Series(values, dtype=pl.Int32), "_row_key": pl.Series(keys, dtype=pl.String)})


def test_insert_new_rows_into_a_new_table_skips_keys_it_already_holds(postgres_url: str) -> None:
    lineage = Lineage("f.csv", "f.csv", "0" * 64, dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC))
    a, b, c = ("%032x" % n for n in (1, 2, 3))
    with connect(postgres_url) as warehouse, warehouse.transaction():
        warehouse.apply_schema_changes(
            "t", [SchemaChange("create_table", None, None, None), SchemaChange("add_column", "n", None, SqlType.INTEGER)]
        )
        types = {"n": SqlType.INTEGER}
        # Repeats inside one frame: the first wins; rows without a key always go in.
        assert warehouse.insert_new_rows("t", _frame([a, b, a, None, None], [1, 2, 3, 4, 5]), types, lineage) == 4
        assert warehouse.insert_new_rows("t", _frame([b, c, None, c], [6, 7, 8, 9]), types, lineage) == 2
        rows = warehouse.fetchall("SELECT n, _row_key::text, load_timestamp FROM t ORDER BY n")
    assert [(n, key) for n, key, _ in rows] == [
        (1, "00000000-0000-0000-0000-000000000001"),
        (2, "00000000-0000-0000-0000-000000000002"),
        (4, None),
        (5, None),
        (7, "00000000-0000-0000-0000-000000000003"),
        (8, None),
    ]
    assert {stamp for _, _, stamp in rows} == {lineage.load_timestamp}


def test_a_table_created_outside_a_transaction_is_indexed_at_once(postgres_url: str) -> None:
    with connect(postgres_url) as warehouse:
        warehouse.apply_schema_changes(
            "t", [SchemaChange("create_table", None, None, None), SchemaChange("add_column", "n", None, SqlType.INTEGER)]
        )
        assert warehouse.fetchall("SELECT count(*) FROM pg_indexes WHERE tablename = 't'") == [(1,)]


def test_seen_keys_answer_as_a_unique_index_would() -> None:
    # Keys sharing their high 64 bits, as a collision of the high halves would.
    same_high = ["00000000000000ff" + "%016x" % n for n in (1, 2, 3, 4)]
    seen = SeenKeys()
    first = pl.Series([same_high[0], same_high[2], None, "%032x" % 7, same_high[0]], dtype=pl.String)
    assert seen.admit(first).to_list() == [True, True, True, True, False]
    again = pl.Series([same_high[0], same_high[1], same_high[2], same_high[3], None, "%032x" % 8, same_high[1]])
    assert seen.admit(again).to_list() == [False, True, False, True, True, True, False]
    assert len(seen) == 6
