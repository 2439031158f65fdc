"""What landed: per-table figures and the ledger, for the CLI and the Dagster UI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN as ROW_KEY
from pgdatahub_dagster.engine.mapping import unique_key_read_as
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, LINEAGE_COLUMNS, Warehouse
from pgdatahub_dagster.engine.warehouse.base import HOLDING_SQL, SCHEMA_CHANGES_TABLE


@dataclass(frozen=True)
class TableStatus:
    table_name: str
    imported: int
    skipped: int
    failed: int
    reverted: int
    deleted: int  # files gone from the source: rows kept (deleted) or removed (retracted)
    rows: int | None  # None: the table does not exist (every import failed)
    last_import: datetime | None
    last_error: str | None


def table_status(warehouse: Warehouse) -> list[TableStatus]:
    """One entry per table the ledger knows, with its current row count: three statements,
    and one more per 50 tables to count their rows (5,000 tables: under a second)."""
    rows = warehouse.fetchall(
        f"""SELECT table_name,
               SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END),
               SUM(CASE WHEN status = 'skipped' THEN 1 ELSE 0 END),
               SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
               SUM(CASE WHEN status = 'reverted' THEN 1 ELSE 0 END),
               SUM(CASE WHEN status IN ('deleted', 'retracted') THEN 1 ELSE 0 END),
               MAX(CASE WHEN status = 'success' THEN finished_at END)
        FROM {LEDGER_TABLE} GROUP BY table_name ORDER BY table_name"""
    )
    last_errors = dict(
        warehouse.fetchall(
            f"SELECT table_name, error FROM (SELECT table_name, error, row_number() OVER "
            f"(PARTITION BY table_name ORDER BY id DESC) AS newest FROM {LEDGER_TABLE} "
            "WHERE status = 'failed') AS failures WHERE newest = 1"
        )
    )
    counts = row_counts(warehouse, [str(row[0]) for row in rows])
    return [
        TableStatus(
            table_name=table,
            imported=int(imported),
            skipped=int(skipped),
            failed=int(failed),
            reverted=int(reverted),
            deleted=int(deleted),
            rows=counts.get(table),
            last_import=last_import,
            last_error=last_errors.get(table),
        )
        for table, imported, skipped, failed, reverted, deleted, last_import in rows
    ]


def table_sources(warehouse: Warehouse) -> dict[str, list[str]]:
    """The tables the warehouse holds rows of, each with the sources (``local``, ``drive``,
    ``gmail``) of the imports that hold them: one statement over the ledger. Rows written before
    the ledger named sources are the local tree's, the only source then."""
    rows = warehouse.fetchall(
        f"SELECT DISTINCT table_name, COALESCE(source, 'local') FROM {LEDGER_TABLE} "
        f"WHERE status IN {HOLDING_SQL} ORDER BY 1, 2"
    )
    tables: dict[str, list[str]] = {}
    for table, source in rows:
        tables.setdefault(str(table), []).append(str(source))
    return tables


# Tables counted per statement: one statement per table costs a round trip each, and
# PostgreSQL plans a long UNION in more than linear time (5,000 tables: 0.4 s by 50, 2 s by
# 200 or one by one); a statement also locks every table it reads.
_COUNTED_PER_STATEMENT = 50


def row_counts(warehouse: Warehouse, tables: Sequence[str]) -> dict[str, int]:
    """The row count of each of ``tables`` that exists."""
    existing = warehouse.table_names()
    present = [table for table in tables if table in existing]
    counts: dict[str, int] = {}
    for start in range(0, len(present), _COUNTED_PER_STATEMENT):
        chunk = present[start : start + _COUNTED_PER_STATEMENT]
        # Each count is labelled with its table's position in the chunk.
        union = " UNION ALL ".join(
            f"SELECT {number}, count(*) FROM {warehouse.quote(table)}" for number, table in enumerate(chunk)
        )
        counts.update((chunk[int(number)], int(count)) for number, count in warehouse.fetchall(union))
    return counts


