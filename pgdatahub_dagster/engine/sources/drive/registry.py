"""What the Drive sensor knows of the watched tree, kept in the warehouse.

``drive_folders`` maps folder ids to paths below their root (Drive tells a file's parent
folder id, not its path), and so files to tables through the folder mapping; it also
remembers which folders the walk of the tree has listed, so a walk too large for one sensor
tick continues on the next one, even after a restart.

``drive_files`` holds every spreadsheet the sensor has reported, with the path and content
fingerprint it reported: Drive reports a change for a folder renamed, moved or removed, not
for the files inside it, so this is where the scanner finds them. A row stays (``present``
false) after its file left the tree, so a file coming back is recognised.

The scanner writes both inside one transaction per tick (so a tick that fails leaves them as
they were); the mutating methods here expect the caller to hold it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.sources.drive.client import DriveItem
from pgdatahub_dagster.engine.warehouse import Warehouse
from pgdatahub_dagster.engine.warehouse.base import (
    DRIVE_FILES_TABLE,
    DRIVE_FOLDERS_TABLE,
    DRIVE_REPLAY_TABLE,
    REGISTRY_TABLE,
)

_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {DRIVE_FOLDERS_TABLE} (
    folder_id TEXT PRIMARY KEY,
    parent_id TEXT,
    root_id TEXT NOT NULL,
    drive_id TEXT,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    listed BOOLEAN NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {DRIVE_FILES_TABLE} (
    file_id TEXT PRIMARY KEY,
    parent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    modified_time TEXT,
    target_id TEXT,
    present BOOLEAN NOT NULL,
    walked BOOLEAN NOT NULL,
    reported INTEGER NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {DRIVE_REPLAY_TABLE} (
    slot INTEGER PRIMARY KEY,
    start_state TEXT NOT NULL,
    result TEXT NOT NULL
)""",
)
_FILE_COLUMNS = "file_id, parent_id, name, path, fingerprint, modified_time, target_id, present, reported"
# Parent ids per query: few queries for large folders, and a statement every database takes.
_IDS_PER_QUERY = 200


def child_path(parent_path: str, name: str) -> str:
    """The path of ``name`` inside the folder at ``parent_path`` ("" for a root); a "/"
    inside a Drive name must not read as a sub-folder."""
    segment = name.replace("/", "_")
    return f"{parent_path}/{segment}" if parent_path else segment


@dataclass(frozen=True)
class IndexedFile:
    """A spreadsheet as the sensor last saw it."""

    file_id: str
    parent_id: str
    name: str
    path: str
    #: What changes when the content (or its modification time) changes; empty when a
    #: shortcut's target is gone, so there is nothing to import.
    fingerprint: str
    modified_time: str | None
    #: The file a shortcut points at; None for other files.
    target_id: str | None
    #: Inside the watched tree.
    present: bool
    #: How many times the sensor has reported this file: a run key part that is new at
    #: every report, whatever the file's own version.
    reported: int

    @property
    def live(self) -> bool:
        """In the tree, with content to import."""
        return self.present and bool(self.fingerprint)


