"""Finds new, changed and removed spreadsheets in the watched Drive folders, tick by tick.

First run: take ``changes.getStartPageToken`` *before* walking the tree (so nothing that
changes during the walk is missed), then walk it with ``files.list``. A walk too large for
one tick continues on the next: the folder registry remembers which folders are listed.
Later ticks read ``changes.list`` from the stored token, page by page, keep only changes
inside the watched tree, and move to ``newStartPageToken`` only after the last page. A
rejected token falls back to a full walk; its end tells which files left meanwhile.

Every change is applied to the registry's file index (``registry.py``), and a tick reports
the difference between the index before and after it: a file's last state within the tick
wins (moved out and back in is no change at all), and a folder renamed, moved in, moved out,
trashed, deleted or unshared carries every file below it along, although Drive reports only
the folder. The whole tick is one warehouse transaction: a tick that fails changes nothing. A
tick in which Drive fails after every retry, once the tick has listed folders or read pages of
changes, ends there as at its deadline and keeps what it listed (the next tick goes on from it);
Drive failing at a tick's first call fails the tick. A tick
evaluated again from the same cursor (Dagster retries a tick whose result it could not keep)
reports what the first evaluation reported, which the registry remembers: the changes it read
are in the index already, and would otherwise report nothing.

The API calls of a tick grow with the number of changes, not with the size of the tree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from pgdatahub_dagster.engine.read import is_supported
from pgdatahub_dagster.engine.sources.base import SourceFile
from pgdatahub_dagster.engine.sources.drive.client import (
    FOLDER_MIME_TYPE,
    GOOGLE_APPS_PREFIX,
    SHEET_MIME_TYPE,
    DriveClient,
    DriveError,
    DriveItem,
    InvalidPageToken,
)
from pgdatahub_dagster.engine.sources.drive.registry import FolderRegistry, IndexedFile, child_path

# Folders listed per files.list query ('a' in parents or 'b' in parents …): fewer calls
# for trees of many small folders, and a query Drive accepts.
FOLDERS_PER_QUERY = 20


@dataclass(frozen=True)
class ScanState:
    """What a scan resumes from; stored as the sensor's cursor."""

    #: The token to read the caller's own change log from next; None until a walk started.
    page_token: str | None = None
    #: True while the initial (or fallback) walk of the tree is unfinished.
    walking: bool = False
    #: The token of each shared drive's change log that holds a watched root: a member's
    #: changes to the drive's files are recorded there only, never in its own log.
    drive_tokens: dict[str, str] = field(default_factory=dict)
    #: Ticks so far: every tick's cursor differs from the one before, so a tick evaluated
    #: again is told apart from the next one.
    tick: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ScanState:
        """The state a cursor holds; ``None`` (no cursor yet): a first scan."""
        return cls(**json.loads(text)) if text else cls()


