"""The source interface shared by local folders and Google Drive."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class SourceFile:
    """One spreadsheet in a source.

    ``file_id`` is the stable identity (a Drive file id; locally the relative path), and
    ``version`` changes whenever the content may have changed (Drive's md5 or version,
    locally size and modification time); together they make a run key. ``path`` is
    relative to the root folder the file lives under.
    """

    file_id: str
    path: str
    version: str

    @property
    def folder(self) -> tuple[str, ...]:
        return PurePosixPath(self.path).parent.parts

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class LocalCopy:
    """A file's content on local disk, with its sha256 (computed while it was copied,
    where the source copies)."""

    path: Path
    sha256: str


class Source(ABC):
    """A tree of folders holding spreadsheets."""

    #: Short name used in partition and asset names: ``local`` or ``drive``.
    kind: str

    @abstractmethod
    def list_files(self) -> Iterator[SourceFile]:
        """Every supported spreadsheet in the tree."""

    @abstractmethod
    def get_file(self, file_id: str) -> SourceFile:
        """The current state of one file; raises ``FileNotFoundError`` when it is gone."""

    @abstractmethod
    def fetch(self, file: SourceFile) -> AbstractContextManager[LocalCopy]:
        """The file's content on local disk for the duration of the context."""

    @abstractmethod
    def root_name_for(self, file: SourceFile) -> str:
        """The name of the root folder the file is under: files directly in a root load
        into a table of this name."""