class FolderRegistry:
    def __init__(self, warehouse: Warehouse) -> None:
        if not warehouse.has_indexes:
            # Its writes rely on unique keys (INSERT … ON CONFLICT), which DuckLake lacks.
            raise ConfigError(
                f"{warehouse.display_url}: Google Drive needs its folder registry in a warehouse with "
                "unique indexes; DuckLake is not supported for Drive yet: use DuckDB or PostgreSQL"
            )
        self.warehouse = warehouse
        with warehouse.transaction():
            warehouse.lock(DRIVE_FOLDERS_TABLE)
            if warehouse.table_exists(REGISTRY_TABLE):
                warehouse.execute(f"DROP TABLE {REGISTRY_TABLE}")
            for statement in _DDL:
                warehouse.execute(statement)

    def _p(self, count: int) -> str:
        return ", ".join([self.warehouse.placeholder] * count)

    # -- folders -----------------------------------------------------------------------------

    def folder_paths(self) -> list[tuple[str, str]]:
        """``(root name, path)`` of every watched folder."""
        rows = self.warehouse.fetchall(
            f"SELECT root.name, folder.path FROM {DRIVE_FOLDERS_TABLE} folder "
            f"JOIN {DRIVE_FOLDERS_TABLE} root ON root.folder_id = folder.root_id"
        )
        return [(str(name), str(path)) for name, path in rows]

    def folder(self, folder_id: str) -> tuple[str, str] | None:
        """``(root_id, path)`` of a watched folder; ``None`` when it is not watched."""
        rows = self.warehouse.fetchall(
            f"SELECT root_id, path FROM {DRIVE_FOLDERS_TABLE} WHERE folder_id = {self._p(1)}", (folder_id,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def root_name(self, root_id: str) -> str:
        rows = self.warehouse.fetchall(
            f"SELECT name FROM {DRIVE_FOLDERS_TABLE} WHERE folder_id = {self._p(1)}", (root_id,)
        )
        return str(rows[0][0]) if rows else root_id

    def file_path(self, item: DriveItem) -> str | None:
        """The path of a file below its root, or ``None`` when its folder is not watched."""
        if item.parent_id is None:
            return None
        folder = self.folder(item.parent_id)
        return None if folder is None else child_path(folder[1], item.name)

    def _write(
        self, folder_id: str, parent_id: str | None, root_id: str, name: str, path: str, listed: bool
    ) -> None:
        """A folder's row; it is in its root's shared drive (None: in no shared drive)."""
        drive = self.warehouse.fetchall(
            f"SELECT drive_id FROM {DRIVE_FOLDERS_TABLE} WHERE folder_id = {self._p(1)}", (root_id,)
        )
        self._write_row(folder_id, parent_id, root_id, drive[0][0] if drive else None, name, path, listed)

    def _write_row(
        self,
        folder_id: str,
        parent_id: str | None,
        root_id: str,
        drive_id: str | None,
        name: str,
        path: str,
        listed: bool,
    ) -> None:
        self.warehouse.execute(
            f"INSERT INTO {DRIVE_FOLDERS_TABLE} "
            "(folder_id, parent_id, root_id, drive_id, name, path, listed, updated_at) "
            f"VALUES ({self._p(8)}) ON CONFLICT (folder_id) DO UPDATE SET parent_id = excluded.parent_id, "
            "root_id = excluded.root_id, drive_id = excluded.drive_id, name = excluded.name, "
            "path = excluded.path, listed = excluded.listed, updated_at = excluded.updated_at",
            (folder_id, parent_id, root_id, drive_id, name, path, listed, datetime.now(UTC)),
        )

    def set_roots(self, roots: list[DriveItem]) -> None:
        """Start a full walk: forget every folder, register the roots as unlisted, and mark
        every file as not met yet (the walk's end tells which files are gone)."""
        self.warehouse.execute(f"DELETE FROM {DRIVE_FOLDERS_TABLE}")
        self.warehouse.execute(f"UPDATE {DRIVE_FILES_TABLE} SET walked = FALSE")
        for root in roots:
            self._write_row(root.id, None, root.id, root.drive_id, root.name, "", listed=False)

    def is_root(self, folder_id: str) -> bool:
        folder = self.folder(folder_id)
        return folder is not None and folder[0] == folder_id

    def upsert(self, item: DriveItem) -> str:
        """Register a folder found under a watched folder, or follow its rename or move.

        Returns ``"new"`` when it is new to the registry (its contents must be listed),
        ``"moved"`` when its path changed (every folder below follows), else ``"same"``.
        """
        assert item.parent_id is not None
        parent = self.folder(item.parent_id)
        assert parent is not None
        root_id, parent_path = parent
        path = child_path(parent_path, item.name)
        existing = self.folder(item.id)
        if existing is None:
            self._write(item.id, item.parent_id, root_id, item.name, path, listed=False)
            return "new"
        listed = bool(
            self.warehouse.fetchall(
                f"SELECT listed FROM {DRIVE_FOLDERS_TABLE} WHERE folder_id = {self._p(1)}", (item.id,)
            )[0][0]
        )
        self._write(item.id, item.parent_id, root_id, item.name, path, listed)
        if existing == (root_id, path):
            return "same"
        self._repath_descendants(item.id, root_id, path)
        return "moved"

    def rename_root(self, item: DriveItem) -> None:
        """A root's name (its table's name) may change; its contents are listed again, which
        brings back what a root trashed and restored holds."""
        self.warehouse.execute(
            f"UPDATE {DRIVE_FOLDERS_TABLE} SET name = {self._p(1)}, listed = FALSE "
            f"WHERE folder_id = {self._p(1)}",
            (item.name, item.id),
        )

    def _children(self, folder_id: str) -> list[tuple[str, str]]:
        rows = self.warehouse.fetchall(
            f"SELECT folder_id, name FROM {DRIVE_FOLDERS_TABLE} WHERE parent_id = {self._p(1)}", (folder_id,)
        )
        return [(str(child), str(name)) for child, name in rows]

    def _repath_descendants(self, folder_id: str, root_id: str, path: str) -> None:
        pending = [(folder_id, path)]
        while pending:
            parent_id, parent_path = pending.pop()
            for child_id, name in self._children(parent_id):
                path = child_path(parent_path, name)
                self.warehouse.execute(
                    f"UPDATE {DRIVE_FOLDERS_TABLE} SET root_id = {self._p(1)}, path = {self._p(1)} "
                    f"WHERE folder_id = {self._p(1)}",
                    (root_id, path, child_id),
                )
                pending.append((child_id, path))

    def subtree(self, folder_id: str) -> list[str]:
        """The folder and every registered folder below it."""
        found, pending = [], [folder_id]
        while pending:
            current = pending.pop()
            found.append(current)
            pending += [child for child, _ in self._children(current)]
        return found

    def remove(self, folder_ids: Sequence[str]) -> None:
        """Stop watching these folders (trashed, deleted or moved out)."""
        for folder_id in folder_ids:
            self.warehouse.execute(
                f"DELETE FROM {DRIVE_FOLDERS_TABLE} WHERE folder_id = {self._p(1)}", (folder_id,)
            )

    def unlisted(self, limit: int) -> tuple[str | None, list[str]]:
        """Up to ``limit`` folders not listed yet, all in one shared drive (or in none): the
        drive, and their ids."""
        first = self.warehouse.fetchall(
            f"SELECT drive_id FROM {DRIVE_FOLDERS_TABLE} WHERE NOT listed ORDER BY path, folder_id LIMIT 1"
        )
        if not first:
            return None, []
        drive_id = first[0][0]
        rows = self.warehouse.fetchall(
            f"SELECT folder_id FROM {DRIVE_FOLDERS_TABLE} WHERE NOT listed "
            f"AND drive_id IS NOT DISTINCT FROM {self._p(1)} ORDER BY path, folder_id LIMIT {int(limit)}",
            (drive_id,),
        )
        return drive_id, [str(row[0]) for row in rows]

    def drives(self) -> list[tuple[str | None, list[str]]]:
        """Every watched folder, by the shared drive it is in (None: in none)."""
        rows = self.warehouse.fetchall(
            f"SELECT drive_id, folder_id FROM {DRIVE_FOLDERS_TABLE} "
            "ORDER BY drive_id NULLS FIRST, path, folder_id"
        )
        by_drive: dict[str | None, list[str]] = {}
        for drive_id, folder_id in rows:
            by_drive.setdefault(drive_id, []).append(str(folder_id))
        return list(by_drive.items())

    def mark_listed(self, folder_ids: list[str]) -> None:
        for folder_id in folder_ids:
            self.warehouse.execute(
                f"UPDATE {DRIVE_FOLDERS_TABLE} SET listed = TRUE WHERE folder_id = {self._p(1)}", (folder_id,)
            )

    def count(self) -> int:
        return int(self.warehouse.fetchall(f"SELECT count(*) FROM {DRIVE_FOLDERS_TABLE}")[0][0])

    # -- the last tick -----------------------------------------------------------------------

    def hold_ticks(self) -> None:
        """No other tick's scan goes on until this transaction ends: a tick Dagster evaluates
        again while the first evaluation still runs (the daemon gave up on it at its 60 s
        limit, the code server did not) waits for it, then finds its report (``last_tick``)."""
        self.warehouse.lock(DRIVE_REPLAY_TABLE)

    def last_tick(self, start_state: str) -> str | None:
        """What the last tick reported, if it started from ``start_state``."""
        rows = self.warehouse.fetchall(
            f"SELECT result FROM {DRIVE_REPLAY_TABLE} WHERE slot = 1 AND start_state = {self._p(1)}",
            (start_state,),
        )
        return str(rows[0][0]) if rows else None

    def remember_tick(self, start_state: str, result: str) -> None:
        self.warehouse.execute(
            f"INSERT INTO {DRIVE_REPLAY_TABLE} (slot, start_state, result) VALUES (1, {self._p(2)}) "
            "ON CONFLICT (slot) DO UPDATE SET start_state = excluded.start_state, result = excluded.result",
            (start_state, result),
        )

    # -- files -------------------------------------------------------------------------------

    def _files(self, where: str, params: Sequence[object]) -> list[IndexedFile]:
        rows = self.warehouse.fetchall(
            f"SELECT {_FILE_COLUMNS} FROM {DRIVE_FILES_TABLE} WHERE {where} ORDER BY file_id", params
        )
        return [
            IndexedFile(
                file_id=str(row[0]),
                parent_id=str(row[1]),
                name=str(row[2]),
                path=str(row[3]),
                fingerprint=str(row[4]),
                modified_time=None if row[5] is None else str(row[5]),
                target_id=None if row[6] is None else str(row[6]),
                present=bool(row[7]),
                reported=int(row[8]),
            )
            for row in rows
        ]

    def indexed(self, file_id: str) -> IndexedFile | None:
        found = self._files(f"file_id = {self._p(1)}", (file_id,))
        return found[0] if found else None

    def indexed_many(self, file_ids: Sequence[str]) -> dict[str, IndexedFile | None]:
        """``indexed`` for many files at once."""
        found: dict[str, IndexedFile | None] = dict.fromkeys(file_ids)
        for start in range(0, len(file_ids), _IDS_PER_QUERY):
            batch = file_ids[start : start + _IDS_PER_QUERY]
            found.update(
                (file.file_id, file) for file in self._files(f"file_id IN ({self._p(len(batch))})", batch)
            )
        return found

    def files_in(self, folder_ids: Sequence[str]) -> list[IndexedFile]:
        """The files in the tree directly inside any of ``folder_ids``."""
        found: list[IndexedFile] = []
        for start in range(0, len(folder_ids), _IDS_PER_QUERY):
            batch = folder_ids[start : start + _IDS_PER_QUERY]
            found += self._files(f"present AND parent_id IN ({self._p(len(batch))})", batch)
        return found

    def shortcuts_to(self, target_id: str) -> list[IndexedFile]:
        """The shortcuts in the tree that point at ``target_id``."""
        return self._files(f"present AND target_id = {self._p(1)}", (target_id,))

    def not_walked(self) -> list[IndexedFile]:
        """Files in the tree that the walk now ending did not meet: they are gone."""
        return self._files("present AND NOT walked", ())

    def put(self, files: Sequence[IndexedFile]) -> None:
        """Record files' states (many rows per statement); a file written while the tree is
        walked has been met."""
        for start in range(0, len(files), _IDS_PER_QUERY):
            batch = files[start : start + _IDS_PER_QUERY]
            rows = ", ".join([f"({self._p(10)})"] * len(batch))
            params: list[object] = []
            for file in batch:
                params += [
                    file.file_id,
                    file.parent_id,
                    file.name,
                    file.path,
                    file.fingerprint,
                    file.modified_time,
                    file.target_id,
                    file.present,
                    file.reported,
                    True,
                ]
            self.warehouse.execute(
                f"INSERT INTO {DRIVE_FILES_TABLE} ({_FILE_COLUMNS}, walked) VALUES {rows} "
                "ON CONFLICT (file_id) DO UPDATE SET parent_id = excluded.parent_id, name = excluded.name, "
                "path = excluded.path, fingerprint = excluded.fingerprint, "
                "modified_time = excluded.modified_time, target_id = excluded.target_id, "
                "present = excluded.present, walked = excluded.walked, reported = excluded.reported",
                params,
            )
