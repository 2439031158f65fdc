"""Undo imports: by file path, file id, content hash or run.

Each selected import gives its rows up and its ledger row becomes ``reverted``, all in one
transaction, under the same ownership rule as a deleted file: a row another file still
holds stays, showing that file's values. Importing the same file again (the next full
sync does, as the file is still there) brings its rows back.
With ``schema``, the schema changes those imports made are undone where that is safe: a
column they added is dropped once no row uses it, a table they created once it is empty.
Type widening is never undone: narrowing could not hold the values written since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath

from pgdatahub_dagster.engine.errors import PgDataHubError
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.schema import SchemaChange
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, SCHEMA_CHANGES_TABLE, Warehouse
from pgdatahub_dagster.engine.warehouse.base import HOLDING_SQL
from pgdatahub_dagster.engine.warehouse.ownership import RowOwnership

SELECTORS = {"file": "source_file", "file_id": "source_file_id", "sha256": "file_sha256", "run": "run_id"}


class RevertError(PgDataHubError):
    """The revert request itself is wrong (no selector, or several)."""


@dataclass(frozen=True)
class RevertedImport:
    import_id: int
    table_name: str
    source_file: str
    file_sha256: str
    rows_deleted: int


@dataclass(frozen=True)
class SchemaUndo:
    table_name: str
    change_type: str
    column_name: str | None
    done: bool
    reason: str


@dataclass
class RevertReport:
    dry_run: bool
    imports: list[RevertedImport] = field(default_factory=list)
    schema: list[SchemaUndo] = field(default_factory=list)

    @property
    def rows_deleted(self) -> int:
        return sum(item.rows_deleted for item in self.imports)


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back after measuring it."""

    def __init__(self, report: RevertReport) -> None:
        super().__init__()
        self.report = report


def revert(
    warehouse: Warehouse,
    *,
    mapping: FolderMapping | None = None,
    selector: str,
    value: str,
    schema: bool = False,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RevertReport:
    """Revert the successful imports whose ``selector`` (file, file_id, sha256 or run)
    equals ``value``. A dry run does everything, reports it, and rolls it back."""
    mapping = mapping or FolderMapping()
    if selector not in SELECTORS:
        raise RevertError(f"revert by one of {', '.join(SELECTORS)}, not {selector!r}")
    p = warehouse.placeholder

    def attempt() -> RevertReport:
        report = RevertReport(dry_run=dry_run)
        targets = warehouse.fetchall(
            f"SELECT id, table_name, source_file, source_file_id, file_sha256 FROM {LEDGER_TABLE} "
            f"WHERE status IN {HOLDING_SQL} AND {SELECTORS[selector]} = {p} ORDER BY id",
            (value,),
        )
        for table in sorted({row[1] for row in targets}):
            warehouse.lock(table)
        for import_id, table, source_file, source_file_id, file_sha256 in targets:
            settings = mapping.settings_for(PurePosixPath(source_file).parent.parts, root_name="")
            ownership = RowOwnership(warehouse, table, settings.prefer)
            removed = ownership.release([(import_id, source_file_id, file_sha256)], "reverted")
            report.imports.append(RevertedImport(import_id, table, source_file, file_sha256, removed))
        if schema and targets:
            report.schema = _undo_schema_changes(warehouse, [int(row[0]) for row in targets], run_id)
        if dry_run:
            raise _DryRun(report)
        return report

    try:
        # On DuckLake a transaction that lost a commit race runs again from the start.
        return warehouse.run_transaction(attempt)
    except _DryRun as rolled_back:
        return rolled_back.report


def _undo_schema_changes(warehouse: Warehouse, import_ids: list[int], run_id: str | None) -> list[SchemaUndo]:
    p = warehouse.placeholder
    placeholders = ", ".join([p] * len(import_ids))
    changes = warehouse.fetchall(
        f"SELECT import_id, table_name, change_type, column_name, old_type, new_type, source_file "
        f"FROM {SCHEMA_CHANGES_TABLE} WHERE import_id IN ({placeholders}) ORDER BY id DESC",
        import_ids,
    )
    undone: list[SchemaUndo] = []
    dropped_tables: set[str] = set()
    # Tables these imports created go first: an empty one is dropped whole, columns and all.
    for import_id, table, _, _, _, _, source_file in (c for c in changes if c[2] == "create_table"):
        remaining = _count(warehouse, table)
        if remaining is None:
            continue
        if remaining:
            undone.append(SchemaUndo(table, "create_table", None, False, f"kept: {remaining} rows remain"))
            continue
        warehouse.execute(f"DROP TABLE {warehouse.quote(table)}")
        RowOwnership(warehouse, table).drop_holders()
        _audit(warehouse, import_id, table, SchemaChange("drop_table", None, None, None), source_file, run_id)
        undone.append(SchemaUndo(table, "create_table", None, True, "undone"))
        dropped_tables.add(table)
    for import_id, table, change_type, column, old_type, new_type, source_file in changes:
        if table in dropped_tables or change_type == "create_table":
            continue
        if change_type == "alter_type":
            reason = (
                f"refused: {table}.{column} stays {new_type}; narrowing it back to {old_type} "
                "could not hold the values written since"
            )
            undone.append(SchemaUndo(table, change_type, column, False, reason))
            continue
        columns = warehouse.table_columns(table)
        if columns is None or column not in columns:
            continue  # already gone
        in_use = _count(warehouse, table, f"{warehouse.quote(column)} IS NOT NULL")
        if in_use:
            undone.append(SchemaUndo(table, change_type, column, False, f"kept: {in_use} rows still use it"))
            continue
        warehouse.drop_column(table, column)
        _audit(
            warehouse, import_id, table, SchemaChange("drop_column", column, None, None), source_file, run_id
        )
        undone.append(SchemaUndo(table, change_type, column, True, "undone"))
    return undone


def _count(warehouse: Warehouse, table: str, where: str = "TRUE") -> int | None:
    """Rows of ``table`` matching ``where``; ``None`` when the table does not exist."""
    if warehouse.table_columns(table) is None:
        return None
    return int(warehouse.fetchall(f"SELECT count(*) FROM {warehouse.quote(table)} WHERE {where}")[0][0])


def _audit(
    warehouse: Warehouse,
    import_id: int,
    table: str,
    change: SchemaChange,
    source_file: str,
    run_id: str | None,
) -> None:
    warehouse.record_schema_changes(import_id, table, [change], source_file, run_id, datetime.now(UTC))