@dataclass
class ScanResult:
    """What a tick found; ``to_json``/``from_json`` keep it for a tick evaluated again."""

    state: ScanState
    #: New or changed spreadsheets (content, name or place), by file id. Each one's
    #: ``version`` is new at every report, so its run key is never one used before.
    found: dict[str, SourceFile] = field(default_factory=dict)
    #: Spreadsheets that left the tree since the last report (trashed, deleted, moved or
    #: unshared, themselves or a folder above them): file id → the path last reported.
    removed: dict[str, str] = field(default_factory=dict)
    #: Changes read that concern nothing watched: other folders, files that are no spreadsheets.
    ignored: int = 0
    changes_read: int = 0
    log: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        found = {
            file_id: [file.path, file.version, file.modified_at.isoformat() if file.modified_at else None]
            for file_id, file in self.found.items()
        }
        return json.dumps(
            {
                "state": asdict(self.state),
                "found": found,
                "removed": self.removed,
                "ignored": self.ignored,
                "changes_read": self.changes_read,
                "log": self.log,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ScanResult:
        data = json.loads(text)
        found = {
            file_id: SourceFile(file_id, path, version, _parse_time(modified))
            for file_id, (path, version, modified) in data["found"].items()
        }
        return cls(
            ScanState(**data["state"]),
            found,
            data["removed"],
            data["ignored"],
            data["changes_read"],
            [*data["log"], "the same tick evaluated again: the same report"],
        )


def _is_spreadsheet_type(name: str, mime_type: str) -> bool:
    if mime_type == SHEET_MIME_TYPE:
        return True
    # Docs, Slides, Forms … cannot be downloaded, whatever their name says.
    return not mime_type.startswith(GOOGLE_APPS_PREFIX) and is_supported(name)


def is_spreadsheet(item: DriveItem) -> bool:
    """Whether the item may be a spreadsheet, by its own metadata (a shortcut by what it
    says of its target): its mimeType first, then its name's extension."""
    if item.is_shortcut:
        target_type = item.shortcut_target_mime_type or ""
        return target_type != FOLDER_MIME_TYPE and _is_spreadsheet_type(item.name, target_type)
    return not item.is_folder and _is_spreadsheet_type(item.name, item.mime_type)


def spreadsheet_content(client: DriveClient, item: DriveItem) -> DriveItem | None:
    """The item whose bytes a spreadsheet's import reads: itself, or a shortcut's target
    (which must exist, be out of the trash and be a spreadsheet itself); None when there is
    nothing to import. Folder shortcuts are not followed."""
    if not is_spreadsheet(item):
        return None
    if not item.is_shortcut:
        return item
    if item.shortcut_target_id is None:
        return None
    try:
        target = client.get(item.shortcut_target_id)
    except FileNotFoundError:
        return None
    if target.trashed or not _is_spreadsheet_type(target.name, target.mime_type):
        return None
    return target


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


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
        #: This tick's files as they were before it touched them (None: never seen).
        self._before: dict[str, IndexedFile | None] = {}
        #: The index rows read or written this tick (the scanner is their only writer), and
        #: those written but not stored yet: stored in bulk before the index is queried.
        self._rows: dict[str, IndexedFile | None] = {}
        self._unstored: dict[str, IndexedFile] = {}
        #: Whether this tick has listed a batch of folders or read a page of changes.
        self._progressed = False

    def scan(self, state: ScanState) -> ScanResult:
        deadline = self.clock() + self.budget_seconds
        result = ScanResult(replace(state, tick=state.tick + 1))
        self._before, self._rows, self._unstored = {}, {}, {}
        self._progressed = False
        start = state.to_json()
        with self.registry.warehouse.transaction():
            self.registry.hold_ticks()
            if (again := self.registry.last_tick(start)) is not None:
                return ScanResult.from_json(again)
            try:
                # An empty registry (a new warehouse, or one upgraded from the registry
                # without a file index) cannot follow changes: walk first.
                if state.page_token is None or self.registry.count() == 0:
                    self._start_walk(result)
                if result.state.walking:
                    self._walk(result, deadline)
                if not result.state.walking:
                    self._read_changes(result, deadline)
                    # Folders that came into the tree with their contents (moved in, or
                    # created and filled before we saw them) are listed like a walk.
                    self._walk(result, deadline)
            except DriveError as error:
                # Drive failing after every retry, once this tick has listed folders or read
                # pages: the tick ends there and keeps them (the cursor and the registry
                # stand where the last whole listing or page left them), as at its deadline.
                if not self._progressed or isinstance(error, InvalidPageToken):
                    raise
                result.log.append(f"{error}; the listing done so far is kept, the next tick goes on")
            self._report(result)
            self.registry.remember_tick(start, result.to_json())
        return result

    # -- the walk ----------------------------------------------------------------------------

    def _start_walk(self, result: ScanResult) -> None:
        token = self.client.start_page_token()
        roots = [self.client.get(root_id) for root_id in self.root_ids]
        drive_tokens = {}
        for drive_id in sorted({root.drive_id for root in roots if root.drive_id}):
            drive_token = self.client.drive_start_page_token(drive_id)
            if drive_token is None:
                result.log.append(f"shared drive {drive_id}: not a member, following its files in own log")
            else:
                drive_tokens[drive_id] = drive_token
        self.registry.set_roots(roots)
        result.state = ScanState(
            page_token=token, walking=True, drive_tokens=drive_tokens, tick=result.state.tick
        )
        result.log.append(f"walking the tree of {', '.join(root.name for root in roots)}")

    def _walk(self, result: ScanResult, deadline: float) -> None:
        while (batch := self.registry.unlisted(FOLDERS_PER_QUERY))[1]:
            drive_id, folder_ids = batch
            items = self.client.list_children(folder_ids, drive_id)
            # One query for the index rows of a whole listing, and one per listed folder.
            self._rows.update(self.registry.indexed_many([item.id for item in items if not item.is_folder]))
            parents = {folder_id: self.registry.folder(folder_id) for folder_id in folder_ids}
            for item in items:
                self._see(item, parents.get(item.parent_id or ""))
            self.registry.mark_listed(folder_ids)
            self._progressed = True
            # At least one batch per tick, so every tick makes progress.
            if self.clock() > deadline and self.registry.unlisted(1)[1]:
                result.log.append("walk continues next tick")
                return
        if result.state.walking:
            # The whole tree has been listed: what the walk did not meet has left it.
            self._store()
            for file in self.registry.not_walked():
                self._set(replace(file, present=False))
            result.log.append(f"walk finished: {self.registry.count()} folders watched")
        result.state = replace(result.state, walking=False)

    def _see(self, item: DriveItem, parent: tuple[str, str] | None = None) -> None:
        """A file or folder now directly inside a watched folder (``parent``: that folder's
        root and path, when the caller knows them)."""
        if item.is_folder:
            self.registry.upsert(item)
            return
        if parent is None and item.parent_id:
            parent = self.registry.folder(item.parent_id)
        path = None if parent is None else child_path(parent[1], item.name)
        content = spreadsheet_content(self.client, item) if path is not None else None
        if path is None or content is None:
            self._leave(item.id)
            return
        known = self._indexed(item.id)
        self._set(
            IndexedFile(
                file_id=item.id,
                parent_id=item.parent_id or "",
                name=item.name,
                path=path,
                fingerprint=content.fingerprint,
                modified_time=content.modified_time,
                target_id=item.shortcut_target_id if item.is_shortcut else None,
                present=True,
                reported=known.reported if known else 0,
            )
        )

    # -- the file index ----------------------------------------------------------------------

    def _indexed(self, file_id: str) -> IndexedFile | None:
        if file_id not in self._rows:
            self._rows[file_id] = self.registry.indexed(file_id)
        return self._rows[file_id]

    def _set(self, file: IndexedFile) -> None:
        """Record a file's new state, remembering its state before this tick."""
        if file.file_id not in self._before:
            self._before[file.file_id] = self._indexed(file.file_id)
        self._rows[file.file_id] = self._unstored[file.file_id] = file

    def _store(self) -> None:
        """Write the rows changed so far, before the index is queried."""
        self.registry.put(list(self._unstored.values()))
        self._unstored = {}

    def _leave(self, file_id: str) -> bool:
        """The file is out of the tree (or no spreadsheet any more); whether it was in."""
        known = self._indexed(file_id)
        if known is None or not known.present:
            return False
        self._set(replace(known, present=False))
        return True

    def _report(self, result: ScanResult) -> None:
        """The tick's net difference: what is new or changed, what has gone."""
        for file_id in sorted(self._before):
            before, after = self._before[file_id], self._indexed(file_id)
            was = before is not None and before.live
            if after is not None and after.live:
                if (
                    was
                    and before is not None
                    and (before.path, before.fingerprint)
                    == (
                        after.path,
                        after.fingerprint,
                    )
                ):
                    continue
                after = replace(after, reported=after.reported + 1)
                self._set(after)
                result.found[file_id] = SourceFile(
                    file_id, after.path, f"r{after.reported}", _parse_time(after.modified_time)
                )
            elif was and before is not None:
                result.removed[file_id] = before.path
        self._store()
        self._before = {}

    # -- changes -----------------------------------------------------------------------------

    def _read_changes(self, result: ScanResult, deadline: float) -> None:
        """The caller's own change log, then each shared drive's; a rejected token of any of
        them walks the tree again."""
        try:
            self._read_log(result, None, deadline)
            for drive_id in sorted(result.state.drive_tokens):
                self._read_log(result, drive_id, deadline)
        except InvalidPageToken as error:
            result.log.append(f"{error}; walking the whole tree again (only what changed is imported)")
            self._start_walk(result)
            self._walk(result, deadline)

    def _token(self, state: ScanState, drive_id: str | None) -> str | None:
        return state.page_token if drive_id is None else state.drive_tokens[drive_id]

    def _with_token(self, state: ScanState, drive_id: str | None, token: str | None) -> ScanState:
        if drive_id is None:
            return replace(state, page_token=token)
        assert token is not None
        return replace(state, drive_tokens={**state.drive_tokens, drive_id: token})

    def _read_log(self, result: ScanResult, drive_id: str | None, deadline: float) -> None:
        token = self._token(result.state, drive_id)
        assert token is not None
        while True:
            page = self.client.changes(token, drive_id)
            result.changes_read += len(page.changes)
            for change in page.changes:
                if change.file_id is None:
                    result.ignored += 1  # a shared drive itself changed, not a file
                    continue
                gone = change.removed or change.item is None or change.item.trashed
                item = None if gone else change.item
                if not self._apply(change.file_id, item):
                    result.ignored += 1
            self._progressed = True
            if page.next_page_token is None:
                # Only now, after the last page, is the new start token safe to keep.
                result.state = self._with_token(result.state, drive_id, page.new_start_page_token)
                return
            token = page.next_page_token
            result.state = self._with_token(result.state, drive_id, token)
            if self.clock() > deadline:
                result.log.append("more changes next tick")
                return

    def _apply(self, file_id: str, item: DriveItem | None) -> bool:
        """One change: ``item`` is the current state, None when it is gone (trashed,
        deleted, or no longer visible). Whether it concerned anything watched."""
        watched = self.registry.folder(file_id) is not None
        if watched or (item is not None and item.is_folder):
            return self._apply_folder(file_id, item, watched)
        if item is not None and item.parent_id and self.registry.folder(item.parent_id) is not None:
            self._see(item)
            concerned = True
        else:
            concerned = self._leave(file_id)
        self._store()
        for shortcut in self.registry.shortcuts_to(file_id):
            self._follow_target(shortcut, item)
            concerned = True
        return concerned

    def _apply_folder(self, folder_id: str, item: DriveItem | None, watched: bool) -> bool:
        if self.registry.is_root(folder_id):
            if item is None:
                self._empty(folder_id, keep_folder=True)
            else:
                self.registry.rename_root(item)
            return True
        if item is not None and item.parent_id and self.registry.folder(item.parent_id) is not None:
            if self.registry.upsert(item) == "moved":
                self._repath(folder_id)
            return True
        if watched:
            self._empty(folder_id, keep_folder=False)  # moved out, trashed, deleted or unshared
            return True
        return False

    def _empty(self, folder_id: str, keep_folder: bool) -> None:
        """A folder left the tree (or a root was trashed): every file below it leaves too."""
        folders = self.registry.subtree(folder_id)
        self._store()
        for file in self.registry.files_in(folders):
            self._set(replace(file, present=False))
        self.registry.remove(folders[1:] if keep_folder else folders)

    def _repath(self, folder_id: str) -> None:
        """A folder was renamed or moved within the tree: every file below takes its new path."""
        self._store()
        for parent_id in self.registry.subtree(folder_id):
            folder = self.registry.folder(parent_id)
            assert folder is not None
            for file in self.registry.files_in([parent_id]):
                self._set(replace(file, path=child_path(folder[1], file.name)))

    def _follow_target(self, shortcut: IndexedFile, target: DriveItem | None) -> None:
        """The file a shortcut in the tree points at changed: the shortcut's content did."""
        usable = target is not None and _is_spreadsheet_type(target.name, target.mime_type)
        self._set(
            replace(
                shortcut,
                fingerprint=target.fingerprint if target is not None and usable else "",
                modified_time=target.modified_time if target is not None and usable else None,
            )
        )
