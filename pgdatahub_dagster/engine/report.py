"""What landed: per-table figures and the ledger, for the CLI and the Dagster UI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, Warehouse


@dataclass(frozen=True)
class TableStatus:
    table_name: str
    imported: int
    skipped: int
    failed: int
    rows: int | None  # None: the table does not exist (every import failed)
    last_import: datetime | None
    last_error: str | None


def table_status(warehouse: Warehouse) -> list[TableStatus]:
    """One entry per table the ledger knows, with its current row count."""
    rows = warehouse.fetchall(
        f"""SELECT table_name,
               SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END),
               SUM(CASE WHEN status = 'skipped' THEN 1 ELSE 0 END),
               SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
               MAX(CASE WHEN status = 'success' THEN finished_at END)
        FROM {LEDGER_TABLE} GROUP BY table_name ORDER BY table_name"""
    )
    statuses = []
    for table, imported, skipped, failed, last_import in rows:
        last_error = warehouse.fetchall(
            f"SELECT error FROM {LEDGER_TABLE} WHERE table_name = {warehouse.placeholder} "
            "AND status = 'failed' ORDER BY id DESC LIMIT 1",
            (table,),
        )
        count = None
        if warehouse.table_columns(table) is not None:
            count = int(warehouse.fetchall(f"SELECT count(*) FROM {warehouse.quote(table)}")[0][0])
        statuses.append(
            TableStatus(
                table_name=table,
                imported=int(imported),
                skipped=int(skipped),
                failed=int(failed),
                rows=count,
                last_import=last_import,
                last_error=last_error[0][0] if last_error else None,
            )
        )
    return statuses


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
