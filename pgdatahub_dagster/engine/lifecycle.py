"""What a file's disappearance does to the warehouse.

A file that is deleted, trashed or moved out of the watched folders is handled by its
folder's ``on_delete`` setting: ``keep`` (the default) leaves its rows, ranked below every
live file that holds the same keys (its import becomes ``kept``, and a ``deleted`` ledger
row notes the event); ``retract`` gives its rows up in one transaction (``retracted``):
rows that another file still holds stay, showing that file's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.warehouse import ImportRecord, Warehouse
from pgdatahub_dagster.engine.warehouse.ownership import RowOwnership


@dataclass(frozen=True)
class DeletionOutcome:
    source_file_id: str
    source_file: str
    table_name: str
    status: str  # "deleted" (rows kept) or "retracted" (rows given up)
    rows_deleted: int


def record_deletion(
    warehouse: Warehouse, mapping: FolderMapping, source_file_id: str, run_id: str | None
) -> list[DeletionOutcome]:
    """Apply ``on_delete`` to every table the file holds rows in; one outcome per table.
    A file that holds no rows (never loaded, or already handled) has nothing to do, so a
    repeated request is harmless."""

    def apply() -> list[DeletionOutcome]:
        outcomes = []
        tables = {h.table_name for h in warehouse.holding_imports(source_file_id)}
        for table in sorted(tables):
            warehouse.lock(table)
        for live in warehouse.holding_imports(source_file_id):
            if live.status != "success":
                continue  # already deleted under keep
            # Only on_delete and prefer are read, so the root's name (which names
            # root-level tables) is moot.
            settings = mapping.settings_for(PurePosixPath(live.source_file).parent.parts, root_name="")
            ownership = RowOwnership(warehouse, live.table_name, settings.prefer)
            started_at = datetime.now(UTC)
            holding = [(live.id, live.source_file_id, live.file_sha256)]
            if settings.on_delete == "retract":
                status, removed = "retracted", ownership.release(holding, "retracted")
            else:
                status, removed = "deleted", ownership.release(holding, "kept")
            warehouse.record_import(
                ImportRecord(
                    id=warehouse.next_import_id(),
                    table_name=live.table_name,
                    source_file=live.source_file,
                    source_file_id=source_file_id,
                    file_sha256=live.file_sha256,
                    status=status,
                    run_id=run_id,
                    started_at=started_at,
                    finished_at=datetime.now(UTC),
                    rows_deleted=removed,
                    replaced_import_id=live.id,
                )
            )
            outcomes.append(
                DeletionOutcome(source_file_id, live.source_file, live.table_name, status, removed)
            )
        return outcomes

    # On DuckLake a transaction that lost a commit race runs again from the start.
    return warehouse.run_transaction(apply)
