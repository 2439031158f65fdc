"""Both ways of loading a file must store exactly the same thing.

A table created by the import itself gets its rows without a unique index (PostgreSQL:
COPY straight into it; DuckDB: a plain INSERT), filtered by the keys already loaded, and
its index is built before commit; an existing table gets rows through INSERT … ON
CONFLICT against its index. These tests load the same files both ways into real
PostgreSQL databases and DuckDB files.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pgdatahub_dagster.engine.dedup.keys import KeyFilter, SeenKeys
from pgdatahub_dagster.engine.errors import DataRefusedError
from pgdatahub_dagster.engine.importer import Importer, ImportResult
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.read import delimited
from pgdatahub_dagster.engine.schema import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import Lineage, connect
from pgdatahub_dagster.engine.warehouse import base as base_module
from pgdatahub_dagster.engine.warehouse import duckdb as duckdb_module
from pgdatahub_dagster.engine.warehouse.ownership import Holder, RowOwnership
from pgdatahub_dagster_tests.conftest import url_of_warehouse
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal
from pgdatahub_dagster_tests.files import write_csv

MAPPING = "leads:\n  table: leads\n  unique_key: [name, phone]\n"


def _import(url: str, root: Path, batch_rows: int, mapping: str = MAPPING) -> list[ImportResult]:
    with connect(url) as warehouse:
        importer = Importer(
            warehouse, LocalFolderSource(root), FolderMapping.parse(mapping), batch_rows=batch_rows
        )
        return list(importer.import_all())


def _rows(url: str, source_file: str) -> list[tuple[Any, ...]]:
    with connect(url) as warehouse:
        return warehouse.fetchall(
            "SELECT name, phone, city, score, CAST(_row_key AS TEXT) FROM leads "
            f"WHERE source_file = {warehouse.placeholder} ORDER BY _row_key, score",
            (source_file,),
        )


def _kind(url: str) -> str:
    scheme = url.split(":", 1)[0]
    return scheme if scheme in ("duckdb", "ducklake") else "postgres"


@pytest.fixture
def second_database(warehouse_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Another empty warehouse of the same kind as ``warehouse_url``."""
    return url_of_warehouse(_kind(warehouse_url), request, tmp_path / "second")


def _row_keys_guarded(url: str, table: str) -> bool:
    """Whether ``table`` refuses a second row with a key it holds: by its one unique index
    (DuckDB, PostgreSQL), or by the check before commit (DuckLake, which has no indexes)."""
    with connect(url) as warehouse:
        if url.startswith("duckdb"):
            query = "SELECT count(*) FROM duckdb_indexes() WHERE table_name = ? AND is_unique"
        elif url.startswith("ducklake"):
            query = "SELECT 1 WHERE ? IS NOT NULL"  # no indexes to count
        else:
            query = "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE 'CREATE UNIQUE%%'"
        if int(warehouse.fetchall(query, (table,))[0][0]) != 1:
            return False
        if not warehouse.fetchall(f"SELECT 1 FROM {table} WHERE _row_key IS NOT NULL"):
            return True  # nothing to repeat
        try:
            with warehouse.transaction():
                warehouse.lock(table)
                warehouse.execute(
                    f"INSERT INTO {table} SELECT * FROM {table} WHERE _row_key IS NOT NULL LIMIT 1"
                )
        except DataRefusedError:
            return True
    return False


