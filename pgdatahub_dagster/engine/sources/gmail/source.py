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

The cursor is the mailbox's ``historyId``. A listing of every query (the first tick, or after
Gmail answered 404 because that history is too old) takes it *before* it begins, so nothing
that changes meanwhile is missed, and goes on over as many ticks as the budget asks: while it
does, the cursor is its progress (``Listing``: the query, its ``messages.list`` page token, the
ids of that page reported already), a tick reports at most ``Budget.max_files`` files and
stops at the first page after ``Budget.seconds``. Files that left are told only when it ends:
done within one tick, what it did not find; spanning ticks, every query's ids are listed once
more (ids only), files of messages no query finds count as removed, and messages found but
never reported (a page shifted by a change between ticks) are reported. Then ``users.history.list``
is read from the history id, page by page: an idle tick costs that one call. A long history is
read over several ticks within the same budget: a tick that stops leaves the id of the last
record it read as the cursor. The messages the history names are fetched in batches, and
whether each still matches a query is asked of Gmail itself (the query and ``rfc822msgid:`` of
the messages, one search per query), so the full search syntax holds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

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
    BATCH_SIZE,
    PAGE_SIZE,
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

    def _matching(
        self, messages: dict[str, GmailMessage], queries: Sequence[GmailQuery] | None = None
    ) -> dict[str, GmailQuery]:
        """The first of ``queries`` (default: all) that finds each message, asked of Gmail: the
        query restricted to the messages' ``Message-ID`` headers. A message without one that
        a search can name is looked for in the query's whole listing."""
        found: dict[str, GmailQuery] = {}
        for query in self.queries if queries is None else queries:
            left = [m for m in messages.values() if m.id not in found]
            terms = {m.id: _message_id_term(m.header("Message-ID")) for m in left}
            named = sorted({term for term in terms.values() if term is not None})
            hits: set[str] = set()
            for start in range(0, len(named), _MESSAGES_PER_SEARCH):
                either = " ".join(named[start : start + _MESSAGES_PER_SEARCH])
                hits.update(self.client.list_ids(f"({query.query}) {{{either}}}"))
            if None in terms.values():
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
        """From a history cursor, the history since it; from none, or when Gmail no longer
        keeps that history, a listing of every query, which may take several ticks: its
        progress (``Listing``) is the cursor until it ends."""
        deadline = time.monotonic() + budget.seconds
        state = json.loads(cursor) if cursor else None
        if state is None:
            return self._list(Listing(self.client.history_id()), budget, deadline, [])
        if "listing" in state:
            return self._list(Listing.from_cursor(state), budget, deadline, [])
        try:
            return self._history_changes(state["history_id"], budget, deadline)
        except HistoryTooOld as error:
            log = [f"{error}: every query is listed again"]
            return self._list(Listing(self.client.history_id()), budget, deadline, log)

    def _list(self, listing: Listing, budget: Budget, deadline: float, log: list[str]) -> Changes:
        """List on from ``listing``, a page at a time, until every query is listed or the
        tick's budget is spent (at least one page a tick, so the listing always advances)."""
        begun = listing
        found: list[SourceFile] = []
        #: Messages reported this tick: a later query that finds them again is not theirs.
        reported: set[str] = set()
        pages = 0
        while listing.query < len(self.queries):
            if pages and (len(found) >= budget.max_files or time.monotonic() > deadline):
                return Changes(found, {}, listing.to_cursor(), [*log, self._goes_on(listing, found)])
            query = self.queries[listing.query]
            # Each message is one file at least: no more of them than the files left to report.
            left = max(1, budget.max_files - len(found))
            page, next_token = self.client.list_page(
                query.query, listing.page_token, min(PAGE_SIZE, listing.skip + left)
            )
            pages += 1
            # Earlier queries listed in earlier ticks must be asked; those listed this tick
            # found what ``reported`` holds.
            asked = self.queries[: min(listing.query, begun.query + begun.resumed)]
            start = listing.skip
            while start < len(page):
                if found and len(found) >= budget.max_files:
                    listing = Listing(listing.history_id, listing.query, listing.page_token, start)
                    return Changes(found, {}, listing.to_cursor(), [*log, self._goes_on(listing, found)])
                # A batch at most, and no more messages than files left: few fetched in vain.
                end = start + min(BATCH_SIZE, max(1, budget.max_files - len(found)))
                fetched = self.client.messages([i for i in page[start:end] if i not in reported])
                present = {i: m for i, m in fetched.items() if m is not None}
                earlier = self._matching(present, asked) if asked and present else {}
                for index in range(start, min(end, len(page))):
                    message = present.get(page[index])
                    if message is None or message.id in earlier:
                        continue
                    files = self._files(message, query)
                    if found and len(found) + len(files) > budget.max_files:
                        listing = Listing(listing.history_id, listing.query, listing.page_token, index)
                        return Changes(found, {}, listing.to_cursor(), [*log, self._goes_on(listing, found)])
                    found += files
                    reported.add(message.id)
                start = end
            listing = listing.next_page(next_token)
        if begun.started:
            return self._reconciled(listing, found, log)
        # The whole listing within this tick: what it did not find has left.
        found_ids = {file.file_id for file in found}
        removed = {file_id: file_id for file_id in self._known() - found_ids}
        log.append(f"listed {len(self.queries)} Gmail queries: {len(found)} messages and attachments")
        return Changes(found, removed, _cursor(listing.history_id), log)

    def _goes_on(self, listing: Listing, found: list[SourceFile]) -> str:
        return (
            f"Gmail listing: {len(found)} messages and attachments this tick; it goes on with "
            f"the search {self.queries[listing.query].name!r} next tick"
        )

    def _reconciled(self, listing: Listing, found: list[SourceFile], log: list[str]) -> Changes:
        """The end of a listing that spanned ticks: every query's ids listed again (ids only,
        one call per 500), to remove the files of messages no query finds now and to report
        the messages found but never reported (a page that shifted while the mailbox changed
        between ticks). What changed since the listing began is in the history next."""
        listed = self._listing()
        known = self._known()
        found_ids = {file.file_id for file in found}
        missing = [m for m in listed if m not in known and m not in found_ids]
        fetched = self.client.messages(missing) if missing else {}
        for message_id, message in fetched.items():
            if message is not None:
                found += self._files(message, listed[message_id])
        removed = {file_id: file_id for file_id in known if file_id.partition(":")[0] not in listed}
        log.append(
            f"Gmail listing finished: {len(listed)} messages match the queries; "
            f"{len(found)} messages and attachments this tick, {len(removed)} files left"
        )
        return Changes(found, removed, _cursor(listing.history_id), log)

    def _history_changes(self, start: str, budget: Budget, deadline: float) -> Changes:
        """The history since ``start``, page by page, until it ends or the tick's budget is
        spent (at least one page a tick): the cursor is then the id of the last record read,
        and the next tick reads on from it. Pages are no larger than the files a tick may
        report (each record names a message at least)."""
        touched: dict[str, None] = {}
        deleted: set[str] = set()
        page_token = None
        cursor_id = start
        while True:
            page = self.client.history(start, page_token, min(PAGE_SIZE, max(1, budget.max_files)))
            touched.update(dict.fromkeys(page.touched))
            deleted.update(page.deleted)
            page_token = page.next_page_token
            if not page_token:
                cursor_id = page.history_id
                break
            cursor_id = page.last_record_id or cursor_id
            if len(touched) + len(deleted) >= budget.max_files or time.monotonic() > deadline:
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
            goes_on = f"; it goes on from history id {cursor_id} next tick" if page_token else ""
            log.append(
                f"Gmail history since {start}: {len(touched)} messages added or relabelled, "
                f"{len(deleted)} deleted; {len(matched)} match a query{goes_on}"
            )
        return Changes(found, self._with_attachments(left), _cursor(cursor_id), log)


