"""Google Drive as a source: its changes come from ``DriveScanner``, its private state (the
folder registry) lives in the warehouse."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pgdatahub_dagster.engine.sources.base import (
    Budget,
    Changes,
    LocalCopy,
    Source,
    SourceFile,
    SourceUnavailableError,
)
from pgdatahub_dagster.engine.sources.drive.client import DriveClient, DriveError, DriveItem
from pgdatahub_dagster.engine.sources.drive.registry import FolderRegistry
from pgdatahub_dagster.engine.sources.drive.scanner import (
    FOLDERS_PER_QUERY,
    DriveScanner,
    ScanState,
    spreadsheet_content,
)


class DriveSource(Source):
    name = "drive"

    def __init__(
        self,
        client: DriveClient,
        registry: FolderRegistry,
        root_ids: Sequence[str] = (),
        tick_seconds: float | None = None,
    ) -> None:
        """``root_ids``: the watched folders, needed to follow changes only (an import of
        files already registered does without); ``tick_seconds`` overrides the sensor's
        ``Budget.seconds`` for Drive."""
        self.client = client
        self.registry = registry
        self.root_ids = list(root_ids)
        self.tick_seconds = tick_seconds
        self._root_names: dict[str, str] = {}
        #: The item whose bytes each file met so far imports (a shortcut's target), so that
        #: fetching it asks Drive nothing more.
        self._content: dict[str, DriveItem] = {}

    def _source_file(self, item: DriveItem, path: str, content: DriveItem) -> SourceFile:
        self._content[item.id] = content
        return SourceFile(item.id, path, content.revision, content.modified_at)

    def get_file(self, file_id: str) -> SourceFile:
        item = self.client.get(file_id)
        if item.trashed:
            raise FileNotFoundError(f"{item.name}: the file is in the Drive trash")
        folder = self.registry.folder(item.parent_id) if item.parent_id else None
        path = self.registry.file_path(item)
        content = spreadsheet_content(self.client, item) if folder is not None else None
        if folder is None or path is None or content is None:
            raise FileNotFoundError(f"{item.name}: no longer a spreadsheet inside the watched Drive folders")
        self._root_names[file_id] = self.registry.root_name(folder[0])
        return self._source_file(item, path, content)

    def list_files(self) -> Iterator[SourceFile]:
        """Every spreadsheet of the registered tree, listed afresh."""
        for drive_id, folders in self.registry.drives():
            for start in range(0, len(folders), FOLDERS_PER_QUERY):
                for item in self.client.list_children(folders[start : start + FOLDERS_PER_QUERY], drive_id):
                    folder = self.registry.folder(item.parent_id) if item.parent_id else None
                    path = self.registry.file_path(item)
                    content = spreadsheet_content(self.client, item) if path is not None else None
                    if folder is not None and path is not None and content is not None:
                        self._root_names[item.id] = self.registry.root_name(folder[0])
                        yield self._source_file(item, path, content)

    def folders(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every watched folder, as the registry knows them (whether it holds spreadsheets
        would take a request per folder to tell)."""
        for root_name, path in self.registry.folder_paths():
            yield root_name, tuple(path.split("/")) if path else ()

    @contextmanager
    def fetch(self, file: SourceFile) -> Iterator[LocalCopy]:
        item = self._content.get(file.file_id)
        if item is None:
            self.get_file(file.file_id)
            item = self._content[file.file_id]
        # The reader picks the format by extension: exported Sheets are xlsx.
        suffix = ".xlsx" if item.is_native_sheet else PurePosixPath(item.name).suffix.lower()
        handle, name = tempfile.mkstemp(prefix="pgdatahub-drive-", suffix=suffix)
        try:
            with os.fdopen(handle, "wb") as target:
                sha256 = self.client.download(item, target, file.path)
            yield LocalCopy(Path(name), sha256)
        finally:
            os.unlink(name)

    def root_name_for(self, file: SourceFile) -> str:
        if file.file_id not in self._root_names:
            self.get_file(file.file_id)
        return self._root_names[file.file_id]

    def changes(self, cursor: str | None, budget: Budget) -> Changes:
        """One scan from the cursor (``ScanState``): the Changes API page tokens, whether a walk
        of the tree is still going on (the registry knows which folders are left), and the
        tick count. A scan reports every change it read, whatever ``budget.max_files``: the
        change log moves on a page at a time."""
        state = ScanState.from_json(cursor)
        seconds = budget.seconds if self.tick_seconds is None else self.tick_seconds
        scanner = DriveScanner(self.client, self.registry, self.root_ids, budget_seconds=seconds)
        try:
            result = scanner.scan(state)
        except DriveError as error:
            # Drive failing after every retry: the tick changed nothing and is tried again.
            raise SourceUnavailableError(str(error)) from error
        log = list(result.log)
        if result.ignored:
            log.append(f"SKIPPED {result.ignored} changes outside the watched folders or not spreadsheets")
        return Changes(list(result.found.values()), dict(result.removed), result.state.to_json(), log)
