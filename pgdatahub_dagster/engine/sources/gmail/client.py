"""A small, retrying client over google-api-python-client's Gmail v1.

Only the ``gmail.readonly`` scope is ever requested. Every call follows the retry policy of
the Google sources (``google_api.py``); message metadata is fetched in batches
(``BatchHttpRequest``, 50 messages per batch, as Gmail advises), whose requests follow the
same policy. Credentials never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from googleapiclient.errors import HttpError

from pgdatahub_dagster.engine.errors import ConfigError, FileImportError
from pgdatahub_dagster.engine.settings import GmailSettings
from pgdatahub_dagster.engine.sources.base import SourceUnavailableError
from pgdatahub_dagster.engine.sources.google_api import (
    GoogleCalls,
    build_service,
    emulator_credentials,
    is_service_account_key,
    load_credentials,
)

GMAIL_SCOPES = ["https://www.googleapis.com/auth/gmail.readonly"]
#: Google's batch endpoint for Gmail. The client would build its batch URL from the
#: discovery document's rootUrl, which ``api_endpoint`` does not change, so it is set here.
GOOGLE_BATCH_URI = "https://gmail.googleapis.com/batch/gmail/v1"
BATCH_SIZE = 50
#: Ids per page of ``messages.list`` and records per page of ``history.list``: Gmail's maximum.
PAGE_SIZE = 500
_USER = "me"
_CREDENTIALS_VARIABLE = "PGDATAHUB_GMAIL_CREDENTIALS"


class GmailError(SourceUnavailableError):
    """Gmail refused a request after all retries: the mailbox cannot be read this time."""


class HistoryTooOld(GmailError):
    """Gmail no longer keeps the history since the stored history id (404): list again."""


@dataclass(frozen=True)
class GmailAttachment:
    #: Stable for the message's life, unlike Gmail's ``attachmentId``, which is new at
    #: every fetch of the message.
    part_id: str
    filename: str
    mime_type: str
    size: int
    attachment_id: str | None
    #: Small bodies come inline instead of by ``attachmentId``.
    inline_data: str | None = None


@dataclass(frozen=True)
class GmailMessage:
    id: str
    thread_id: str
    #: Rises at every change of the message (its labels); never returns to an earlier value.
    history_id: str
    internal_date: datetime
    label_ids: tuple[str, ...]
    snippet: str
    size: int
    headers: dict[str, str]
    attachments: tuple[GmailAttachment, ...]

    @classmethod
    def from_api(cls, resource: dict[str, Any]) -> GmailMessage:
        payload = resource.get("payload") or {}
        headers: dict[str, str] = {}
        for header in payload.get("headers") or []:
            # The first of repeated headers, as mail programs show it.
            headers.setdefault(str(header.get("name", "")).lower(), str(header.get("value", "")))
        return cls(
            id=resource["id"],
            thread_id=resource.get("threadId", ""),
            history_id=str(resource.get("historyId", "")),
            internal_date=datetime.fromtimestamp(int(resource.get("internalDate", 0)) / 1000, UTC),
            label_ids=tuple(resource.get("labelIds") or ()),
            snippet=resource.get("snippet", ""),
            size=int(resource.get("sizeEstimate", 0)),
            headers=headers,
            attachments=tuple(_attachments(payload)),
        )

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def _attachments(part: dict[str, Any]) -> Iterator[GmailAttachment]:
    """Every part with a file name, at any depth (attachments of a forwarded message too)."""
    body = part.get("body") or {}
    if part.get("filename"):
        yield GmailAttachment(
            part_id=str(part.get("partId", "")),
            filename=str(part["filename"]),
            mime_type=str(part.get("mimeType", "")),
            size=int(body.get("size", 0)),
            attachment_id=body.get("attachmentId"),
            inline_data=None if body.get("attachmentId") else body.get("data"),
        )
    for child in part.get("parts") or []:
        yield from _attachments(child)


@dataclass(frozen=True)
class HistoryPage:
    #: Messages added, or whose labels changed: they may match the queries now, or not.
    touched: list[str]
    deleted: list[str]
    next_page_token: str | None
    history_id: str
    #: The id of the page's last record: the history after it is the rest, whatever the
    #: page token (a tick that stops here starts the next from it); None on an empty page.
    last_record_id: str | None


def _decode(data: str) -> bytes:
    # Gmail's base64url, with or without its padding.
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class GmailClient:
    def __init__(
        self,
        service: Any,
        batch_uri: str,
        num_retries: int = 5,
        credentials_name: str = "the Google credentials",
    ) -> None:
        self._users = service.users()
        self._messages = self._users.messages()
        self._calls = GoogleCalls(num_retries, credentials_name, _CREDENTIALS_VARIABLE)
        self.batch_uri = batch_uri

    @classmethod
    def connect(
        cls,
        credentials_file: Path,
        subject: str | None = None,
        api_endpoint: str | None = None,
        num_retries: int = 5,
    ) -> GmailClient:
        """Read the mailbox of ``subject`` with a service account (domain-wide delegation),
        or the owner's with an OAuth authorized-user token file."""
        if subject is None and is_service_account_key(credentials_file):
            raise ConfigError(
                f"{credentials_file}: a service account reads a mailbox only by domain-wide delegation; "
                "set PGDATAHUB_GMAIL_SUBJECT to the address of the mailbox to read"
            )
        credentials = load_credentials(credentials_file, GMAIL_SCOPES, subject)
        return cls(
            build_service("gmail", "v1", credentials, api_endpoint),
            batch_uri_for(api_endpoint),
            num_retries=num_retries,
            credentials_name=str(credentials_file),
        )

    @classmethod
    def connect_to_emulator(
        cls, access_token: str, api_endpoint: str | None, num_retries: int = 5
    ) -> GmailClient:
        """A client that sends a plain access token, never refreshed, to a Gmail emulator;
        production always uses a credentials file."""
        credentials = emulator_credentials(access_token, api_endpoint, "Gmail", "PGDATAHUB_GMAIL")
        return cls(
            build_service("gmail", "v1", credentials, api_endpoint),
            batch_uri_for(api_endpoint),
            num_retries=num_retries,
            credentials_name="PGDATAHUB_GMAIL_ACCESS_TOKEN",
        )

    @classmethod
    def from_settings(cls, settings: GmailSettings) -> GmailClient:
        """The client the settings ask for: an emulator's plain token, or a credentials file."""
        if settings.access_token is not None:
            return cls.connect_to_emulator(settings.access_token, settings.api_endpoint, settings.num_retries)
        if settings.credentials_file is None:
            raise ConfigError("Gmail is not configured: set PGDATAHUB_GMAIL_CREDENTIALS")
        return cls.connect(
            settings.credentials_file, settings.subject, settings.api_endpoint, settings.num_retries
        )

    def _execute(self, request: Any) -> Any:
        try:
            return self._calls.send(request)
        except HttpError as error:
            raise GmailError(f"Gmail answered {error.status_code}: {error.reason}") from error

    def history_id(self) -> str:
        """The mailbox's history id now."""
        return str(self._execute(self._users.getProfile(userId=_USER))["historyId"])

    def list_page(
        self, query: str, page_token: str | None = None, page_size: int = PAGE_SIZE
    ) -> tuple[list[str], str | None]:
        """One page of the ids the search finds (trash and spam left out), newest first, and
        the token of the next page (None after the last)."""
        page = self._execute(
            self._messages.list(userId=_USER, q=query, maxResults=page_size, pageToken=page_token)
        )
        return [m["id"] for m in page.get("messages", [])], page.get("nextPageToken") or None

    def list_ids(self, query: str) -> list[str]:
        """The ids of every message the search finds, all pages."""
        ids: list[str] = []
        page_token = None
        while True:
            page, page_token = self.list_page(query, page_token)
            ids += page
            if page_token is None:
                return ids

    def messages(self, ids: Sequence[str]) -> dict[str, GmailMessage | None]:
        """Each message (format ``full``: headers, parts, attachment ids), fetched in
        batches; None for a message that is gone."""
        found: dict[str, GmailMessage | None] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            requests = {
                i: self._messages.get(userId=_USER, id=i, format="full") for i in dict.fromkeys(chunk)
            }
            answers = self._calls.send_batch(requests, self.batch_uri)
            for message_id, answer in answers.items():
                if isinstance(answer, HttpError):
                    if answer.status_code != 404:
                        raise GmailError(f"Gmail answered {answer.status_code}: {answer.reason}") from answer
                    found[message_id] = None
                else:
                    found[message_id] = GmailMessage.from_api(answer)
        return found

    def message(self, message_id: str) -> GmailMessage:
        request = self._messages.get(userId=_USER, id=message_id, format="full")
        try:
            return GmailMessage.from_api(self._calls.send(request))
        except HttpError as error:
            if error.status_code == 404:
                raise FileNotFoundError(f"{message_id}: no such message in the mailbox") from None
            raise GmailError(f"Gmail answered {error.status_code}: {error.reason}") from error

    def history(
        self, start_history_id: str, page_token: str | None = None, page_size: int = PAGE_SIZE
    ) -> HistoryPage:
        """A page of the mailbox's history since ``start_history_id``."""
        request = self._users.history().list(
            userId=_USER, startHistoryId=start_history_id, maxResults=page_size, pageToken=page_token
        )
        try:
            response = self._calls.send(request)
        except HttpError as error:
            if error.status_code == 404:
                raise HistoryTooOld(f"Gmail no longer keeps the history since {start_history_id}") from None
            raise GmailError(f"Gmail answered {error.status_code}: {error.reason}") from error
        touched: list[str] = []
        deleted: list[str] = []
        records = response.get("history", [])
        for record in records:
            for key, into in (
                ("messagesAdded", touched),
                ("labelsAdded", touched),
                ("labelsRemoved", touched),
                ("messagesDeleted", deleted),
            ):
                into += [entry["message"]["id"] for entry in record.get(key, [])]
        last_record_id = str(records[-1]["id"]) if records else None
        return HistoryPage(
            touched, deleted, response.get("nextPageToken"), str(response["historyId"]), last_record_id
        )

    def download(self, message_id: str, part_id: str, target: BinaryIO, display_name: str) -> str:
        """Write one attachment into ``target``; returns its sha256. The message is read
        again first: its attachment ids are valid for one fetch of it only."""
        message = self.message(message_id)
        attachment = next((a for a in message.attachments if a.part_id == part_id), None)
        if attachment is None:
            raise FileNotFoundError(f"{display_name}: the message has no attachment {part_id} any more")
        data = attachment.inline_data
        if data is None:
            request = self._messages.attachments().get(
                userId=_USER, messageId=message_id, id=attachment.attachment_id
            )
            try:
                data = str(self._calls.send(request).get("data", ""))
            except HttpError as error:
                raise FileImportError(
                    display_name, f"Gmail answered {error.status_code}: {error.reason}"
                ) from None
        try:
            content = _decode(data)
        except (binascii.Error, ValueError):
            raise FileImportError(display_name, "Gmail sent an attachment that is not valid base64") from None
        target.write(content)
        return hashlib.sha256(content).hexdigest()


def batch_uri_for(api_endpoint: str | None) -> str:
    """The batch endpoint beside ``api_endpoint`` (an emulator's, a proxy's), else Google's."""
    if not api_endpoint:
        return GOOGLE_BATCH_URI
    return urllib.parse.urljoin(
        api_endpoint if api_endpoint.endswith("/") else api_endpoint + "/", "batch/gmail/v1"
    )
