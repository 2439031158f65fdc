"""What a file's disappearance does to the warehouse.

A file that is deleted, trashed or moved out of the watched folders is handled by its
folder's ``on_delete`` setting: ``keep`` (the default) leaves its rows and notes the
deletion in the ledger (status ``deleted``); ``retract`` removes its rows in one
transaction (status ``retracted``, and its imports become ``retracted`` too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.warehouse import LEDGER_TABLE, ImportRecord, Warehouse


@dataclass(frozen=True)
class DeletionOutcome:
    source_file_id: str
    source_file: str
    table_name: str
    status: str  # "deleted" (rows kept) or "retracted" (rows removed)
    rows_deleted: int


def record_deletion(
    warehouse: Warehouse, mapping: FolderMapping, source_file_id: str, run_id: str | None
) -> list[DeletionOutcome]:
    """Apply ``on_delete`` to every table holding rows of the file; one outcome per table.
    A file that never loaded any rows has nothing to keep or retract."""
    p = warehouse.placeholder
    holdings = warehouse.fetchall(
        f"SELECT table_name, MAX(id) FROM {LEDGER_TABLE} WHERE source_file_id = {p} AND status = 'success' "
        "GROUP BY table_name ORDER BY table_name",
        (source_file_id,),
    )
    outcomes = []
    for table, latest_id in holdings:
        source_file, file_sha256 = warehouse.fetchall(
            f"SELECT source_file, file_sha256 FROM {LEDGER_TABLE} WHERE id = {p}", (latest_id,)
        )[0]
        # Only on_delete is read, so the root's name (which names root-level tables) is moot.
        settings = mapping.settings_for(PurePosixPath(source_file).parent.parts, root_name="")
        started_at = datetime.now(UTC)
        with warehouse.transaction():
            warehouse.lock(table)
            imports = warehouse.successful_imports(table, source_file_id)
            if settings.on_delete == "retract":
                status, removed = "retracted", warehouse.delete_file_rows(table, source_file_id)
                warehouse.retire_imports(imports, "retracted")
            else:
                status, removed = "deleted", 0
            warehouse.record_import(
                ImportRecord(
                    id=warehouse.next_import_id(),
                    table_name=table,
                    source_file=source_file,
                    source_file_id=source_file_id,
                    file_sha256=file_sha256,
                    status=status,
                    run_id=run_id,
                    started_at=started_at,
                    finished_at=datetime.now(UTC),
                    rows_deleted=removed,
                )
            )
        outcomes.append(DeletionOutcome(source_file_id, source_file, table, status, removed))
    return outcomes
