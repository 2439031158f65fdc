"""Google Drive as a Source for the importer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pgdatahub_dagster.engine.sources.base import LocalCopy, Source, SourceFile
from pgdatahub_dagster.engine.sources.drive.client import DriveClient, DriveItem
from pgdatahub_dagster.engine.sources.drive.registry import FolderRegistry
from pgdatahub_dagster.engine.sources.drive.scanner import is_spreadsheet


class DriveSource(Source):
    kind = "drive"

    def __init__(self, client: DriveClient, registry: FolderRegistry) -> None:
        self.client = client
        self.registry = registry
        self._root_names: dict[str, str] = {}

    def _content_item(self, item: DriveItem) -> DriveItem:
        """Shortcuts are followed to the file they point at."""
        return (
            self.client.get(item.shortcut_target_id) if item.is_shortcut and item.shortcut_target_id else item
        )

    def get_file(self, file_id: str) -> SourceFile:
        item = self.client.get(file_id)
        if item.trashed:
            raise FileNotFoundError(f"{item.name}: the file is in the Drive trash")
        folder = self.registry.folder(item.parent_id) if item.parent_id else None
        path = self.registry.file_path(item)
        if folder is None or path is None or not is_spreadsheet(item):
            raise FileNotFoundError(f"{item.name}: no longer a spreadsheet inside the watched Drive folders")
        self._root_names[file_id] = self.registry.root_name(folder[0])
        return item.as_source_file(path, self._content_item(item))

    def list_files(self) -> Iterator[SourceFile]:
        """Every spreadsheet of the registered tree, listed afresh."""
        pending = self.registry.folder_ids()
        while pending:
            batch, pending = pending[:20], pending[20:]
            for item in self.client.list_children(batch):
                if not item.is_folder and is_spreadsheet(item):
                    path = self.registry.file_path(item)
                    if path is not None:
                        yield item.as_source_file(path)

    def folders(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Every watched folder, as the registry knows them (whether it holds spreadsheets
        would take a request per folder to tell)."""
        for root_name, path in self.registry.folder_paths():
            yield root_name, tuple(path.split("/")) if path else ()

    @contextmanager
    def fetch(self, file: SourceFile) -> Iterator[LocalCopy]:
        item = self._content_item(self.client.get(file.file_id))
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