def _cursor(history_id: str) -> str:
    return json.dumps({"history_id": history_id})


def _message_id_term(header: str) -> str | None:
    """The ``rfc822msgid:`` term that finds the message with this ``Message-ID``; quoted when
    it holds characters the search syntax gives a meaning (braces, parentheses); None when no
    term can name it (no header, or a double quote or a space inside it)."""
    value = header.strip("<> ")
    if not value or '"' in value or any(c.isspace() for c in value):
        return None
    return f'rfc822msgid:"{value}"' if set(value) & set("(){}") else f"rfc822msgid:{value}"


@dataclass(frozen=True)
class Listing:
    """How far a listing of every query has come: the cursor while it spans ticks."""

    #: The mailbox's history id taken before the listing began: the history read from it
    #: once the listing ends holds everything that changed while it went on.
    history_id: str
    #: The query being listed (its index in the mapping's order); ``len(queries)``: every
    #: query listed, the final check of what left is still to do.
    query: int = 0
    #: The ``messages.list`` page of that query to list next; None: its first page.
    page_token: str | None = None
    #: Ids of that page reported already (a tick's files ran out inside it).
    skip: int = 0

    @property
    def resumed(self) -> bool:
        """Whether the current query's listing began in an earlier tick."""
        return (self.page_token, self.skip) != (None, 0)

    @property
    def started(self) -> bool:
        """Whether the listing began in an earlier tick."""
        return self.query > 0 or self.resumed

    def next_page(self, page_token: str | None) -> Listing:
        if page_token is None:
            return Listing(self.history_id, self.query + 1)
        return Listing(self.history_id, self.query, page_token)

    def to_cursor(self) -> str:
        progress = {"query": self.query, "page_token": self.page_token, "skip": self.skip}
        return json.dumps({"history_id": self.history_id, "listing": progress})

    @classmethod
    def from_cursor(cls, state: dict[str, Any]) -> Listing:
        progress = state["listing"]
        return cls(
            str(state["history_id"]), int(progress["query"]), progress["page_token"], int(progress["skip"])
        )
