"""A small, retrying client over google-api-python-client's Drive v3.

Every call follows the retry policy of the Google sources (``google_api.py``): 429, 5xx and
403 rate-limit answers back off exponentially. Only the ``drive.readonly`` scope is ever
requested. Credentials never appear in messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import google.auth.exceptions
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload

from pgdatahub_dagster.engine.errors import FileImportError, PgDataHubError
from pgdatahub_dagster.engine.sources import google_api
from pgdatahub_dagster.engine.sources.google_api import (
    DROPPED_CONNECTION,
    GoogleCalls,
    backoff,
    build_service,
    emulator_credentials,
    error_entries,
    has_reason,
)

DRIVE_SCOPES = ["https://www.googleapis.com/auth/drive.readonly"]
FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
SHEET_MIME_TYPE = "application/vnd.google-apps.spreadsheet"
SHORTCUT_MIME_TYPE = "application/vnd.google-apps.shortcut"
#: Docs Editors files (Docs, Sheets, Slides …) and other Google types: no stored bytes.
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
XLSX_MIME_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Drive returns only the fields asked for; these are all the scanner and source read.
ITEM_FIELDS = (
    "id, name, mimeType, parents, md5Checksum, version, modifiedTime, size, trashed, driveId, shortcutDetails"
)
_LIST_FIELDS = f"nextPageToken, incompleteSearch, files({ITEM_FIELDS})"
# A change of changeType "drive" (a shared drive renamed, deleted …) has no fileId.
_CHANGES_FIELDS = (
    "nextPageToken, newStartPageToken, "
    f"changes(changeType, fileId, driveId, removed, time, file({ITEM_FIELDS}))"
)
_PAGE_SIZE = 1000
# Drive rejects a changes page token that is invalid or too old with 400 ("Invalid Value" at
# location pageToken), or 410 (gone); any other 400 or 404 is a fault of its own.
_REJECTED_TOKEN_STATUSES = (400, 404, 410)
_EXPORT_TOO_LARGE = (
    "this Google Sheet is over Drive's 10 MB export limit, so it cannot be exported as xlsx; "
    "download it as .xlsx and upload that file instead, or split the sheet"
)


class DriveError(PgDataHubError):
    """Drive refused a request after all retries."""


class InvalidPageToken(DriveError):
    """The stored changes page token was rejected; the tree must be walked again."""


@dataclass(frozen=True)
class DriveItem:
    """A file or folder as Drive describes it."""

    id: str
    name: str
    mime_type: str
    parent_id: str | None
    md5: str | None
    version: str | None
    modified_time: str | None
    trashed: bool
    shortcut_target_id: str | None = None
    shortcut_target_mime_type: str | None = None
    #: The shared drive the item is in; None in a My Drive.
    drive_id: str | None = None

    @classmethod
    def from_api(cls, resource: dict[str, Any]) -> DriveItem:
        parents = resource.get("parents") or []
        shortcut = resource.get("shortcutDetails") or {}
        return cls(
            id=resource["id"],
            name=resource.get("name", ""),
            mime_type=resource.get("mimeType", ""),
            parent_id=parents[0] if parents else None,
            md5=resource.get("md5Checksum"),
            # A string in Drive's answers; some emulators send a JSON number.
            version=None if resource.get("version") is None else str(resource["version"]),
            modified_time=resource.get("modifiedTime"),
            trashed=bool(resource.get("trashed", False)),
            shortcut_target_id=shortcut.get("targetId"),
            shortcut_target_mime_type=shortcut.get("targetMimeType"),
            drive_id=resource.get("driveId"),
        )

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME_TYPE

    @property
    def is_native_sheet(self) -> bool:
        return self.mime_type == SHEET_MIME_TYPE

    @property
    def is_shortcut(self) -> bool:
        return self.mime_type == SHORTCUT_MIME_TYPE

    @property
    def revision(self) -> str:
        """Drive's version number: it rises at every change of the file, its name and place
        included, and never returns to an earlier value, so a file restored to earlier
        content is still a new revision."""
        return f"v{self.version}" if self.version else f"t{self.modified_time or '0'}"

    @property
    def fingerprint(self) -> str:
        """What changes when the content or its modification time does and, as far as Drive
        allows, not when the file is only renamed, moved or shared: a stored file's md5; a
        native Sheet has none, so its modification time alone stands for its content."""
        modified = self.modified_time or ""
        if self.md5:
            return f"md5:{self.md5}@{modified}"
        if self.is_native_sheet and modified:
            return f"sheet@{modified}"
        return f"{self.revision}@{modified}"

    @property
    def modified_at(self) -> datetime | None:
        if not self.modified_time:
            return None
        return datetime.fromisoformat(self.modified_time.replace("Z", "+00:00"))


@dataclass(frozen=True)
class DriveChange:
    #: None for a change to a shared drive itself (``changeType: drive``).
    file_id: str | None
    removed: bool
    item: DriveItem | None


@dataclass(frozen=True)
class ChangePage:
    changes: list[DriveChange]
    next_page_token: str | None
    new_start_page_token: str | None


def load_credentials(path: Path) -> Any:
    """A service-account key or an OAuth authorized-user token file, scoped read-only."""
    return google_api.load_credentials(path, DRIVE_SCOPES)


def _is_rejected_token(error: HttpError) -> bool:
    if error.status_code == 410:
        return True
    return error.status_code in _REJECTED_TOKEN_STATUSES and any(
        entry.get("location") == "pageToken" for entry in error_entries(error)
    )


class DriveClient:
    def __init__(
        self,
        service: Any,
        num_retries: int = 5,
        chunk_bytes: int = 8 * 1024 * 1024,
        page_size: int = _PAGE_SIZE,
        credentials_name: str = "the Google credentials",
    ) -> None:
        self._files = service.files()
        self._changes = service.changes()
        self._calls = GoogleCalls(num_retries, credentials_name, "PGDATAHUB_DRIVE_CREDENTIALS")
        self.credentials_name = credentials_name
        self.num_retries = num_retries
        self.chunk_bytes = chunk_bytes
        self.page_size = page_size

    @classmethod
    def connect(
        cls,
        credentials_file: Path,
        api_endpoint: str | None = None,
        num_retries: int = 5,
        chunk_bytes: int = 8 * 1024 * 1024,
        page_size: int = _PAGE_SIZE,
    ) -> DriveClient:
        return cls(
            build_service("drive", "v3", load_credentials(credentials_file), api_endpoint),
            num_retries=num_retries,
            chunk_bytes=chunk_bytes,
            page_size=page_size,
            credentials_name=str(credentials_file),
        )

    @classmethod
    def connect_to_emulator(
        cls,
        access_token: str,
        api_endpoint: str | None,
        num_retries: int = 5,
        chunk_bytes: int = 8 * 1024 * 1024,
    ) -> DriveClient:
        """A client that sends a plain access token, never refreshed, to a Drive emulator;
        production always uses a credentials file."""
        credentials = emulator_credentials(access_token, api_endpoint, "Google Drive", "PGDATAHUB_DRIVE")
        return cls(
            build_service("drive", "v3", credentials, api_endpoint),
            num_retries=num_retries,
            chunk_bytes=chunk_bytes,
            credentials_name="PGDATAHUB_DRIVE_ACCESS_TOKEN",
        )

    def _send(self, request: Any) -> Any:
        return self._calls.send(request)

    def _execute(self, request: Any) -> Any:
        try:
            return self._send(request)
        except HttpError as error:
            raise DriveError(f"Drive answered {error.status_code}: {error.reason}") from error

    def get(self, file_id: str) -> DriveItem:
        request = self._files.get(fileId=file_id, fields=ITEM_FIELDS, supportsAllDrives=True)
        try:
            return DriveItem.from_api(self._send(request))
        except HttpError as error:
            if error.status_code == 404:
                raise FileNotFoundError(f"{file_id}: no such file in Drive, or no access to it") from None
            raise DriveError(f"Drive answered {error.status_code}: {error.reason}") from error

    def list_children(self, folder_ids: Sequence[str], drive_id: str | None = None) -> list[DriveItem]:
        """Everything not trashed directly inside any of ``folder_ids`` (all in the shared
        drive ``drive_id``, or all outside shared drives), all pages.

        Searched across all drives first; when Drive says that search was incomplete (it
        may leave shared drives out), again within the folders' own drive (or the caller's
        corpus), and if that is incomplete too the listing fails: files are never missed
        silently."""
        parents = " or ".join(f"'{folder_id}' in parents" for folder_id in folder_ids)
        query = f"({parents}) and trashed = false"
        items, incomplete = self._list(query, corpora="allDrives")
        if incomplete:
            narrow = {"corpora": "drive", "driveId": drive_id} if drive_id else {"corpora": "user"}
            items, incomplete = self._list(query, **narrow)
        if incomplete:
            raise DriveError(
                "Drive could not search every drive for the watched folders (incompleteSearch), not "
                "even one drive at a time; nothing was changed, the next tick tries again"
            )
        return items

    def _list(self, query: str, **corpus: str) -> tuple[list[DriveItem], bool]:
        items: list[DriveItem] = []
        incomplete = False
        page_token = None
        while True:
            page = self._execute(
                self._files.list(
                    q=query,
                    fields=_LIST_FIELDS,
                    pageSize=self.page_size,
                    pageToken=page_token,
                    supportsAllDrives=True,
                    includeItemsFromAllDrives=True,
                    **corpus,
                )
            )
            items += [DriveItem.from_api(resource) for resource in page.get("files", [])]
            incomplete = incomplete or bool(page.get("incompleteSearch"))
            page_token = page.get("nextPageToken")
            if not page_token:
                return items, incomplete

    def start_page_token(self) -> str:
        """The token of the caller's own change log, from now on."""
        response = self._execute(self._changes.getStartPageToken(supportsAllDrives=True))
        return str(response["startPageToken"])

    def drive_start_page_token(self, drive_id: str) -> str | None:
        """The token of a shared drive's change log, from now on; None when the caller may
        not read it (no member: its items' changes are in the caller's own log then)."""
        request = self._changes.getStartPageToken(supportsAllDrives=True, driveId=drive_id)
        try:
            return str(self._send(request)["startPageToken"])
        except HttpError as error:
            if error.status_code in (403, 404):
                return None
            raise DriveError(f"Drive answered {error.status_code}: {error.reason}") from error

    def changes(self, page_token: str, drive_id: str | None = None) -> ChangePage:
        """A page of the caller's change log, or of the shared drive ``drive_id``'s."""
        request = self._changes.list(
            pageToken=page_token,
            pageSize=self.page_size,
            fields=_CHANGES_FIELDS,
            includeRemoved=True,
            supportsAllDrives=True,
            includeItemsFromAllDrives=True,
            **({"driveId": drive_id} if drive_id else {}),
        )
        try:
            response = self._send(request)
        except HttpError as error:
            if _is_rejected_token(error):
                raise InvalidPageToken(f"Drive rejected the changes page token: {error.reason}") from None
            raise DriveError(f"Drive answered {error.status_code}: {error.reason}") from error
        changes = [
            DriveChange(
                file_id=change.get("fileId") if change.get("changeType", "file") == "file" else None,
                removed=bool(change.get("removed", False)),
                item=DriveItem.from_api(change["file"]) if change.get("file") else None,
            )
            for change in response.get("changes", [])
        ]
        return ChangePage(changes, response.get("nextPageToken"), response.get("newStartPageToken"))

    def download(self, item: DriveItem, target: BinaryIO, display_name: str) -> str:
        """Stream the content (native Sheets exported as xlsx) into ``target`` in bounded
        chunks; returns its sha256, computed on the way."""
        if item.is_native_sheet:
            request = self._files.export_media(fileId=item.id, mimeType=XLSX_MIME_TYPE)
        else:
            request = self._files.get_media(fileId=item.id, supportsAllDrives=True)
        writer = _HashingWriter(target)
        downloader = MediaIoBaseDownload(writer, request, chunksize=self.chunk_bytes)
        dropped = 0
        done = False
        while not done:
            try:
                _, done = downloader.next_chunk(num_retries=self.num_retries)
            except google.auth.exceptions.RefreshError:
                raise self._calls.refused() from None
            except DROPPED_CONNECTION:
                # The client's retry loop does not cover a body cut off mid-way; the
                # downloader only advances after a whole chunk, so asking again resumes.
                dropped += 1
                if dropped > self.num_retries:
                    raise FileImportError(display_name, "the download from Drive kept breaking off") from None
                backoff(dropped)
            except HttpError as error:
                if has_reason(error, "exportSizeLimitExceeded"):
                    raise FileImportError(display_name, _EXPORT_TOO_LARGE) from None
                raise FileImportError(
                    display_name, f"Drive answered {error.status_code}: {error.reason}"
                ) from None
        return writer.hexdigest()


class _HashingWriter:
    """A file-like sink that hashes what passes through, so content is hashed while
    it streams to disk instead of being read back."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._target.write(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
