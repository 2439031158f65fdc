"""The source interface shared by local folders and Google Drive."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from pgdatahub_dagster.engine.errors import PgDataHubError


@dataclass(frozen=True)
class SourceFile:
    """One spreadsheet in a source.

    ``file_id`` is the stable identity (a Drive file id; locally the relative path).
    ``version`` changes at every change of the file and never returns to an earlier value,
    even when the content does (Drive's version number, locally the change time), so
    together they make a run key that is never used twice for work that is needed.
    ``path`` is relative to the root folder the file lives under. ``modified_at`` ranks the
    files that hold the same row key (``prefer``).
    """

    file_id: str
    path: str
    version: str
    modified_at: datetime | None = None

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


class SourceUnavailableError(PgDataHubError):
    """The source itself cannot be read (a missing or unmounted folder): a system fault,
    never a reason to take its files for deleted."""


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
    def folders(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """The folders of the tree the folder mapping gives tables to: each as its root's
        name (``root_name_for``) and its path below the root (``SourceFile.folder``)."""

    @abstractmethod
    def root_name_for(self, file: SourceFile) -> str:
        """The name of the root folder the file is under: files directly in a root load
        into a table of this name."""
