"""Gmail as a source: messages, and their spreadsheet attachments, as files.

What a Gmail search of the ``gmail:`` block of the folder mapping finds becomes files the
engine imports like any other:

- each **message** is a file ``gmail/messages/<message id>`` (file id: the message id) whose
  content is a one-row table (``MESSAGE_COLUMNS``), loaded into ``gmail_messages`` keyed by
  ``id``. A message deleted, trashed, or relabelled out of every query is a file that left:
  ``on_delete`` applies. Its version is Gmail's history id of the message, which rises at
  every change of its labels.
- each **spreadsheet attachment** (``SPREADSHEET_SUFFIXES``) is a file
  ``gmail/<entry>/<message id>-<file name>`` (file id: ``<message id>:<part id>``), loaded into
  the entry's table. Gmail's ``attachmentId`` is new at every fetch of a message, so the
  part id, fixed for the message's life, names the attachment. The same workbook mailed twice
  is two files with the same rows: the second adds none.

A message that several queries find belongs to the first of them in the mapping's order.

The cursor is the mailbox's ``historyId``. The first tick takes it *before* listing every
query, so nothing that arrives during the listing is missed; later ticks read
``users.history.list`` from it, page by page: an idle tick costs that one call. The messages
the history names are fetched in batches, and whether each still matches a query is asked of
Gmail itself (the query and ``rfc822msgid:`` of the messages, one search per query), so the
full search syntax holds. When Gmail answers 404 (the history id is too old), every query is
listed again and files no longer found count as removed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pgdatahub_dagster.engine.mapping import GMAIL_MESSAGES, GMAIL_ROOT, GmailQuery
from pgdatahub_dagster.engine.sources.base import (
    Budget,
    Changes,
    LocalCopy,
    Source,
    SourceFile,
    SourceState,
)
from pgdatahub_dagster.engine.sources.gmail.client import (
    GmailAttachment,
    GmailClient,
    GmailMessage,
    HistoryTooOld,
)

MESSAGE_COLUMNS = (
    "id",
    "thread_id",
    "internal_date",
    "from",
    "to",
    "cc",
    "subject",
    "snippet",
    "label_ids",
    "size",
    "attachment_names",
    "has_spreadsheet_attachments",
)
#: Attachments imported as spreadsheets (plain ``.txt`` attachments are too often prose).
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xlsb", ".xls", ".ods", ".csv", ".tsv"})
#: Messages whose membership one search asks about (``{rfc822msgid:a rfc822msgid:b …}``).
_MESSAGES_PER_SEARCH = 20


def is_spreadsheet(attachment: GmailAttachment) -> bool:
    return PurePosixPath(attachment.filename).suffix.lower() in SPREADSHEET_SUFFIXES


def message_row(message: GmailMessage) -> dict[str, str]:
    """The message's row of ``gmail_messages``, as text (the reader gives it its types)."""
    return {
        "id": message.id,
        "thread_id": message.thread_id,
        "internal_date": message.internal_date.strftime("%Y-%m-%d %H:%M:%S"),
        "from": message.header("From"),
        "to": message.header("To"),
        "cc": message.header("Cc"),
        "subject": message.header("Subject"),
        "snippet": message.snippet,
        "label_ids": ",".join(message.label_ids),
        "size": str(message.size),
        "attachment_names": ", ".join(a.filename for a in message.attachments),
        "has_spreadsheet_attachments": str(any(is_spreadsheet(a) for a in message.attachments)).lower(),
    }


