"""A local folder tree as a source."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgdatahub_dagster.engine.errors import FileImportError
from pgdatahub_dagster.engine.read import is_supported
from pgdatahub_dagster.engine.sources.base import LocalCopy, Source, SourceFile, SourceUnavailableError

_CHUNK_BYTES = 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FileChangedWhileReading(FileImportError):
    """The file was being written while it was copied; its next change brings it back."""


@dataclass(frozen=True)
class LocalFileState:
    """A file as the folder sensor sees it: its change time orders discoveries."""

    file: SourceFile
    changed_ns: int
    modified_ns: int


class LocalFolderSource(Source):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_name = root.resolve().name

    def _state(self, path: Path) -> LocalFileState:
        stat = path.stat()
        relative = path.relative_to(self.root).as_posix()
        modified_at = _EPOCH + timedelta(microseconds=stat.st_mtime_ns // 1000)
        # The change time: every write, copy, rename and move advances it, and nobody can set
        # it back, so a file restored to earlier content still gets a new version.
        file = SourceFile(relative, relative, str(stat.st_ctime_ns), modified_at)
        return LocalFileState(file, stat.st_ctime_ns, stat.st_mtime_ns)

    def check_available(self) -> None:
        if not self.root.is_dir():
            raise SourceUnavailableError(
                f"the source folder {self.root} does not exist or is not a folder "
                "(a typo in PGDATAHUB_SOURCE_DIR, or an unmounted share); nothing was imported or deleted"
            )

    def _walk(self) -> Iterator[tuple[str, list[str]]]:
        """Every folder, hidden ones skipped, with the names of its supported files."""
        self.check_available()
        for directory, folders, files in os.walk(self.root):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            yield directory, sorted(name for name in files if is_supported(name))

    def scan(self) -> Iterator[LocalFileState]:
        """Every supported file with its change times, hidden folders skipped."""
        for directory, names in self._walk():
            for name in names:
                try:
                    yield self._state(Path(directory, name))
                except FileNotFoundError:
                    continue  # removed between listing and stat

    def list_files(self) -> Iterator[SourceFile]:
        return (state.file for state in self.scan())

    def folders(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """The folders that hold supported files."""
        for directory, names in self._walk():
            if names:
                yield self.root_name, Path(directory).relative_to(self.root).parts

    def get_file(self, file_id: str) -> SourceFile:
        self.check_available()
        path = self.root / file_id
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise FileNotFoundError(f"{file_id}: not a path inside the source folder {self.root}")
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


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written to or replaced by another."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