def recent_imports(warehouse: Warehouse, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
    """The newest ledger rows first, optionally only those of one status."""
    where = f"WHERE status = {warehouse.placeholder} " if status else ""
    names = ["id", "table_name", "source_file", "status", "rows_read", "rows_inserted", "rows_duplicate"]
    names += ["duplicate_of", "error", "finished_at"]
    rows = warehouse.fetchall(
        f"SELECT {', '.join(names)} FROM {LEDGER_TABLE} {where}ORDER BY id DESC LIMIT {int(limit)}",
        (status,) if status else (),
    )
    return [dict(zip(names, row, strict=True)) for row in rows]


def ledger_mismatches(warehouse: Warehouse, tables: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Tables whose ownership records disagree with the ledger: ``{table: {"found": holdings
    found, "ledger": holdings the ledger accounts for, "unaccounted": rows naming an import
    that holds nothing}}``, for the ledger's tables or only ``tables``. Empty when all agree.

    Every live (or kept) import holds ``rows_held`` keys; each is either a data row it
    supplies or a row of the table's holders table. A data row whose supplier no longer
    holds rows, or a holders row of such an import, counts as found but unaccounted for.
    """
    accounted = warehouse.fetchall(
        f"SELECT table_name, SUM(rows_held) FROM {LEDGER_TABLE} "
        f"WHERE status IN {HOLDING_SQL} GROUP BY table_name"
    )
    expected = {str(table): int(held) for table, held in accounted}
    if tables is None:
        ledger_tables = warehouse.fetchall(f"SELECT DISTINCT table_name FROM {LEDGER_TABLE}")
        tables = {str(row[0]) for row in ledger_tables}
    mismatches: dict[str, dict[str, int]] = {}
    p = warehouse.placeholder
    for table in sorted(tables):
        found = unaccounted = 0
        if warehouse.table_exists(table):
            quoted = warehouse.quote(table)
            found = warehouse.count(table)
            unaccounted = int(
                warehouse.fetchall(
                    f"SELECT count(*) FROM {quoted} t WHERE NOT EXISTS (SELECT 1 FROM {LEDGER_TABLE} l "
                    f"WHERE l.table_name = {p} AND l.source_file_id = t.source_file_id "
                    f"AND l.file_sha256 = t.file_sha256 AND l.status IN {HOLDING_SQL})",
                    (table,),
                )[0][0]
            )
            holders = warehouse.holders_table(table)
            if holders is not None:
                found += int(warehouse.fetchall(f"SELECT count(*) FROM {holders}")[0][0])
                unaccounted += int(
                    warehouse.fetchall(
                        f"SELECT count(*) FROM {holders} h WHERE NOT EXISTS (SELECT 1 FROM {LEDGER_TABLE} l "
                        f"WHERE l.id = h._import_id AND l.status IN {HOLDING_SQL})"
                    )[0][0]
                )
        if found != expected.get(table, 0) or unaccounted:
            mismatches[table] = {"found": found, "ledger": expected.get(table, 0), "unaccounted": unaccounted}
    return mismatches


def duplicate_keys(warehouse: Warehouse, tables: Iterable[str] | None = None) -> dict[str, int]:
    """Tables (of the ledger, or ``tables``) where some business key occurs more than once:
    ``{table: repeated keys}``."""
    if tables is None:
        tables = [
            str(row[0])
            for row in warehouse.fetchall(
                f"SELECT DISTINCT table_name FROM {LEDGER_TABLE} WHERE status = 'success'"
            )
        ]
    found = {}
    for table in tables:
        if warehouse.table_columns(table) is None:
            continue
        repeated = warehouse.fetchall(
            f"SELECT count(*) FROM (SELECT {ROW_KEY} FROM {warehouse.quote(table)} "
            f"WHERE {ROW_KEY} IS NOT NULL GROUP BY {ROW_KEY} HAVING count(*) > 1) AS repeated"
        )[0][0]
        if repeated:
            found[table] = int(repeated)
    return found


@dataclass(frozen=True)
class ColumnDetails:
    name: str
    sql_type: str  # as the database names it
    is_key: bool  # part of the business key the row key (``_row_key``) is built from, or that key
    is_lineage: bool  # names the file whose values the row shows


@dataclass(frozen=True)
class SchemaChangeRecord:
    """One row of ``etl_schema_changes``."""

    change_type: str
    column_name: str | None
    old_type: str | None
    new_type: str | None
    source_file: str
    changed_at: datetime


@dataclass(frozen=True)
class TableDetails:
    """What a table holds now, for its Dagster asset: columns, rows, the files behind them."""

    table_name: str
    qualified_name: str  # database.schema.table
    columns: list[ColumnDetails]
    row_count: int
    files_held: int  # imports (files) that hold rows of it
    rows_held: int  # the keys those imports hold, a key counted once per file that holds it
    last_schema_change: SchemaChangeRecord | None


_CHANGE_COLUMNS = "change_type, column_name, old_type, new_type, source_file, changed_at"


def _changes(rows: list[tuple[Any, ...]]) -> list[SchemaChangeRecord]:
    return [SchemaChangeRecord(*row) for row in rows]


def table_details(warehouse: Warehouse, table: str) -> TableDetails | None:
    """The table as it is now; ``None`` when it does not exist (every import failed)."""
    columns = warehouse.column_types(table)
    if not columns:
        return None
    p = warehouse.placeholder
    held = warehouse.fetchall(
        f"SELECT count(DISTINCT source_file_id), COALESCE(SUM(rows_held), 0) FROM {LEDGER_TABLE} "
        f"WHERE table_name = {p} AND status IN {HOLDING_SQL}",
        (table,),
    )[0]
    keys = [
        unique_key_read_as(str(read_as))
        for (read_as,) in warehouse.fetchall(
            f"SELECT DISTINCT read_as FROM {LEDGER_TABLE} WHERE table_name = {p} "
            f"AND status IN {HOLDING_SQL} AND read_as IS NOT NULL",
            (table,),
        )
    ]
    every_column_keyed = not keys or any(key is None for key in keys)
    key_columns = {name for key in keys for name in key or ()}
    details = []
    for name, sql_type in columns:
        lineage = name in LINEAGE_COLUMNS
        if name == ROW_KEY:
            keyed = True
        elif lineage:
            keyed = False
        else:
            keyed = every_column_keyed or name in key_columns
        details.append(ColumnDetails(name, sql_type, keyed, lineage))
    last = _changes(
        warehouse.fetchall(
            f"SELECT {_CHANGE_COLUMNS} FROM {SCHEMA_CHANGES_TABLE} WHERE table_name = {p} "
            "ORDER BY id DESC LIMIT 1",
            (table,),
        )
    )
    database, schema = warehouse.fetchall("SELECT current_database(), current_schema()")[0]
    return TableDetails(
        table_name=table,
        qualified_name=f"{database}.{schema}.{table}",
        columns=details,
        row_count=warehouse.count(table),
        files_held=int(held[0]),
        rows_held=int(held[1]),
        last_schema_change=last[0] if last else None,
    )


def schema_drift(warehouse: Warehouse, table: str) -> list[SchemaChangeRecord]:
    """The columns the table's last import added or widened, unless that import created the
    table: a dashboard built on the table may not expect them."""
    p = warehouse.placeholder
    last = warehouse.fetchall(
        f"SELECT id FROM {LEDGER_TABLE} WHERE table_name = {p} AND status = 'success' "
        "ORDER BY id DESC LIMIT 1",
        (table,),
    )
    if not last:
        return []
    changes = warehouse.fetchall(
        f"SELECT {_CHANGE_COLUMNS} FROM {SCHEMA_CHANGES_TABLE} WHERE import_id = {p} AND table_name = {p} "
        "ORDER BY id",
        (last[0][0], table),
    )
    if any(change[0] == "create_table" for change in changes):
        return []
    return [change for change in _changes(changes) if change.change_type in ("add_column", "alter_type")]
