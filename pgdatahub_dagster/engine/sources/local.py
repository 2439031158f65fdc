"""A local folder tree as a source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from pgdatahub_dagster.engine.dedup.fingerprint import sha256_of_file
from pgdatahub_dagster.engine.read import is_supported
from pgdatahub_dagster.engine.sources.base import LocalCopy, Source, SourceFile


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
        version = f"{stat.st_size}-{stat.st_mtime_ns}"
        return LocalFileState(SourceFile(relative, relative, version), stat.st_ctime_ns, stat.st_mtime_ns)

    def scan(self) -> Iterator[LocalFileState]:
        """Every supported file with its change times, hidden folders skipped."""
        for directory, folders, files in os.walk(self.root):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(files):
                if is_supported(name):
                    path = Path(directory, name)
                    try:
                        yield self._state(path)
                    except FileNotFoundError:
                        continue  # removed between listing and stat

    def list_files(self) -> Iterator[SourceFile]:
        return (state.file for state in self.scan())

    def get_file(self, file_id: str) -> SourceFile:
        path = self.root / file_id
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise FileNotFoundError(f"{file_id}: not a path inside the source folder {self.root}")
        if not path.is_file():
            raise FileNotFoundError(f"{file_id}: the file no longer exists under {self.root}")
        return self._state(path).file

    def fetch(self, file: SourceFile) -> AbstractContextManager[LocalCopy]:
        path = self.root / file.file_id
        return nullcontext(LocalCopy(path, sha256_of_file(path)))

    def root_name_for(self, file: SourceFile) -> str:
        return self.root_name
