"""A local folder tree as a source.

Changes are found by the files' change time (``st_ctime``), which every create, copy,
rename, move or write advances, and which nobody can set back. The cursor is a small JSON
document: the newest change time handled, plus the files already handled at exactly that
time (several files can share a timestamp), and the digest of the folder mapping they were
handled under. A tick reports at most ``Budget.max_files`` files and the rest on the next
tick; a file written in the last ``settle_seconds`` waits for a later tick, so that no
half-written file is imported. A file gone is one reported before (``SourceState``) that the
tree no longer holds. An edited folder mapping can change what every file gives (its table,
key, sheet, prefer), so a changed digest asks for one full sync.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from pgdatahub_dagster.engine.errors import FileImportError
from pgdatahub_dagster.engine.read import is_supported
from pgdatahub_dagster.engine.sources.base import (
    Budget,
    Changes,
    FileRefusedError,
    LocalCopy,
    Source,
    SourceFile,
    SourceState,
    SourceUnavailableError,
)

_CHUNK_BYTES = 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FileChangedWhileReading(FileImportError):
    """The file was being written while it was copied; its next change brings it back."""


class LocalFileState(NamedTuple):
    """A file as the folder sensor sees it: its change time orders discoveries. A tuple, not
    a ``SourceFile``: an idle tick looks at every file of the tree and reports none."""

    file_id: str
    changed_ns: int
    modified_ns: int

    @property
    def file(self) -> SourceFile:
        modified_at = _EPOCH + timedelta(microseconds=self.modified_ns // 1000)
        # The change time: every write, copy, rename and move advances it, and nobody can set
        # it back, so a file restored to earlier content still gets a new version.
        return SourceFile(self.file_id, self.file_id, str(self.changed_ns), modified_at)


@dataclass
class LocalFolderCursor:
    changed_ns: int = 0
    handled_at_changed_ns: list[str] = field(default_factory=list)
    #: The digest of the folder mapping the files were handled under (``FolderMapping.digest``).
    mapping: str | None = None

    @classmethod
    def from_json(cls, text: str | None) -> LocalFolderCursor:
        return cls(**json.loads(text)) if text else cls()

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def is_unhandled(self, state: LocalFileState) -> bool:
        if state.changed_ns != self.changed_ns:
            return state.changed_ns > self.changed_ns
        return state.file_id not in self.handled_at_changed_ns

    def advance(self, state: LocalFileState) -> None:
        if state.changed_ns != self.changed_ns:
            self.changed_ns, self.handled_at_changed_ns = state.changed_ns, []
        self.handled_at_changed_ns.append(state.file_id)


class LocalFolderSource(Source):
    name = "local"

    def __init__(self, root: Path, state: SourceState | None = None, settle_seconds: float = 2.0) -> None:
        """``state`` is needed to follow changes only; an import alone does without."""
        self.root = root
        self.root_name = root.resolve().name
        self.state = state
        self.settle_seconds = settle_seconds

    def _state(self, path: Path) -> LocalFileState:
        stat = path.stat()
        return LocalFileState(path.relative_to(self.root).as_posix(), stat.st_ctime_ns, stat.st_mtime_ns)

    def check_available(self) -> None:
        if not self.root.is_dir():
            raise SourceUnavailableError(
                f"the source folder {self.root} does not exist or is not a folder "
                "(a typo in PGDATAHUB_SOURCE_DIR, or an unmounted share); nothing was imported or deleted"
            )

    def _walk(self) -> Iterator[tuple[tuple[str, ...], list[os.DirEntry[str]]]]:
        """Every folder, hidden ones skipped, as its parts below the root and its supported
        files sorted by name; top-down and sorted, as ``os.walk`` would give them (symlinked
        folders not entered, unreadable ones skipped). ``os.scandir`` with the entries' own
        types: no ``stat`` per file and no ``pathlib`` at all, which made the walk of 5,000
        folders most of the code location's own load time, and 2.7 of the 10.5 s an idle
        tick over 100,000 files took under the profiler (docs/benchmarks.md, "Sensor ticks")."""
        self.check_available()
        pending: list[tuple[str, tuple[str, ...]]] = [(str(self.root), ())]
        while pending:
            directory, parts = pending.pop()
            folders, files = [], []
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            is_folder = entry.is_dir()
                        except OSError:
                            is_folder = False
                        if not is_folder:
                            if is_supported(entry.name):
                                files.append(entry)
                        elif not entry.name.startswith(".") and not entry.is_symlink():
                            folders.append(entry.name)
            except OSError:
                continue  # unreadable or removed meanwhile, as os.walk skips it
            yield parts, sorted(files, key=lambda entry: entry.name)
            pending.extend(
                (os.path.join(directory, name), (*parts, name)) for name in sorted(folders, reverse=True)
            )

    def scan(self) -> Iterator[LocalFileState]:
        """Every supported file with its change times, hidden folders skipped: one ``stat``
        a file (the entry's, which follows a link as ``Path.stat`` does)."""
        for parts, entries in self._walk():
            prefix = "".join(f"{part}/" for part in parts)
            for entry in entries:
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # removed between listing and stat
                yield LocalFileState(prefix + entry.name, stat.st_ctime_ns, stat.st_mtime_ns)

    def list_files(self) -> Iterator[SourceFile]:
        return (state.file for state in self.scan())

    def folders(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """The folders that hold supported files."""
        for parts, entries in self._walk():
            if entries:
                yield self.root_name, parts

    def get_file(self, file_id: str) -> SourceFile:
        """The file the listing reports as ``file_id``. Its path is checked as the walk
        would have found it (no ``..``, no hidden or linked folder on the way), not by where
        it resolves to: a linked file the listing reports is a file of the source, wherever
        its link points, and a full sync imports it, so a run of its partition does too."""
        self.check_available()
        parts = file_id.split("/")
        directory = self.root
        for part in parts[:-1]:
            directory = directory / part
            if part in ("", ".", "..") or part.startswith(".") or directory.is_symlink():
                raise FileRefusedError(
                    f"{file_id}: not a file of the source folder {self.root} "
                    "(its path leaves the tree, or goes through a hidden or linked folder the listing skips)"
                )
        path = self.root / file_id
        if parts[-1] in ("", ".", "..") or not is_supported(parts[-1]):
            raise FileRefusedError(f"{file_id}: not a spreadsheet of the source folder {self.root}")
        if not path.is_file():
            raise FileNotFoundError(f"{file_id}: the file no longer exists under {self.root}")
        return self._state(path).file

    @contextmanager
    def fetch(self, file: SourceFile) -> Iterator[LocalCopy]:
        """A private snapshot of the file, hashed while it is copied, so that the bytes
        hashed are the bytes loaded. A file written to meanwhile fails this time; the write
        changes it again, so it is imported at its next change, never torn."""
        path = self.root / file.file_id
        digest = hashlib.sha256()
        handle, name = tempfile.mkstemp(prefix="pgdatahub-local-", suffix=path.suffix.lower())
        try:
            with path.open("rb") as source, os.fdopen(handle, "wb") as target:
                before = os.fstat(source.fileno())
                while chunk := source.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    target.write(chunk)
            after = path.stat()
            if _identity(before) != _identity(after) or after.st_size != os.stat(name).st_size:
                raise FileChangedWhileReading(
                    file.path, "the file changed while it was being read; it is imported at its next change"
                )
            yield LocalCopy(Path(name), digest.hexdigest())
        finally:
            os.unlink(name)

    def root_name_for(self, file: SourceFile) -> str:
        return self.root_name

    def changes(self, cursor: str | None, budget: Budget) -> Changes:
        if self.state is None:
            raise TypeError("LocalFolderSource.changes needs the SourceState of the files reported")
        # An unmounted share must not read as "every file was deleted": this raises first.
        states = list(self.scan())
        position = LocalFolderCursor.from_json(cursor)
        digest = self.state.mapping().digest
        log = []
        # None on the very first tick: every file is new then anyway.
        full_sync = position.mapping is not None and position.mapping != digest
        if full_sync:
            log.append("MAPPING CHANGED: a full sync applies it to every file")
        position.mapping = digest
        present = {state.file_id for state in states}
        removed = {file_id: file_id for file_id in sorted(self.state.known_file_ids() - present)}
        settled_before_ns = time.time_ns() - int(self.settle_seconds * 1e9)
        pending = sorted(
            (state for state in states if position.is_unhandled(state)),
            key=lambda state: (state.changed_ns, state.file_id),
        )
        found: list[SourceFile] = []
        for index, state in enumerate(pending):
            if max(state.changed_ns, state.modified_ns) > settled_before_ns:
                # Handling files in change-time order means everything after this one is
                # newer still: all of it waits for the next tick.
                waiting = len(pending) - index - 1
                log.append(f"SKIPPED {state.file_id} and {waiting} newer: still being written")
                break
            if index == budget.max_files:  # every earlier file was reported
                log.append(
                    f"SKIPPED {len(pending) - index} files: over {budget.max_files} runs this tick, next tick"
                )
                break
            found.append(state.file)
            position.advance(state)
        return Changes(found, removed, position.to_json(), log, full_sync)


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written to or replaced by another."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