def test_a_new_table_stores_what_an_existing_table_would(
    warehouse_url: str, second_database: str, tmp_path: Path
) -> None:
    new_root, old_root = tmp_path / "new", tmp_path / "old"
    write_csv(new_root / "leads" / "a.csv", _leads(400))
    # The same file, after another file created the table: it goes through staging.
    write_csv(old_root / "leads" / "0-first.csv", "Name,Phone,City,Score\nSomeone Else,,Nowhere,1\n")
    write_csv(old_root / "leads" / "a.csv", _leads(400))

    fresh = _import(warehouse_url, new_root, batch_rows=37)
    staged = _import(second_database, old_root, batch_rows=37)

    assert [r.status for r in fresh] == ["success"]
    assert [r.status for r in staged] == ["success", "success"]
    counts = [
        (r.record.rows_read, r.record.rows_inserted, r.record.rows_duplicate) for r in (fresh[0], staged[1])
    ]
    assert counts[0] == counts[1]
    assert counts[0][1] < counts[0][0]  # the file does hold repeats
    assert _rows(warehouse_url, "leads/a.csv") == _rows(second_database, "leads/a.csv")
    assert _row_keys_guarded(warehouse_url, "leads")


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


def _phone(business: int) -> str:
    return "" if business % 11 == 0 else f"(555) {100 + business % 800:03d}-{business % 10_000:04d}"


