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
from pgdatahub_dagster.engine.sources.drive.scanner import FOLDERS_PER_QUERY, spreadsheet_content


class DriveSource(Source):
    kind = "drive"

    def __init__(self, client: DriveClient, registry: FolderRegistry) -> None:
        self.client = client
        self.registry = registry
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
