"""The source interface: the whole life of a source (local folders, Google Drive, …).

A source lists its files, fetches one, and finds what changed since a cursor (``changes``).
A file's identity is ``SourceFile.file_id``, its version ``SourceFile.version``. The cursor
is a small JSON document the caller stores between ticks (Dagster: the sensor's cursor);
anything larger a source keeps behind ``SourceState`` (Drive: its folder registry, tables in
the warehouse). Nothing here knows Dagster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, ClassVar

from pgdatahub_dagster.engine.errors import PgDataHubError

if TYPE_CHECKING:
    from pgdatahub_dagster.engine.mapping import FolderMapping
    from pgdatahub_dagster.engine.warehouse import Warehouse


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


class FileRefusedError(FileNotFoundError):
    """A file id the source's listing can never give (a path out of the tree, through a
    hidden or linked folder): no file of the source, so no import can be asked of it."""


class SourceUnavailableError(PgDataHubError):
    """The source itself cannot be read (a missing or unmounted folder): a system fault,
    never a reason to take its files for deleted."""


@dataclass(frozen=True)
class Budget:
    """What one sensor tick allows ``Source.changes``."""

    #: New or changed files one tick reports (each costs a run); the rest wait for the next
    #: tick. A source whose change log cannot stop part-way (Drive) may report more.
    max_files: int
    #: Seconds of work (API calls, listing) one tick may take; Dagster ends a tick at 60.
    seconds: float


@dataclass
class Changes:
    """What one tick found since the cursor it started from."""

    #: New or changed files, in the order to import them. Each one's ``version`` is new at
    #: every report, so the run key ``file_id:version`` is never one used before.
    found: list[SourceFile]
    #: Files that left the source since they were last reported: file id → their last path.
    removed: dict[str, str]
    #: The cursor the next tick starts from (small JSON); a tick that fails keeps the old one.
    cursor: str
    #: Lines for the tick's log: what was walked, skipped, or why nothing was.
    log: list[str] = field(default_factory=list)
    #: The source asks for one full sync (every file read again, ``on_delete`` for the gone):
    #: locally, after the folder mapping changed.
    full_sync: bool = False


class SourceState(ABC):
    """What a source keeps between ticks besides its cursor, given by the caller.

    Dagster keeps the files reported (the partitions) and opens the warehouse; the engine
    never needs to know how."""

    @abstractmethod
    def known_file_ids(self) -> set[str]:
        """The files reported found and not reported removed since."""

    @abstractmethod
    def warehouse(self) -> Warehouse:
        """An open warehouse for the source's own tables (Drive's folder registry), opened
        at the first call and kept for the rest of the tick or run. A source that keeps
        nothing there never calls it, so its sensor never waits for a busy warehouse."""

    @abstractmethod
    def mapping(self) -> FolderMapping:
        """The folder mapping the files are imported under."""


class Source(ABC):
    """A tree of folders holding spreadsheets."""

    #: The source's name: the ledger's ``source`` column, and the stem of its Dagster names
    #: (``local`` → ``local_spreadsheets``, ``import_local_files``, ``local_files``).
    name: ClassVar[str]

    @abstractmethod
    def list_files(self) -> Iterator[SourceFile]:
        """Every supported spreadsheet in the tree."""

    @abstractmethod
    def get_file(self, file_id: str) -> SourceFile:
        """The current state of one file; raises ``FileNotFoundError`` when it is gone, and
        ``FileRefusedError`` for an id the source's listing never gives."""

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

    @abstractmethod
    def changes(self, cursor: str | None, budget: Budget) -> Changes:
        """What is new, changed or gone since ``cursor`` (``None``: the first tick, when every
        file is new). Raises ``SourceUnavailableError`` when the source cannot be read at all:
        then nothing counts as deleted, and the next tick starts from the same cursor.
        Evaluated twice from the same cursor, it reports the same changes again."""
