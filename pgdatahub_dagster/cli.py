"""The ``pgdatahub`` command: what landed in the warehouse, and undoing it.

``pgdatahub status`` prints one line per table, the latest failures and, on a DuckLake, the
latest snapshots;
``pgdatahub ledger`` prints the newest rows of the import ledger;
``pgdatahub revert (--file PATH | --file-id ID | --sha256 HASH | --run RUN_ID) [--dry-run] [--schema]``
undoes imports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pgdatahub_dagster.engine.errors import PgDataHubError
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import recent_imports, table_status
from pgdatahub_dagster.engine.revert import SELECTORS, revert
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


def _status(warehouse: Warehouse, limit: int, snapshots: int) -> None:
    print(f"Warehouse: {warehouse.display_url}\n")
    statuses = table_status(warehouse)
    if not statuses:
        print("Nothing imported yet.")
        return
    _print_table(
        [
            "table",
            "rows",
            "imported",
            "skipped",
            "failed",
            "reverted",
            "deleted",
            "last import",
            "last error",
        ],
        [
            (
                s.table_name,
                s.rows,
                s.imported,
                s.skipped,
                s.failed,
                s.reverted,
                s.deleted,
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
    latest = warehouse.snapshots(snapshots)
    if latest:
        print("\nLatest snapshots (read a table as of one with AT (VERSION => snapshot)):")
        _print_table(
            ["snapshot", "committed", "message"],
            [(s.id, s.committed_at.strftime("%Y-%m-%d %H:%M:%S"), _shorten(s.message)) for s in latest],
        )


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


def _revert(warehouse: Warehouse, args: argparse.Namespace) -> None:
    selector = next(name for name in SELECTORS if getattr(args, name) is not None)
    report = revert(
        warehouse,
        mapping=FolderMapping.load(Settings.from_env().config_path),
        selector=selector,
        value=getattr(args, selector),
        schema=args.schema,
        dry_run=args.dry_run,
    )
    prefix = "Would revert" if report.dry_run else "Reverted"
    if not report.imports:
        print(f"Nothing to revert: no successful import has {selector} = {getattr(args, selector)!r}.")
        return
    print(f"{prefix} {len(report.imports)} imports, {report.rows_deleted} rows:")
    _print_table(
        ["import", "table", "file", "rows"],
        [(i.import_id, i.table_name, i.source_file, i.rows_deleted) for i in report.imports],
    )
    if report.schema:
        print("\nSchema changes:")
        for undo in report.schema:
            target = f"{undo.table_name}.{undo.column_name}" if undo.column_name else undo.table_name
            outcome = "would be undone" if report.dry_run and undo.done else undo.reason
            print(f"  {undo.change_type} {target}: {outcome}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgdatahub", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="defaults to PGDATAHUB_DATABASE_URL")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser(
        "status", help="one line per table, then the latest failures and DuckLake snapshots"
    )
    status.add_argument("--failures", type=int, default=10, help="how many recent failures to list")
    status.add_argument("--snapshots", type=int, default=5, help="how many DuckLake snapshots to list")
    ledger = commands.add_parser("ledger", help="the newest rows of the import ledger")
    ledger.add_argument("--limit", type=int, default=20)
    undo = commands.add_parser("revert", help="undo imports: delete their rows and mark them reverted")
    which = undo.add_mutually_exclusive_group(required=True)
    which.add_argument("--file", help="the file's path as shown in the ledger (source_file)")
    which.add_argument("--file-id", dest="file_id", help="the file's id (source_file_id; a Drive file id)")
    which.add_argument("--sha256", help="the content hash (file_sha256)")
    which.add_argument("--run", help="a Dagster run id: everything that run imported")
    undo.add_argument("--dry-run", action="store_true", help="report what would happen, change nothing")
    undo.add_argument(
        "--schema", action="store_true", help="also drop columns and tables those imports added, once unused"
    )
    args = parser.parse_args(argv)
    try:
        with connect(Settings.from_env(database_url=args.database_url).database_url) as warehouse:
            if args.command == "status":
                _status(warehouse, args.failures, args.snapshots)
            elif args.command == "ledger":
                _ledger(warehouse, args.limit)
            else:
                _revert(warehouse, args)
    except PgDataHubError as error:
        print(f"pgdatahub: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
