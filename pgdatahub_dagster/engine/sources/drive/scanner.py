"""Finds new and changed spreadsheets in the watched Drive folders, tick by tick.

First run: take ``changes.getStartPageToken`` *before* walking the tree (so nothing that
changes during the walk is missed), then walk it with ``files.list``. A walk too large for
one tick continues on the next: the folder registry remembers which folders are listed.
Later ticks read ``changes.list`` from the stored token, page by page, keep only changes
inside the watched tree, and move to ``newStartPageToken`` only after the last page. A
rejected token falls back to a full walk, which the import ledger makes harmless.

The API calls of a tick grow with the number of changes, not with the size of the tree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pgdatahub_dagster.engine.read import is_supported
from pgdatahub_dagster.engine.sources.base import SourceFile
from pgdatahub_dagster.engine.sources.drive.client import (
    SHEET_MIME_TYPE,
    DriveClient,
    DriveItem,
    InvalidPageToken,
)
from pgdatahub_dagster.engine.sources.drive.registry import FolderRegistry

# Folders listed per files.list query ('a' in parents or 'b' in parents …): fewer calls
# for trees of many small folders, and a query Drive accepts.
_FOLDERS_PER_QUERY = 20


@dataclass(frozen=True)
class ScanState:
    """What a scan resumes from; stored as the sensor's cursor."""

    #: The changes page token to read next; None until a walk has started.
    page_token: str | None = None
    #: True while the initial (or fallback) walk of the tree is unfinished.
    walking: bool = False


@dataclass
class ScanResult:
    state: ScanState
    #: New or changed supported files, latest state per file id.
    found: dict[str, SourceFile] = field(default_factory=dict)
    #: Files trashed, deleted, or (now) outside the watched tree: (file id, name). Drive
    #: cannot tell "moved out" from "never in", so these are candidates: the caller knows
    #: which files it imported.
    removed: list[tuple[str, str]] = field(default_factory=list)
    #: Changes read that concern nothing watched: other folders, files that are no spreadsheets.
    ignored: int = 0
    changes_read: int = 0
    log: list[str] = field(default_factory=list)


def is_spreadsheet(item: DriveItem) -> bool:
    if item.is_native_sheet:
        return True
    if item.is_shortcut:
        return item.shortcut_target_mime_type == SHEET_MIME_TYPE or is_supported(item.name)
    return is_supported(item.name)


class DriveScanner:
    def __init__(
        self,
        client: DriveClient,
        registry: FolderRegistry,
        root_ids: list[str],
        budget_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.registry = registry
        self.root_ids = root_ids
        self.budget_seconds = budget_seconds
        self.clock = clock

    def scan(self, state: ScanState) -> ScanResult:
        deadline = self.clock() + self.budget_seconds
        result = ScanResult(state)
        if state.page_token is None:
            self._start_walk(result)
        if result.state.walking:
            self._walk(result, deadline)
            if result.state.walking:
                return result
        self._read_changes(result, deadline)
        # Folders that came into the tree with their contents (moved in, or created and
        # filled before we saw them) are listed like a walk.
        self._walk(result, deadline)
        return result

    def _start_walk(self, result: ScanResult) -> None:
        token = self.client.start_page_token()
        roots = [self.client.get(root_id) for root_id in self.root_ids]
        self.registry.set_roots(roots)
        result.state = ScanState(page_token=token, walking=True)
        result.log.append(f"walking the tree of {', '.join(root.name for root in roots)}")

    def _walk(self, result: ScanResult, deadline: float) -> None:
        while batch := self.registry.unlisted(_FOLDERS_PER_QUERY):
            for item in self.client.list_children(batch):
                self._see(item, result)
            self.registry.mark_listed(batch)
            # At least one batch per tick, so every tick makes progress.
            if self.clock() > deadline and self.registry.unlisted(1):
                result.log.append("walk continues next tick")
                return
        if result.state.walking:
            result.log.append(f"walk finished: {self.registry.count()} folders watched")
        result.state = replace(result.state, walking=False)

    def _see(self, item: DriveItem, result: ScanResult) -> None:
        """A file or folder now inside the watched tree."""
        if item.is_folder:
            self.registry.upsert(item)
            return
        if not is_spreadsheet(item):
            return
        path = self.registry.file_path(item)
        if path is not None:
            result.found[item.id] = item.as_source_file(path)

    def _read_changes(self, result: ScanResult, deadline: float) -> None:
        token = result.state.page_token
        assert token is not None
        while True:
            try:
                page = self.client.changes(token)
            except InvalidPageToken as error:
                result.log.append(f"{error}; walking the whole tree again (the ledger skips what is loaded)")
                self._start_walk(result)
                self._walk(result, deadline)
                return
            result.changes_read += len(page.changes)
            for change in page.changes:
                self._apply(change.file_id, change.removed, change.item, result)
            if page.next_page_token is None:
                # Only now, after the last page, is the new start token safe to keep.
                result.state = replace(result.state, page_token=page.new_start_page_token)
                return
            token = page.next_page_token
            result.state = replace(result.state, page_token=token)
            if self.clock() > deadline:
                result.log.append("more changes next tick")
                return

    def _apply(self, file_id: str, removed: bool, item: DriveItem | None, result: ScanResult) -> None:
        watched_folder = self.registry.folder(file_id)
        if removed or item is None or item.trashed:
            result.found.pop(file_id, None)
            if watched_folder is not None and not self.registry.is_root(file_id):
                self.registry.remove(file_id)
                result.log.append(f"folder {watched_folder[1] or file_id} left the tree")
            elif watched_folder is None:
                result.removed.append((file_id, item.name if item else file_id))
            return
        if item.is_folder:
            if self.registry.is_root(item.id):
                self.registry.rename_root(item)
            elif item.parent_id and self.registry.folder(item.parent_id) is not None:
                self.registry.upsert(item)
            elif watched_folder is not None:
                self.registry.remove(item.id)  # moved out of the watched tree
            else:
                result.ignored += 1
            return
        if item.parent_id and self.registry.folder(item.parent_id) is not None:
            if is_spreadsheet(item):
                self._see(item, result)
            else:
                result.ignored += 1
        elif is_spreadsheet(item):
            # Outside the tree now: if it was imported before, it has left the tree.
            result.found.pop(file_id, None)
            result.removed.append((file_id, item.name))
        else:
            result.ignored += 1