def _file_name(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_")


class GmailSource(Source):
    name = "gmail"

    def __init__(
        self, client: GmailClient, queries: Sequence[GmailQuery], state: SourceState | None = None
    ) -> None:
        self.client = client
        self.queries = list(queries)
        self.state = state
        #: Messages met so far, so that fetching one asks Gmail nothing more.
        self._messages: dict[str, GmailMessage] = {}

    # -- files ---------------------------------------------------------------

    def _files(self, message: GmailMessage, query: GmailQuery) -> list[SourceFile]:
        """The message's file and its spreadsheet attachments' files."""
        self._messages[message.id] = message
        version, modified = message.history_id, message.internal_date
        files = [SourceFile(message.id, f"{GMAIL_ROOT}/{GMAIL_MESSAGES}/{message.id}", version, modified)]
        for attachment in message.attachments:
            if is_spreadsheet(attachment):
                path = f"{GMAIL_ROOT}/{query.name}/{message.id}-{_file_name(attachment.filename)}"
                files.append(SourceFile(f"{message.id}:{attachment.part_id}", path, version, modified))
        return files

    def list_files(self) -> Iterator[SourceFile]:
        found = self._listing()
        messages = self.client.messages(list(found))
        for message_id, query in found.items():
            message = messages.get(message_id)
            if message is not None:
                yield from self._files(message, query)

    def get_file(self, file_id: str) -> SourceFile:
        message_id = file_id.partition(":")[0]
        message = self.client.message(message_id)
        query = self._matching({message_id: message}).get(message_id)
        if query is None:
            raise FileNotFoundError(
                f"{message_id}: the message no longer matches any Gmail query of the mapping"
            )
        file = next((f for f in self._files(message, query) if f.file_id == file_id), None)
        if file is None:
            raise FileNotFoundError(f"{file_id}: the message has no such spreadsheet attachment")
        return file

    def folders(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        yield GMAIL_ROOT, (GMAIL_ROOT, GMAIL_MESSAGES)
        for query in self.queries:
            yield GMAIL_ROOT, (GMAIL_ROOT, query.name)

    def root_name_for(self, file: SourceFile) -> str:
        return GMAIL_ROOT

    @contextmanager
    def fetch(self, file: SourceFile) -> Iterator[LocalCopy]:
        message_id, _, part_id = file.file_id.partition(":")
        suffix = PurePosixPath(file.path).suffix.lower() if part_id else ".csv"
        handle, name = tempfile.mkstemp(prefix="pgdatahub-gmail-", suffix=suffix)
        try:
            with os.fdopen(handle, "wb") as target:
                if part_id:
                    sha256 = self.client.download(message_id, part_id, target, file.path)
                else:
                    content = self._message_csv(message_id)
                    target.write(content)
                    sha256 = hashlib.sha256(content).hexdigest()
            yield LocalCopy(Path(name), sha256)
        finally:
            os.unlink(name)

    def _message_csv(self, message_id: str) -> bytes:
        message = self._messages.get(message_id) or self.client.message(message_id)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=MESSAGE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerow(message_row(message))
        return text.getvalue().encode()

    # -- finding changes -----------------------------------------------------

    def _listing(self) -> dict[str, GmailQuery]:
        """Every message a query finds, with the first query that finds it."""
        found: dict[str, GmailQuery] = {}
        for query in self.queries:
            for message_id in self.client.list_ids(query.query):
                found.setdefault(message_id, query)
        return found

    def _matching(self, messages: dict[str, GmailMessage]) -> dict[str, GmailQuery]:
        """The first query that finds each message, asked of Gmail: the query restricted to
        the messages' ``Message-ID`` headers. A message without one is looked for in the
        query's whole listing."""
        found: dict[str, GmailQuery] = {}
        for query in self.queries:
            left = [m for m in messages.values() if m.id not in found]
            headers = sorted({m.header("Message-ID").strip("<> ") for m in left} - {""})
            hits: set[str] = set()
            for start in range(0, len(headers), _MESSAGES_PER_SEARCH):
                either = " ".join(f"rfc822msgid:{h}" for h in headers[start : start + _MESSAGES_PER_SEARCH])
                hits.update(self.client.list_ids(f"({query.query}) {{{either}}}"))
            if any(not m.header("Message-ID").strip("<> ") for m in left):
                hits.update(self.client.list_ids(query.query))
            for message in left:
                if message.id in hits:
                    found[message.id] = query
        return found

    def _known(self) -> set[str]:
        return self.state.known_file_ids() if self.state is not None else set()

    def _with_attachments(self, message_ids: Iterable[str]) -> dict[str, str]:
        """The files of messages that left: the message and every attachment reported."""
        gone = set(message_ids)
        removed = {message_id: f"{GMAIL_ROOT}/{GMAIL_MESSAGES}/{message_id}" for message_id in gone}
        for file_id in self._known():
            message_id, _, part_id = file_id.partition(":")
            if part_id and message_id in gone:
                removed[file_id] = file_id
        return removed

    def changes(self, cursor: str | None, budget: Budget) -> Changes:
        # The budget is not applied: the cursor moves only after the history's last page, and
        # a listing is done whole (a mailbox's listing is a few calls per 500 messages).
        start = json.loads(cursor)["history_id"] if cursor else None
        if start is not None:
            try:
                return self._history_changes(start)
            except HistoryTooOld as error:
                return self._full_listing([f"{error}: every query is listed again"])
        return self._full_listing([])

    def _full_listing(self, log: list[str]) -> Changes:
        # Taken before the listing: what arrives meanwhile is in the next tick's history.
        history_id = self.client.history_id()
        found = list(self.list_files())
        found_ids = {file.file_id for file in found}
        removed = {file_id: file_id for file_id in self._known() - found_ids}
        log.append(f"listed {len(self.queries)} Gmail queries: {len(found)} messages and attachments")
        return Changes(found, removed, _cursor(history_id), log)

    def _history_changes(self, start: str) -> Changes:
        touched: dict[str, None] = {}
        deleted: set[str] = set()
        page_token = None
        while True:
            page = self.client.history(start, page_token)
            touched.update(dict.fromkeys(page.touched))
            deleted.update(page.deleted)
            page_token = page.next_page_token
            if not page_token:
                break
        log: list[str] = []
        fetched = self.client.messages([m for m in touched if m not in deleted]) if touched else {}
        present = {message_id: m for message_id, m in fetched.items() if m is not None}
        matched = self._matching(present) if present else {}
        found = [
            file for message_id, query in matched.items() for file in self._files(present[message_id], query)
        ]
        left = deleted | (set(fetched) - set(matched))
        if touched or deleted:
            log.append(
                f"Gmail history since {start}: {len(touched)} messages added or relabelled, "
                f"{len(deleted)} deleted; {len(matched)} match a query"
            )
        return Changes(found, self._with_attachments(left), _cursor(page.history_id), log)


def _cursor(history_id: str) -> str:
    return json.dumps({"history_id": history_id})
