"""A real HTTP server that speaks enough Google Drive v3 for the real client.

Tests point ``googleapiclient.discovery.build("drive", "v3", ...)`` at
:attr:`DriveTestServer.api_endpoint` and then drive state changes and faults
from Python. Everything goes over genuine HTTP on 127.0.0.1, so the client's
URL building, retry loop, partial-response handling and chunked media download
are all exercised for real instead of being mocked away.

Only the read-only surface pgdatahub_dagster needs is implemented: files.list,
files.get (metadata and ``alt=media``), files.export, changes.getStartPageToken
and changes.list.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from pgdatahub_dagster.testing.google_http import (
    GoogleTestServer,
    QuerySyntaxError,
    Response,
    TokenParser,
    error,
    fault_response,
    invalid_parameter,
    json_response,
    page_offset,
    page_token,
)

FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
SHEET_MIME_TYPE = "application/vnd.google-apps.spreadsheet"
SHORTCUT_MIME_TYPE = "application/vnd.google-apps.shortcut"
XLSX_MIME_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

_GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
# The client reaches media through the API base, but Drive also serves the
# same resources under /download/ and some code builds those URLs by hand.
_PATH_PREFIXES = ("/drive/v3/", "/download/drive/v3/")
_MAX_PAGE_SIZE = 1000
_DEFAULT_PAGE_SIZE = 100
_DEFAULT_CLOCK_START = datetime(2024, 1, 1, tzinfo=UTC)

# A None child means "any sub-selection is accepted": those objects are not
# modelled, so the server cannot judge what lives inside them.
_Schema = Mapping[str, "_Schema | None"]
_FieldPaths = frozenset[tuple[str, ...]]
_Predicate = Callable[["_Item"], bool]

# Every File property in the v3 discovery document, so that a typo in a
# ``fields`` selector fails here exactly as it would against Drive instead of
# silently yielding responses without the field.
_FILE_PROPERTIES = [
    "appProperties",
    "capabilities",
    "clientEncryptionDetails",
    "contentHints",
    "contentRestrictions",
    "copyRequiresWriterPermission",
    "createdTime",
    "description",
    "downloadRestrictions",
    "driveId",
    "explicitlyTrashed",
    "exportLinks",
    "fileExtension",
    "folderColorRgb",
    "fullFileExtension",
    "hasAugmentedPermissions",
    "hasThumbnail",
    "headRevisionId",
    "iconLink",
    "id",
    "imageMediaMetadata",
    "inheritedPermissionsDisabled",
    "isAppAuthorized",
    "kind",
    "labelInfo",
    "lastModifyingUser",
    "linkShareMetadata",
    "md5Checksum",
    "mimeType",
    "modifiedByMe",
    "modifiedByMeTime",
    "modifiedTime",
    "name",
    "originalFilename",
    "ownedByMe",
    "owners",
    "parents",
    "permissionIds",
    "permissions",
    "properties",
    "quotaBytesUsed",
    "resourceKey",
    "sha1Checksum",
    "sha256Checksum",
    "shared",
    "sharedWithMeTime",
    "sharingUser",
    "size",
    "spaces",
    "starred",
    "teamDriveId",
    "thumbnailLink",
    "thumbnailVersion",
    "trashed",
    "trashedTime",
    "trashingUser",
    "version",
    "videoMediaMetadata",
    "viewedByMe",
    "viewedByMeTime",
    "viewersCanCopyContent",
    "webContentLink",
    "webViewLink",
    "writersCanShare",
]
_SHORTCUT_SCHEMA: _Schema = dict.fromkeys(("targetId", "targetMimeType", "targetResourceKey"))
_FILE_SCHEMA: _Schema = {
    **dict.fromkeys(_FILE_PROPERTIES),
    "shortcutDetails": _SHORTCUT_SCHEMA,
}
_FILE_LIST_SCHEMA: _Schema = {
    **dict.fromkeys(("incompleteSearch", "kind", "nextPageToken")),
    "files": _FILE_SCHEMA,
}
_CHANGE_SCHEMA: _Schema = {
    **dict.fromkeys(
        (
            "changeType",
            "drive",
            "driveId",
            "fileId",
            "kind",
            "removed",
            "teamDrive",
            "teamDriveId",
            "time",
            "type",
        )
    ),
    "file": _FILE_SCHEMA,
}
_CHANGE_LIST_SCHEMA: _Schema = {
    **dict.fromkeys(("kind", "newStartPageToken", "nextPageToken")),
    "changes": _CHANGE_SCHEMA,
}
_START_PAGE_TOKEN_SCHEMA: _Schema = dict.fromkeys(("kind", "startPageToken"))


def _parse_fields(text: str) -> _FieldPaths:
    """Parse a partial-response selector into the set of selected paths.

    ``nextPageToken,files(id,parents)`` becomes ``{("nextPageToken",),
    ("files", "id"), ("files", "parents")}``; ``a/b`` is shorthand for
    ``a(b)``.
    """
    tokens = re.findall(r"[A-Za-z0-9_*]+|[(),/]|\S", text)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or (expected is not None and token != expected):
            raise QuerySyntaxError(f"Invalid field selection {text}")
        position += 1
        return token

    def name() -> str:
        token = take()
        if not re.fullmatch(r"[A-Za-z0-9_]+|\*", token):
            raise QuerySyntaxError(f"Invalid field selection {text}")
        return token

    def selection(prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        paths: list[tuple[str, ...]] = []
        while True:
            path = (*prefix, name())
            while peek() == "/":
                take("/")
                path = (*path, name())
            if peek() == "(":
                take("(")
                paths.extend(selection(path))
                take(")")
            else:
                paths.append(path)
            if peek() != ",":
                return paths
            take(",")

    paths = selection(())
    if peek() is not None:
        raise QuerySyntaxError(f"Invalid field selection {text}")
    return frozenset(paths)


def _unknown_field(paths: _FieldPaths, schema: _Schema) -> str | None:
    for path in sorted(paths):
        node: _Schema | None = schema
        for name in path:
            if node is None or name == "*":
                break
            if name not in node:
                return name
            node = node[name]
    return None


def _select(value: Any, paths: _FieldPaths) -> Any:
    if () in paths:
        return value
    if isinstance(value, list):
        return [_select(element, paths) for element in value]
    if not isinstance(value, dict):
        return value
    selected: dict[str, Any] = {}
    for key, child in value.items():
        child_paths = frozenset(p[1:] for p in paths if p[0] in (key, "*"))
        if child_paths:
            selected[key] = _select(child, child_paths)
    return selected


_DEFAULT_FILE_FIELDS = _parse_fields("kind,id,name,mimeType")
_DEFAULT_FILE_LIST_FIELDS = _parse_fields("kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)")
_DEFAULT_CHANGE_LIST_FIELDS = _parse_fields(
    "kind,nextPageToken,newStartPageToken,"
    "changes(kind,changeType,time,removed,fileId,file(kind,id,name,mimeType))"
)
_DEFAULT_START_PAGE_TOKEN_FIELDS = _parse_fields("kind,startPageToken")

_QUERY_TOKEN = re.compile(r"\s*(?:('(?:[^'\\]|\\.)*')|(!=|=|\(|\))|([A-Za-z]+))")


class _QueryParser(TokenParser):
    """Recursive-descent parser for the subset of Drive's ``q`` language.

    Grammar (``and`` binds tighter than ``or``; keywords are
    case-insensitive)::

        disjunction := conjunction ("or" conjunction)*
        conjunction := term ("and" term)*
        term        := "(" disjunction ")" | clause
        clause      := STRING "in" "parents"
                     | "trashed" ("=" | "!=") ("true" | "false")
                     | "mimeType" ("=" | "!=") STRING
    """

    def __init__(self, text: str) -> None:
        super().__init__(_QUERY_TOKEN, text)

    def parse(self) -> _Predicate:
        predicate = self._disjunction()
        self._finished()
        return predicate

    def _accept_keyword(self, keyword: str) -> bool:
        token = self._peek()
        if token is not None and token.lower() == keyword:
            self._position += 1
            return True
        return False

    def _expect_keyword(self, *keywords: str) -> str:
        token = self._take().lower()
        if token not in keywords:
            raise QuerySyntaxError(f"expected {' or '.join(keywords)}, got {token!r}")
        return token

    def _expect_string(self) -> str:
        token = self._take()
        if not token.startswith("'"):
            raise QuerySyntaxError(f"expected a quoted string, got {token!r}")
        return re.sub(r"\\(.)", r"\1", token[1:-1])

    def _disjunction(self) -> _Predicate:
        alternatives = [self._conjunction()]
        while self._accept_keyword("or"):
            alternatives.append(self._conjunction())
        if len(alternatives) == 1:
            return alternatives[0]
        return lambda item: any(p(item) for p in alternatives)

    def _conjunction(self) -> _Predicate:
        requirements = [self._term()]
        while self._accept_keyword("and"):
            requirements.append(self._term())
        if len(requirements) == 1:
            return requirements[0]
        return lambda item: all(p(item) for p in requirements)

    def _term(self) -> _Predicate:
        if self._peek() == "(":
            self._take()
            predicate = self._disjunction()
            if self._take() != ")":
                raise QuerySyntaxError("expected ')'")
            return predicate
        return self._clause()

    def _clause(self) -> _Predicate:
        if (self._peek() or "").startswith("'"):
            parent_id = self._expect_string()
            self._expect_keyword("in")
            self._expect_keyword("parents")
            return lambda item: item.parent_id == parent_id
        token = self._take()
        if token == "trashed":
            negate = self._expect_keyword("=", "!=") == "!="
            wanted = (self._expect_keyword("true", "false") == "true") != negate
            return lambda item: item.trashed == wanted
        if token == "mimeType":
            negate = self._expect_keyword("=", "!=") == "!="
            mime_type = self._expect_string()
            return lambda item: (item.mime_type == mime_type) != negate
        raise QuerySyntaxError(f"unsupported query term {token!r}")


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class _Item:
    id: str
    name: str
    mime_type: str
    parent_id: str | None
    created: datetime
    modified: datetime
    content: bytes = b""
    drive_id: str | None = None
    target_id: str | None = None
    target_mime_type: str | None = None
    trashed: bool = False
    version: int = 1
    #: Not visible to the caller any more (``unshare``).
    hidden: bool = False

    def resource(self) -> dict[str, Any]:
        """The full File resource; ``fields`` selection trims it afterwards."""
        resource: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "trashed": self.trashed,
            "version": str(self.version),
            "createdTime": _rfc3339(self.created),
            "modifiedTime": _rfc3339(self.modified),
        }
        # Drive omits ``parents`` for roots rather than sending an empty list.
        if self.parent_id is not None:
            resource["parents"] = [self.parent_id]
        if not self.mime_type.startswith(_GOOGLE_APPS_PREFIX):
            resource["md5Checksum"] = hashlib.md5(self.content).hexdigest()
            resource["size"] = str(len(self.content))
        if self.drive_id is not None:
            resource["driveId"] = self.drive_id
        if self.mime_type == SHORTCUT_MIME_TYPE:
            resource["shortcutDetails"] = {
                "targetId": self.target_id,
                "targetMimeType": self.target_mime_type,
            }
        return resource


@dataclass(frozen=True)
class _Change:
    file_id: str
    time: datetime
    # A snapshot taken when the change happened, so a consumer replaying the
    # log sees each intermediate state; None marks a permanent deletion.
    file: dict[str, Any] | None
    #: The shared drive the item was in: its changes are in that drive's change log.
    drive_id: str | None = None
    #: A change to a shared drive itself (``changeType: drive``; ``file_id`` is its id).
    of_drive: bool = False

    def resource(self) -> dict[str, Any]:
        if self.of_drive:
            # No fileId and no file: what a client must not trip over.
            drive: dict[str, Any] = {
                "kind": "drive#change",
                "changeType": "drive",
                "driveId": self.file_id,
                "removed": self.file is None,
                "time": _rfc3339(self.time),
            }
            if self.file is not None:
                drive["drive"] = self.file
            return drive
        resource: dict[str, Any] = {
            "kind": "drive#change",
            "changeType": "file",
            "fileId": self.file_id,
            "removed": self.file is None,
            "time": _rfc3339(self.time),
        }
        if self.drive_id is not None:
            resource["driveId"] = self.drive_id
        if self.file is not None:
            resource["file"] = self.file
        return resource


class DriveTestServer(GoogleTestServer):
    """In-memory Drive served over real HTTP, with hooks to mutate and misbehave.

    Mutations made through the Python API are recorded in a change log that
    ``changes.list`` replays; each one advances a logical clock by one second
    so ``modifiedTime`` and change times are deterministic and strictly
    increasing. Folders whose parent is None act as roots.
    """

    def __init__(
        self,
        *,
        export_limit_bytes: int = 10 * 1024 * 1024,
        slow_seconds: float = 0.5,
        clock_start: datetime = _DEFAULT_CLOCK_START,
    ) -> None:
        super().__init__(slow_seconds=slow_seconds)
        self.export_limit_bytes = export_limit_bytes
        #: Whether the caller is a member of the shared drives (then their files' changes
        #: are in each drive's change log only); otherwise it sees their items as shared with
        #: it, in its own change log, and cannot read the drives' logs.
        self.shared_drive_members = True
        #: Answer ``corpora=allDrives`` listings with ``incompleteSearch: true``, leaving the
        #: shared drives out, as Drive may when the caller has many.
        self.incomplete_all_drives_search = False
        self._clock = clock_start
        self._items: dict[str, _Item] = {}
        self._changes: list[_Change] = []
        self._expired_before = 0
        self._id_counter = 0

    name = "DriveTestServer"

    @property
    def api_endpoint(self) -> str:
        """Base URL for ``client_options={"api_endpoint": ...}``.

        The client uses this verbatim as the base, so it must carry the
        ``drive/v3/`` service path that the discovery document's rootUrl
        normally supplies.
        """
        return f"{self.base_url}drive/v3/"

    # -- state mutation ----------------------------------------------------

    def add_folder(
        self,
        name: str,
        parent_id: str | None = None,
        *,
        drive_id: str | None = None,
        item_id: str | None = None,
    ) -> str:
        """Create a folder; ``drive_id`` marks a root as a shared drive. ``item_id`` gives
        it that id instead of a new one (to rebuild another server's tree)."""
        return self._create(name, parent_id, FOLDER_MIME_TYPE, drive_id=drive_id, item_id=item_id)

    def add_file(
        self,
        name: str,
        parent_id: str,
        content: bytes,
        mime_type: str = "application/octet-stream",
        *,
        item_id: str | None = None,
        modified_time: datetime | None = None,
    ) -> str:
        """Create a file. ``item_id`` and ``modified_time`` give it that id and
        ``modifiedTime`` instead of new ones, so a test can rebuild another server's
        tree (same ids, same times) elsewhere."""
        if mime_type.startswith(_GOOGLE_APPS_PREFIX):
            raise ValueError("use add_folder/add_google_sheet/add_shortcut instead")
        return self._create(
            name, parent_id, mime_type, content=content, item_id=item_id, modified_time=modified_time
        )

    def modified_time(self, file_id: str) -> datetime:
        """The item's ``modifiedTime``: what a rebuilt tree must give the same item."""
        with self._lock:
            return self._get(file_id).modified

    def add_google_sheet(self, name: str, parent_id: str, xlsx_bytes: bytes) -> str:
        """Create a native Sheet whose xlsx export returns ``xlsx_bytes``."""
        return self._create(name, parent_id, SHEET_MIME_TYPE, content=xlsx_bytes)

    def add_google_file(self, name: str, parent_id: str, mime_type: str) -> str:
        """Create another Docs Editors file (``application/vnd.google-apps.document``, a Doc;
        ``…presentation``, Slides): it has no bytes to download, whatever its name says."""
        if not mime_type.startswith(_GOOGLE_APPS_PREFIX) or mime_type in (FOLDER_MIME_TYPE, SHEET_MIME_TYPE):
            raise ValueError("use add_folder/add_google_sheet for folders and Sheets")
        return self._create(name, parent_id, mime_type)

    def add_shortcut(self, name: str, parent_id: str, target_id: str) -> str:
        with self._lock:
            target_mime_type = self._get(target_id).mime_type
        return self._create(
            name,
            parent_id,
            SHORTCUT_MIME_TYPE,
            target_id=target_id,
            target_mime_type=target_mime_type,
        )

    def update_content(self, file_id: str, content: bytes) -> None:
        with self._lock:
            item = self._get(file_id)
            if item.mime_type in (FOLDER_MIME_TYPE, SHORTCUT_MIME_TYPE):
                raise ValueError(f"{item.mime_type} items have no content")
            item.content = content
            self._touch(item)

    def rename(self, file_id: str, new_name: str) -> None:
        with self._lock:
            item = self._get(file_id)
            item.name = new_name
            self._touch(item)

    def move(self, file_id: str, new_parent_id: str) -> None:
        with self._lock:
            item = self._get(file_id)
            parent = self._get_folder(new_parent_id)
            descendant_ids = self._descendant_ids(item.id)
            if parent.id == item.id or parent.id in descendant_ids:
                raise ValueError("cannot move a folder into itself")
            item.parent_id = parent.id
            for moved_id in [item.id, *descendant_ids]:
                self._items[moved_id].drive_id = parent.drive_id
            self._touch(item)

    def share(self, item_id: str) -> None:
        """Share an item with someone: like every change, it raises ``version`` and is
        reported, but it leaves the content and ``modifiedTime`` alone."""
        with self._lock:
            item = self._get(item_id)
            item.version += 1
            if not item.hidden:
                self._changes.append(_Change(item.id, self._tick(), item.resource(), item.drive_id))

    def trash(self, file_id: str, *, descendants_reported: bool = True) -> None:
        """Trash an item; like Drive, everything beneath a folder goes too. Drive may report
        only the folder (``descendants_reported=False``): its contents are trashed with it
        all the same."""
        with self._lock:
            for position, item_id in enumerate([file_id, *self._descendant_ids(file_id)]):
                item = self._get(item_id)
                if not item.trashed:
                    item.trashed = True
                    if position == 0 or descendants_reported:
                        self._touch(item)

    def delete(self, file_id: str, *, descendants_reported: bool = True) -> None:
        """Permanently delete an item and, for folders, its descendants (reported one by
        one, or only the folder)."""
        with self._lock:
            self._get(file_id)
            for position, item_id in enumerate([file_id, *self._descendant_ids(file_id)]):
                gone = self._items.pop(item_id)
                if position == 0 or descendants_reported:
                    self._changes.append(_Change(item_id, self._tick(), None, gone.drive_id))

    def unshare(self, item_id: str) -> None:
        """Take the caller's access to an item away (it stops being shared with the service
        account): it and everything beneath it disappear from every answer, and the change
        log reports the item alone as removed, as Drive does on a loss of access."""
        with self._lock:
            for hidden_id in [item_id, *self._descendant_ids(item_id)]:
                self._get(hidden_id).hidden = True
            self._changes.append(_Change(item_id, self._tick(), None, self._get(item_id).drive_id))

    def change_shared_drive(self, drive_id: str, *, removed: bool = False) -> None:
        """Record a change to a shared drive itself (renamed, or deleted with ``removed``):
        an entry of ``changeType: drive`` in the user's change log."""
        with self._lock:
            drive = None if removed else {"kind": "drive#drive", "id": drive_id, "name": "renamed"}
            self._changes.append(_Change(drive_id, self._tick(), drive, of_drive=True))

    # -- change tokens -------------------------------------------------------

    def current_page_token(self) -> str:
        """The token ``changes.getStartPageToken`` would return right now."""
        with self._lock:
            return str(len(self._changes))

    def expire_tokens_before(self, token: str) -> None:
        """Make ``changes.list`` reject every page token older than ``token``."""
        with self._lock:
            position = self._token_position(token)
            if position is None:
                raise ValueError(f"not a valid page token: {token!r}")
            self._expired_before = position

    # -- internals: state ------------------------------------------------------

    def _create(
        self,
        name: str,
        parent_id: str | None,
        mime_type: str,
        *,
        content: bytes = b"",
        drive_id: str | None = None,
        target_id: str | None = None,
        target_mime_type: str | None = None,
        item_id: str | None = None,
        modified_time: datetime | None = None,
    ) -> str:
        explicit = item_id is not None
        with self._lock:
            if parent_id is not None:
                if drive_id is not None:
                    raise ValueError("drive_id is inherited from the parent")
                drive_id = self._get_folder(parent_id).drive_id
            elif mime_type != FOLDER_MIME_TYPE:
                raise ValueError("only folders may be roots")
            # A new id never takes one given explicitly before (a rebuilt tree mixes both).
            while item_id is None or (item_id in self._items and not explicit):
                self._id_counter += 1
                digest = hashlib.sha256(f"drive-test:{self._id_counter}".encode()).digest()
                # Real ids look like "1AbC...": 33 url-safe characters.
                item_id = "1" + base64.urlsafe_b64encode(digest).decode()[:32]
            if explicit and item_id in self._items:
                raise ValueError(f"an item with id {item_id} exists already")
            now = self._tick()
            stamp = now if modified_time is None else modified_time
            item = _Item(
                id=item_id,
                name=name,
                mime_type=mime_type,
                parent_id=parent_id,
                created=stamp,
                modified=stamp,
                content=content,
                drive_id=drive_id,
                target_id=target_id,
                target_mime_type=target_mime_type,
            )
            self._items[item_id] = item
            self._changes.append(_Change(item_id, now, item.resource(), drive_id))
            return item_id

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def _touch(self, item: _Item) -> None:
        item.version += 1
        item.modified = self._tick()
        if not item.hidden:
            self._changes.append(_Change(item.id, item.modified, item.resource(), item.drive_id))

    def _get(self, item_id: str) -> _Item:
        try:
            return self._items[item_id]
        except KeyError:
            raise KeyError(f"no such item: {item_id}") from None

    def _get_folder(self, item_id: str) -> _Item:
        item = self._get(item_id)
        if item.mime_type != FOLDER_MIME_TYPE:
            raise ValueError(f"{item_id} is not a folder")
        return item

    def _descendant_ids(self, item_id: str) -> list[str]:
        found: list[str] = []
        frontier = [item_id]
        while frontier:
            parent = frontier.pop()
            children = [i.id for i in self._items.values() if i.parent_id == parent]
            found.extend(children)
            frontier.extend(children)
        return found

    def _token_position(self, token: str) -> int | None:
        if not token.isdigit():
            return None
        position = int(token)
        if not self._expired_before <= position <= len(self._changes):
            return None
        return position

    # -- internals: HTTP -------------------------------------------------------

    def _fault(self, kind: str) -> Response:
        return fault_response(kind, "Shared drive not found.", "The page token is too old.")

    def _answer_get(
        self, target: urllib.parse.SplitResult, query: dict[str, str], headers: Message
    ) -> Response:
        return self._dispatch(target.path, query, headers)

    def _dispatch(
        self,
        path: str,
        query: dict[str, str],
        headers: Message,
    ) -> Response:
        prefix = next((p for p in _PATH_PREFIXES if path.startswith(p)), None)
        if prefix is None:
            return error(404, "notFound", f"Not Found: {path}")
        segments = [urllib.parse.unquote(s) for s in path[len(prefix) :].split("/")]
        with self._lock:
            if segments == ["files"]:
                return self._list_files(query)
            if segments == ["changes", "startPageToken"]:
                return self._start_page_token(query)
            if segments == ["changes"]:
                return self._list_changes(query)
            if len(segments) in (2, 3) and segments[0] == "files":
                item = self._items.get(segments[1])
                if item is None or item.hidden:
                    return error(404, "notFound", f"File not found: {segments[1]}.")
                if len(segments) == 2 and query.get("alt") == "media":
                    return self._media(item, headers.get("Range"))
                if len(segments) == 2:
                    return self._respond_with_fields(
                        item.resource(), query, _FILE_SCHEMA, _DEFAULT_FILE_FIELDS
                    )
                if segments[2] == "export":
                    return self._export(item, query)
        return error(404, "notFound", f"Not Found: {path}")

    def _respond_with_fields(
        self,
        payload: dict[str, Any],
        query: Mapping[str, str],
        schema: _Schema,
        default_fields: _FieldPaths,
    ) -> Response:
        fields = query.get("fields")
        if fields is None:
            selected = default_fields
        else:
            try:
                selected = _parse_fields(fields)
            except QuerySyntaxError as exc:
                return error(400, "invalidParameter", str(exc), location="fields")
            unknown = _unknown_field(selected, schema)
            if unknown is not None:
                return error(
                    400,
                    "invalidParameter",
                    f"Invalid field selection {unknown}",
                    location="fields",
                )
        return json_response(_select(payload, selected))

    def _page_size(self, query: Mapping[str, str]) -> int | None:
        raw = query.get("pageSize", str(_DEFAULT_PAGE_SIZE))
        if not raw.isdigit() or int(raw) < 1:
            return None
        # Capped rather than rejected: asking for more than the maximum just
        # yields maximum-sized pages.
        return min(int(raw), _MAX_PAGE_SIZE)

    def _list_files(self, query: Mapping[str, str]) -> Response:
        q = query.get("q", "")
        try:
            predicate = _QueryParser(q).parse() if q.strip() else None
        except QuerySyntaxError as exc:
            return invalid_parameter("q", f"Invalid Value: {exc}")
        page_size = self._page_size(query)
        if page_size is None:
            return invalid_parameter("pageSize")
        offset = page_offset(query.get("pageToken"), q)
        if offset is None:
            return invalid_parameter("pageToken")
        corpora = query.get("corpora", "user")
        if corpora == "drive":
            if not query.get("driveId") or query.get("includeItemsFromAllDrives") != "true":
                return invalid_parameter("corpora", "driveId and includeItemsFromAllDrives are required")
            if not self.shared_drive_members:
                return error(404, "notFound", f"Shared drive not found: {query['driveId']}")
        elif corpora not in ("user", "allDrives"):
            return invalid_parameter("corpora")
        incomplete = corpora == "allDrives" and self.incomplete_all_drives_search
        matches = sorted(
            (
                i
                for i in self._items.values()
                if not i.hidden
                and (predicate is None or predicate(i))
                and self._in_corpus(i, corpora, query.get("driveId"), incomplete)
            ),
            key=lambda i: (i.name, i.id),
        )
        payload: dict[str, Any] = {
            "kind": "drive#fileList",
            "incompleteSearch": incomplete,
            "files": [i.resource() for i in matches[offset : offset + page_size]],
        }
        if offset + page_size < len(matches):
            payload["nextPageToken"] = page_token(offset + page_size, q)
        return self._respond_with_fields(payload, query, _FILE_LIST_SCHEMA, _DEFAULT_FILE_LIST_FIELDS)

    def _in_corpus(self, item: _Item, corpora: str, drive_id: str | None, incomplete: bool) -> bool:
        if corpora == "drive":
            return item.drive_id == drive_id
        if corpora == "user":
            # Items of shared drives the caller is no member of count as shared with it.
            return item.drive_id is None or not self.shared_drive_members
        # allDrives: an incomplete search left the shared drives out.
        return not (incomplete and item.drive_id is not None)

    def _in_change_log(self, change: _Change, drive_id: str | None) -> bool:
        """Whether the change is in the user's change log (``drive_id`` None) or that shared
        drive's. A member's changes to shared-drive files are in the drive's log only."""
        if drive_id is not None:
            return change.drive_id == drive_id and not change.of_drive
        return change.of_drive or change.drive_id is None or not self.shared_drive_members

    def _start_page_token(self, query: Mapping[str, str]) -> Response:
        if query.get("driveId") and not self.shared_drive_members:
            return error(404, "notFound", f"Shared drive not found: {query['driveId']}")
        payload = {
            "kind": "drive#startPageToken",
            "startPageToken": str(len(self._changes)),
        }
        return self._respond_with_fields(
            payload, query, _START_PAGE_TOKEN_SCHEMA, _DEFAULT_START_PAGE_TOKEN_FIELDS
        )

    def _list_changes(self, query: Mapping[str, str]) -> Response:
        token = query.get("pageToken")
        if token is None:
            return error(
                400,
                "required",
                "Required parameter: pageToken",
                location="pageToken",
            )
        start = self._token_position(token)
        if start is None:
            return invalid_parameter("pageToken")
        page_size = self._page_size(query)
        if page_size is None:
            return invalid_parameter("pageSize")
        include_removed = query.get("includeRemoved", "true") != "false"
        drive_id = query.get("driveId")
        if drive_id and not self.shared_drive_members:
            return error(404, "notFound", f"Shared drive not found: {drive_id}")
        end = min(start + page_size, len(self._changes))
        payload: dict[str, Any] = {
            "kind": "drive#changeList",
            "changes": [
                change.resource()
                for change in self._changes[start:end]
                if (include_removed or change.file is not None) and self._in_change_log(change, drive_id)
            ],
        }
        if end < len(self._changes):
            payload["nextPageToken"] = str(end)
        else:
            payload["newStartPageToken"] = str(end)
        return self._respond_with_fields(payload, query, _CHANGE_LIST_SCHEMA, _DEFAULT_CHANGE_LIST_FIELDS)

    def _media(self, item: _Item, range_header: str | None) -> Response:
        if item.mime_type.startswith(_GOOGLE_APPS_PREFIX):
            return error(
                403,
                "fileNotDownloadable",
                "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                location="alt",
            )
        content = item.content
        total = len(content)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
        if match is None or match.group(1) == match.group(2) == "":
            return Response(200, content, item.mime_type)
        first, last = match.groups()
        if first == "":
            start, end = max(total - int(last), 0), total - 1
        else:
            start = int(first)
            end = min(int(last), total - 1) if last else total - 1
        if start >= total or start > end:
            # MediaIoBaseDownload relies on this to finish empty files.
            return Response(416, b"", item.mime_type, {"Content-Range": f"bytes */{total}"})
        return Response(
            206,
            content[start : end + 1],
            item.mime_type,
            {"Content-Range": f"bytes {start}-{end}/{total}"},
        )

    def _export(self, item: _Item, query: Mapping[str, str]) -> Response:
        if item.mime_type != SHEET_MIME_TYPE:
            return error(403, "fileNotExportable", "Export only supports Docs Editors files.")
        if query.get("mimeType") != XLSX_MIME_TYPE:
            return error(
                400,
                "badRequest",
                "The requested conversion is not supported.",
                location="mimeType",
            )
        if len(item.content) > self.export_limit_bytes:
            return error(
                403,
                "exportSizeLimitExceeded",
                "This file is too large to be exported.",
                details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "FORBIDDEN"}],
            )
        # Range is deliberately ignored: the whole workbook comes back with a
        # 200, and MediaIoBaseDownload then finishes on Content-Length alone.
        return Response(200, item.content, XLSX_MIME_TYPE)