def _leads(rows: int) -> str:
    """Leads with exact and messy repeats spread over the file, and some empty phones."""
    lines = ["Name,Phone,City,Score"]
    for i in range(rows):
        business = i % (rows // 3 + 1)
        name, phone = f"Business {business}", _phone(business)
        if i % 5 == 1:
            name, phone = f"  BUSINESS  {business} ", phone.replace("(555) ", "+1 555 ").replace("-", " ")
        lines.append(f"{name},{phone},City {i % 7},{i}")
    return "\n".join(lines) + "\n"


def _past_the_budget(rows: int, version: int = 1) -> str:
    """``_leads`` and a Note column that stays empty until the last 90 rows. Those turn Score
    into text (a widening) and fill Note (a new column); they repeat earlier businesses
    (every other one messily), which must lose to their first rows, and bring 30 new ones,
    each twice with another City and Score, the first of which must win. Version 2 leaves
    out the first tenth of the rows and doubles the scores."""
    header, *lines = _leads(rows).splitlines()
    body = [line.rsplit(",", 1)[0] + f",{i * version}," for i, line in enumerate(lines)]
    late = []
    for j in range(30):
        business = (j * 7) % (rows // 3 + 1)
        name = f"  business {business}" if j % 2 else f"Business {business}"
        late.append(f"{name},{_phone(business)},Late {j},n/a,late repeat {j}")
        late.append(f"Late {j},555-300-{j:04d},First {j},{j},late {j}")
        late.append(f"late {j},(555) 300-{j:04d},Second {j},x,again {j}")
    kept = body[rows // 10 :] if version == 2 else body
    return "\n".join([header + ",Note", *kept, *late]) + "\n"


# Through a DuckLake (15-20 s a case, the path it shares with DuckDB) with -m long.
@pytest.mark.parametrize(
    "warehouse_url", ["duckdb", "postgres", pytest.param("ducklake", marks=pytest.mark.long)], indirect=True
)
@pytest.mark.parametrize("filter_bits", [64, 2**20], ids=["filter-always-unsure", "filter-of-1m-bits"])
def test_a_new_table_past_its_key_budget_equals_a_fresh_import(
    warehouse_url: str,
    new_warehouse: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    filter_bits: int,
) -> None:
    """A file whose keys pass FRESH_TABLE_MAX_KEYS (45 here), with a column added and one
    widened past it: the table, the ledger and the duplicates rule are as with no budget.
    The file goes on with a key filter of ``filter_bits`` bits; 64 leave every row
    undecided, first rows too. Then the file changes (the emptied table reloads the same
    way) and a second file shares its keys (staging, holders)."""
    root = tmp_path / "tree"
    write_csv(root / "leads" / "a.csv", _past_the_budget(300))
    expected = new_warehouse("expected")
    [reference] = _import(expected, root, batch_rows=20)

    monkeypatch.setattr(base_module, "FRESH_TABLE_MAX_KEYS", 45)
    monkeypatch.setattr(base_module, "KEY_FILTER_BITS", filter_bits)
    # DuckDB gathers a new table's rows into inserts of whole row groups (of 7 rows here),
    # the rest, undecided rows too, inserted before the table is next read.
    monkeypatch.setattr(duckdb_module, "_ROW_GROUP_ROWS", 7)
    [first] = _import(warehouse_url, root, batch_rows=20)
    assert first.status == "success", first.record.error
    assert _ledger_counts(first) == _ledger_counts(reference)
    assert_tables_equal(warehouse_url, expected)
    with connect(warehouse_url) as warehouse:
        stored = warehouse.fetchall("SELECT city, score, note FROM leads")
    # Each business's first row won: 101 from the body (score = line number = business),
    # and the 30 late ones, first written as "Late j" in "First j".
    assert sorted(stored, key=str) == sorted(
        [(f"City {b % 7}", str(b), None) for b in range(101)]
        + [(f"First {j}", str(j), f"late {j}") for j in range(30)],
        key=str,
    )
    assert _row_keys_guarded(warehouse_url, "leads")

    write_csv(root / "leads" / "a.csv", _past_the_budget(300, version=2))
    write_csv(root / "leads" / "b.csv", _past_the_budget(90))
    synced = _import(warehouse_url, root, batch_rows=20)
    monkeypatch.undo()
    expected = new_warehouse("expected")
    from_scratch = _import(expected, root, batch_rows=20)
    assert [r.status for r in synced] == ["success", "success"]
    assert [r.record.rows_inserted for r in synced] == [r.record.rows_inserted for r in from_scratch]
    assert_tables_equal(warehouse_url, expected)
    assert_ledger_consistent(warehouse_url)
    assert _row_keys_guarded(warehouse_url, "leads")


def test_a_file_failing_past_its_key_budget_leaves_nothing_for_the_next_file(
    warehouse_url: str, new_warehouse: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that fails after its undecided rows were set aside rolls them back with the
    table; the next file, on the same connection, creates the table again and sets its own
    undecided rows aside as if nobody had before."""
    root = tmp_path / "tree"
    write_csv(root / "leads" / "a.csv", _past_the_budget(300) + "x,y,z,1,2,3,4\n")
    write_csv(root / "leads" / "b.csv", _past_the_budget(240))
    expected = new_warehouse("expected")
    reference = _import(expected, root, batch_rows=20)
    assert [r.status for r in reference] == ["failed", "success"]

    monkeypatch.setattr(base_module, "FRESH_TABLE_MAX_KEYS", 45)
    monkeypatch.setattr(base_module, "KEY_FILTER_BITS", 64)
    # Rows gathered for DuckDB's next insert go with the failed file.
    monkeypatch.setattr(duckdb_module, "_ROW_GROUP_ROWS", 7)
    # Pieces of 2 KiB: the broken last row is read, and fails the file, after the rest loaded.
    monkeypatch.setattr(delimited, "_PIECE_BYTES", 2048)
    failed, loaded = _import(warehouse_url, root, batch_rows=20)
    assert failed.status == "failed" and "cannot be parsed" in (failed.record.error or "")
    assert loaded.status == "success", loaded.record.error
    assert _ledger_counts(loaded) == _ledger_counts(reference[1])
    assert_tables_equal(warehouse_url, expected)
    assert _row_keys_guarded(warehouse_url, "leads")


def _ledger_counts(result: ImportResult) -> tuple[int, int, int, int, int]:
    r = result.record
    return (r.rows_read, r.rows_inserted, r.rows_duplicate, r.rows_held, r.rows_deleted)


def test_without_a_key_a_new_table_keeps_every_row(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "leads" / "a.csv", "Name,City\n" + "Acme,Oslo\nAcme,Oslo\nBlue,Rome\n" * 10)
    mapping = "leads:\n  table: leads\n  unique_key: none\n"
    [result] = _import(warehouse_url, tmp_path, batch_rows=7, mapping=mapping)
    assert (result.status, result.record.rows_inserted, result.record.rows_duplicate) == ("success", 30, 0)
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*), count(_row_key) FROM leads") == [(30, 0)]


def test_a_failure_after_some_batches_leaves_nothing_and_the_next_import_starts_clean(
    warehouse_url: str, tmp_path: Path
) -> None:
    write_csv(tmp_path / "leads" / "a.csv", _leads(60).rstrip("\n") + "\nx,y,z,1,2,3\n")
    [failed] = _import(warehouse_url, tmp_path, batch_rows=10)
    assert failed.status == "failed" and "cannot be parsed" in (failed.record.error or "")
    with connect(warehouse_url) as warehouse:
        assert warehouse.table_columns("leads") is None
    (tmp_path / "leads" / "a.csv").unlink()
    write_csv(tmp_path / "leads" / "b.csv", _leads(60))
    [done] = _import(warehouse_url, tmp_path, batch_rows=10)
    assert done.status == "success"
    assert _row_keys_guarded(warehouse_url, "leads")


def _not_null_columns(url: str, table: str) -> list[str]:
    with connect(url) as warehouse:
        rows = warehouse.fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_name = "
            f"{warehouse.placeholder} AND is_nullable = 'NO' ORDER BY column_name",
            (table,),
        )
    return [str(name) for (name,) in rows]


def test_a_changed_file_alone_in_its_table_reloads_it_like_a_new_one(
    warehouse_url: str, second_database: str, tmp_path: Path
) -> None:
    """The table is emptied and the new version loads by the fast path: it stores what a
    first import of the new version stores, with the index and constraints back."""
    changed, first = tmp_path / "changed", tmp_path / "first"
    write_csv(changed / "leads" / "a.csv", _leads(300))
    _import(warehouse_url, changed, batch_rows=40)
    not_null = _not_null_columns(warehouse_url, "leads")
    new_version = _leads(330).replace("City 3", "Town 3")
    write_csv(changed / "leads" / "a.csv", new_version)
    write_csv(first / "leads" / "a.csv", new_version)
    [reloaded] = _import(warehouse_url, changed, batch_rows=40)
    [fresh] = _import(second_database, first, batch_rows=40)
    assert reloaded.status == "success" and reloaded.record.replaced_import_id is not None
    assert (reloaded.record.rows_inserted, reloaded.record.rows_duplicate) == (
        fresh.record.rows_inserted,
        fresh.record.rows_duplicate,
    )
    # 300 rows held 101 keys, 330 rows hold 111: the 101 come back, none left for good.
    assert reloaded.record.rows_deleted == 0
    assert _rows(warehouse_url, "leads/a.csv") == _rows(second_database, "leads/a.csv")
    assert _row_keys_guarded(warehouse_url, "leads")
    assert _not_null_columns(warehouse_url, "leads") == not_null
    assert {"source_file", "file_sha256"} <= set(not_null)
    write_csv(changed / "leads" / "a.csv", _leads(90))  # keeps 31 of the 111 keys
    [shrunk] = _import(warehouse_url, changed, batch_rows=40)
    assert (shrunk.status, shrunk.record.rows_deleted) == ("success", 80)


def test_a_reload_that_fails_keeps_the_old_version_and_its_index(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "leads" / "a.csv", _leads(60))
    _import(warehouse_url, tmp_path, batch_rows=10)
    before = _rows(warehouse_url, "leads/a.csv")
    write_csv(tmp_path / "leads" / "a.csv", _leads(60).rstrip("\n") + "\nx,y,z,1,2,3\n")
    [failed] = _import(warehouse_url, tmp_path, batch_rows=10)
    assert failed.status == "failed"
    assert _rows(warehouse_url, "leads/a.csv") == before
    assert _row_keys_guarded(warehouse_url, "leads")


def test_a_new_table_widens_between_batches(warehouse_url: str, tmp_path: Path) -> None:
    body = "".join(f"Business {i},555-100-{i:04d},City,{i}\n" for i in range(30))
    write_csv(tmp_path / "leads" / "a.csv", "Name,Phone,City,Score\n" + body + "Late,555-200-0000,City,n/a\n")
    [result] = _import(warehouse_url, tmp_path, batch_rows=10)
    assert result.status == "success" and result.record.rows_inserted == 31
    assert [(c.change_type, c.column_name, c.new_type) for c in result.schema_changes][-1] == (
        "alter_type",
        "score",
        SqlType.TEXT,
    )
    with connect(warehouse_url) as warehouse:
        assert warehouse.table_columns("leads") == {
            "name": SqlType.TEXT,
            "phone": SqlType.TEXT,
            "city": SqlType.TEXT,
            "score": SqlType.TEXT,
        }
    assert _row_keys_guarded(warehouse_url, "leads")


def _frame(keys: list[str | None], values: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"n": pl.Series(values, dtype=pl.Int32), "_row_key": pl.Series(keys, dtype=pl.String)}
    )


def test_a_new_table_takes_each_key_once_on_the_fast_path(warehouse_url: str) -> None:
    lineage = Lineage("f.csv", "f.csv", "0" * 64, dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC))
    a, b, c = (f"{n:032x}" for n in (1, 2, 3))
    with connect(warehouse_url) as warehouse, warehouse.transaction():
        warehouse.apply_schema_changes(
            "t",
            [
                SchemaChange("create_table", None, None, None),
                SchemaChange("add_column", "n", None, SqlType.INTEGER),
            ],
        )
        types = {"n": SqlType.INTEGER}
        ownership, holder = RowOwnership(warehouse, "t"), Holder(1, lineage)
        # Repeats inside one frame: the first wins; rows without a key always go in.
        first = ownership.load_batch(_frame([a, b, a, None, None], [1, 2, 3, 4, 5]), types, holder)
        assert (first.supplied, first.held) == (4, 4)
        second = ownership.load_batch(_frame([b, c, None, c], [6, 7, 8, 9]), types, holder)
        assert (second.supplied, second.held) == (2, 2)
        rows = warehouse.fetchall("SELECT n, CAST(_row_key AS TEXT), load_timestamp FROM t ORDER BY n")
    assert [(n, key) for n, key, _ in rows] == [
        (1, "00000000-0000-0000-0000-000000000001"),
        (2, "00000000-0000-0000-0000-000000000002"),
        (4, None),
        (5, None),
        (7, "00000000-0000-0000-0000-000000000003"),
        (8, None),
    ]
    assert {stamp for _, _, stamp in rows} == {lineage.load_timestamp}


def test_undecided_rows_never_settled_fail_the_transaction(
    warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_module, "FRESH_TABLE_MAX_KEYS", 2)
    lineage = Lineage("f.csv", "f.csv", "0" * 64, dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    a, b, c, d = (f"{n:032x}" for n in (1, 2, 3, 4))
    with (
        pytest.raises(RuntimeError, match="never settled"),
        connect(warehouse_url) as warehouse,
        warehouse.transaction(),
    ):
        warehouse.apply_schema_changes(
            "t",
            [
                SchemaChange("create_table", None, None, None),
                SchemaChange("add_column", "n", None, SqlType.INTEGER),
            ],
        )
        ownership, holder = RowOwnership(warehouse, "t"), Holder(1, lineage)
        ownership.load_batch(_frame([a, b], [1, 2]), {"n": SqlType.INTEGER}, holder)
        # Past the budget the recent keys are held in generations of one key: after two
        # more, a repeat of ``a`` is undecided until ``finish_load``, never called.
        for key, n in ((c, 3), (d, 4), (a, 5)):
            ownership.load_batch(_frame([key], [n]), {"n": SqlType.INTEGER}, holder)
    with connect(warehouse_url) as warehouse:
        assert not warehouse.table_exists("t")


def test_a_table_created_outside_a_transaction_is_indexed_at_once(warehouse_url: str) -> None:
    with connect(warehouse_url) as warehouse:
        warehouse.apply_schema_changes(
            "t",
            [
                SchemaChange("create_table", None, None, None),
                SchemaChange("add_column", "n", None, SqlType.INTEGER),
            ],
        )
    assert _row_keys_guarded(warehouse_url, "t")


def test_seen_keys_answer_as_a_unique_index_would() -> None:
    # Keys sharing their high 64 bits, as a collision of the high halves would.
    same_high = [f"00000000000000ff{n:016x}" for n in (1, 2, 3, 4)]
    seen = SeenKeys()
    first = pl.Series([same_high[0], same_high[2], None, f"{7:032x}", same_high[0]], dtype=pl.String)
    assert seen.admit(first).to_list() == [True, True, True, True, False]
    again = pl.Series(
        [same_high[0], same_high[1], same_high[2], same_high[3], None, f"{8:032x}", same_high[1]]
    )
    assert seen.admit(again).to_list() == [False, True, False, True, True, True, False]
    assert len(seen) == 6


@pytest.mark.parametrize("slots", [1, 2**16])
def test_seen_keys_agree_with_a_set_over_many_batches(slots: int) -> None:
    import random

    rng = random.Random(7)
    # Few high halves, so that many keys collide on them, and low halves that crowd the
    # slots; all zeros among them. From one slot the table grows as the keys come.
    pool = [f"{high:016x}{low:016x}" for high in (0, 5, 2**64 - 1) for low in range(60)]
    pool += [f"{rng.getrandbits(128):032x}" for _ in range(300)]
    seen, reference = SeenKeys(slots), set[str]()
    for _ in range(40):
        batch = [rng.choice(pool) if rng.random() > 0.1 else None for _ in range(rng.randrange(0, 60))]
        expected = []
        for key in batch:
            expected.append(key is None or key not in reference)
            if key is not None:
                reference.add(key)
        assert seen.admit(pl.Series(batch, dtype=pl.String)).to_list() == expected
    assert len(seen) == len(reference)
    held = [
        f"{hi:016x}{lo:016x}" for high, low in seen.halves(slots=8) for hi, lo in zip(high, low, strict=True)
    ]
    assert sorted(held) == sorted(reference)


@pytest.mark.parametrize("bits", [64, 2**16])
def test_a_key_filter_never_calls_a_held_key_new(bits: int) -> None:
    """Checked against a set, with the Bloom filter saturated (64 bits) or hardly ever
    wrong: a held key is never first. With generations of 30 keys and batches of at most
    20, the last 10 keys taken in (first or undecided) before a batch are held exactly, so
    a repeat of one is never undecided; an older key's repeat is, when the filter saw it,
    and so is a new key the filter mistakes for a held one."""
    import random

    rng = random.Random(11)
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(400)]
    held = SeenKeys()
    held.admit(pl.Series(pool[:50], dtype=pl.String))
    keys = KeyFilter(bits, held, generation=30)
    taken_in, reference = list(pool[:50]), set(pool[:50])
    mistaken = far = 0
    for _ in range(80):
        batch = [rng.choice(pool) if rng.random() > 0.1 else None for _ in range(rng.randrange(0, 21))]
        recent = set(taken_in[-10:])
        first, undecided = keys.admit(pl.Series(batch, dtype=pl.String))
        in_batch: set[str] = set()
        for key, is_first, is_undecided in zip(batch, first.to_list(), undecided.to_list(), strict=True):
            assert not (is_first and is_undecided)
            if key is None:
                assert is_first  # a row without a key always goes in
                continue
            if key in in_batch or key in recent:
                assert not is_first and not is_undecided  # a repeat decided here
            elif key in reference:
                assert not is_first  # held before
                far += is_undecided
            else:
                assert is_first or is_undecided
                mistaken += is_undecided
            if is_first or is_undecided:
                taken_in.append(key)
            in_batch.add(key)
            reference.add(key)
    assert far > 0  # old keys came again, and only the database can tell
    # In 64 bits most new keys look held already; 65,536 bits hardly ever mistake one.
    new_keys = len(reference) - 50
    assert mistaken > new_keys // 2 if bits == 64 else mistaken == 0
