"""The ``pgdatahub`` command: what landed in the warehouse.

``pgdatahub status`` prints one line per table and the latest failures;
``pgdatahub ledger`` prints the newest rows of the import ledger.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pgdatahub_dagster.engine.errors import PgDataHubError
from pgdatahub_dagster.engine.report import recent_imports, table_status
from pgdatahub_dagster.engine.settings import Settings
from pgdatahub_dagster.engine.warehouse import Warehouse, connect


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _shorten(text: str | None, limit: int = 100) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _status(warehouse: Warehouse, limit: int) -> None:
    print(f"Warehouse: {warehouse.display_url}\n")
    statuses = table_status(warehouse)
    if not statuses:
        print("Nothing imported yet.")
        return
    _print_table(
        ["table", "rows", "imported", "skipped", "failed", "last import", "last error"],
        [
            (
                s.table_name,
                s.rows,
                s.imported,
                s.skipped,
                s.failed,
                s.last_import and s.last_import.strftime("%Y-%m-%d %H:%M:%S"),
                _shorten(s.last_error, 60),
            )
            for s in statuses
        ],
    )
    failures = recent_imports(warehouse, limit, status="failed")
    if failures:
        print("\nRecent failures:")
        for failure in failures:
            print(f"  #{failure['id']} {failure['error']}")


def _ledger(warehouse: Warehouse, limit: int) -> None:
    rows = recent_imports(warehouse, limit)
    _print_table(
        ["id", "table", "file", "status", "read", "new", "dup", "note"],
        [
            (
                r["id"],
                r["table_name"],
                r["source_file"],
                r["status"],
                r["rows_read"],
                r["rows_inserted"],
                r["rows_duplicate"],
                _shorten(r["error"] or (r["duplicate_of"] and f"same content as {r['duplicate_of']}")),
            )
            for r in rows
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgdatahub", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="defaults to PGDATAHUB_DATABASE_URL")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="one line per table, then the latest failures")
    status.add_argument("--failures", type=int, default=10, help="how many recent failures to list")
    ledger = commands.add_parser("ledger", help="the newest rows of the import ledger")
    ledger.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        with connect(Settings.from_env(database_url=args.database_url).database_url) as warehouse:
            if args.command == "status":
                _status(warehouse, args.failures)
            else:
                _ledger(warehouse, args.limit)
    except PgDataHubError as error:
        print(f"pgdatahub: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
