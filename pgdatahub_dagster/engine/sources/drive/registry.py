"""The registry of watched Drive folders, kept in the warehouse (``drive_folder_registry``).

Drive tells a file's parent folder id, not its path; the registry maps folder ids to
paths below their root, and so files to tables through the folder mapping. Changes keep
it current: a folder renamed or moved changes where files imported *later* go, while
rows already loaded keep the path they were imported under.

It also remembers which folders the walk of the tree has listed, so a walk too large
for one sensor tick continues on the next one, even after a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pgdatahub_dagster.engine.sources.drive.client import DriveItem
from pgdatahub_dagster.engine.warehouse import REGISTRY_TABLE, Warehouse

_DDL = f"""CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (
    folder_id TEXT {{key}},
    parent_id TEXT,
    root_id TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    listed BOOLEAN NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
)"""


def _segment(name: str) -> str:
    # A "/" inside a Drive name must not read as a sub-folder.
    return name.replace("/", "_")


class FolderRegistry:
    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        with warehouse.transaction():
            warehouse.lock(REGISTRY_TABLE)
            warehouse.execute(_DDL.format(key="PRIMARY KEY" if warehouse.has_indexes else "NOT NULL"))

    def _p(self, count: int) -> str:
        return ", ".join([self.warehouse.placeholder] * count)

    def folder(self, folder_id: str) -> tuple[str, str] | None:
        """``(root_id, path)`` of a watched folder; ``None`` when it is not watched."""
        rows = self.warehouse.fetchall(
            f"SELECT root_id, path FROM {REGISTRY_TABLE} WHERE folder_id = {self._p(1)}", (folder_id,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def root_name(self, root_id: str) -> str:
        rows = self.warehouse.fetchall(
            f"SELECT name FROM {REGISTRY_TABLE} WHERE folder_id = {self._p(1)}", (root_id,)
        )
        return str(rows[0][0]) if rows else root_id

    def folder_paths(self) -> list[tuple[str, str]]:
        """``(root name, path)`` of every watched folder."""
        rows = self.warehouse.fetchall(
            f"SELECT root.name, folder.path FROM {REGISTRY_TABLE} folder "
            f"JOIN {REGISTRY_TABLE} root ON root.folder_id = folder.root_id"
        )
        return [(str(name), str(path)) for name, path in rows]

    def file_path(self, item: DriveItem) -> str | None:
        """The path of a file below its root, or ``None`` when its folder is not watched."""
        if item.parent_id is None:
            return None
        folder = self.folder(item.parent_id)
        if folder is None:
            return None
        return f"{folder[1]}/{_segment(item.name)}" if folder[1] else _segment(item.name)

    def _write(
        self, folder_id: str, parent_id: str | None, root_id: str, name: str, path: str, listed: bool
    ) -> None:
        row = {
            "folder_id": folder_id,
            "parent_id": parent_id,
            "root_id": root_id,
            "name": name,
            "path": path,
            "listed": listed,
            "updated_at": datetime.now(UTC),
        }
        self.warehouse.upsert(REGISTRY_TABLE, "folder_id", row)

    def set_roots(self, roots: list[DriveItem]) -> None:
        """Start a full walk: forget everything, then register the roots as unlisted."""
        with self.warehouse.transaction():
            self.warehouse.execute(f"DELETE FROM {REGISTRY_TABLE}")
            for root in roots:
                self._write(root.id, None, root.id, root.name, "", listed=False)

    def is_root(self, folder_id: str) -> bool:
        folder = self.folder(folder_id)
        return folder is not None and folder[0] == folder_id

    def upsert(self, item: DriveItem) -> bool:
        """Register a folder found under a watched folder, or follow its rename or move.

        Returns ``True`` when it is new to the registry: its contents must be listed.
        """
        assert item.parent_id is not None
        parent = self.folder(item.parent_id)
        assert parent is not None
        root_id, parent_path = parent
        path = f"{parent_path}/{_segment(item.name)}" if parent_path else _segment(item.name)
        existing = self.folder(item.id)
        with self.warehouse.transaction():
            if existing is None:
                self._write(item.id, item.parent_id, root_id, item.name, path, listed=False)
                return True
            listed = bool(
                self.warehouse.fetchall(
                    f"SELECT listed FROM {REGISTRY_TABLE} WHERE folder_id = {self._p(1)}", (item.id,)
                )[0][0]
            )
            self._write(item.id, item.parent_id, root_id, item.name, path, listed)
            if existing != (root_id, path):
                self._repath_descendants(item.id, root_id, path)
        return False

    def rename_root(self, item: DriveItem) -> None:
        self.warehouse.execute(
            f"UPDATE {REGISTRY_TABLE} SET name = {self._p(1)} WHERE folder_id = {self._p(1)}",
            (item.name, item.id),
        )

    def _children(self, folder_id: str) -> list[tuple[str, str]]:
        rows = self.warehouse.fetchall(
            f"SELECT folder_id, name FROM {REGISTRY_TABLE} WHERE parent_id = {self._p(1)}", (folder_id,)
        )
        return [(str(child), str(name)) for child, name in rows]

    def _repath_descendants(self, folder_id: str, root_id: str, path: str) -> None:
        pending = [(folder_id, path)]
        while pending:
            parent_id, parent_path = pending.pop()
            for child_id, name in self._children(parent_id):
                child_path = f"{parent_path}/{_segment(name)}"
                self.warehouse.execute(
                    f"UPDATE {REGISTRY_TABLE} SET root_id = {self._p(1)}, path = {self._p(1)} "
                    f"WHERE folder_id = {self._p(1)}",
                    (root_id, child_path, child_id),
                )
                pending.append((child_id, child_path))

    def remove(self, folder_id: str) -> None:
        """Stop watching a folder (trashed, deleted or moved out) and everything below it."""
        with self.warehouse.transaction():
            pending = [folder_id]
            while pending:
                current = pending.pop()
                pending += [child for child, _ in self._children(current)]
                self.warehouse.execute(
                    f"DELETE FROM {REGISTRY_TABLE} WHERE folder_id = {self._p(1)}", (current,)
                )

    def unlisted(self, limit: int) -> list[str]:
        rows = self.warehouse.fetchall(
            f"SELECT folder_id FROM {REGISTRY_TABLE} WHERE NOT listed "
            f"ORDER BY path, folder_id LIMIT {int(limit)}"
        )
        return [str(row[0]) for row in rows]

    def mark_listed(self, folder_ids: list[str]) -> None:
        with self.warehouse.transaction():
            for folder_id in folder_ids:
                self.warehouse.execute(
                    f"UPDATE {REGISTRY_TABLE} SET listed = TRUE WHERE folder_id = {self._p(1)}", (folder_id,)
                )

    def folder_ids(self) -> list[str]:
        rows = self.warehouse.fetchall(f"SELECT folder_id FROM {REGISTRY_TABLE} ORDER BY path, folder_id")
        return [str(row[0]) for row in rows]

    def count(self) -> int:
        return int(self.warehouse.fetchall(f"SELECT count(*) FROM {REGISTRY_TABLE}")[0][0])
