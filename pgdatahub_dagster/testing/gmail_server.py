"""A real HTTP server that speaks enough Gmail v1 for the real client.

Tests point ``googleapiclient.discovery.build("gmail", "v1", static_discovery=True,
client_options={"api_endpoint": server.api_endpoint})`` at it, and send batches to
:attr:`GmailTestServer.batch_uri` (the client builds its batch URL from the discovery
document's ``rootUrl``, which ``api_endpoint`` does not change). Mailbox changes and faults
are made from Python; every mutation gets a new history id and a history record.

Implemented, read-only: ``users.getProfile``, ``users.labels.list``, ``users.messages.list``
(``q``, ``labelIds``, ``includeSpamTrash``, paging), ``users.messages.get`` (``format``
minimal, metadata with ``metadataHeaders``, full with parts and attachment ids),
``users.messages.attachments.get``, ``users.history.list`` (paging, ``historyTypes``,
``labelId``; a ``startHistoryId`` older than the kept history answers 404, as Gmail does),
and the batch endpoint ``POST /batch/gmail/v1`` (``multipart/mixed``, up to 100 requests).

Like Gmail, an attachment's ``attachmentId`` differs at every fetch of its message: only the
pair message id and ``partId`` names an attachment for good.

**Search** (``q``) understands a practical subset of Gmail's syntax: terms side by side must
all match, ``OR`` (or ``{a b}``) between terms, ``-term`` negates, ``( … )`` groups, and
``"quoted phrases"``. Terms: ``from:``, ``to:``, ``cc:``, ``subject:`` (a case-insensitive
substring of that header), ``label:`` (a label's name, case-insensitive, spaces as ``-``, or
its id), ``has:attachment``, ``filename:`` (a substring of an attachment's name, so
``filename:xlsx`` finds workbooks), ``rfc822msgid:`` (the Message-ID header, exactly), and
free words or phrases (a case-insensitive substring of the subject, the body, From or To).
Anything else (``after:``, ``in:``, ``larger:`` …) is refused with 400, so a query the server
cannot judge never quietly matches nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from pgdatahub_dagster.testing.google_http import (
    STATUS_FAULTS,
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

XLSX_MIME_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SYSTEM_LABELS = ("INBOX", "SENT", "TRASH", "SPAM", "UNREAD", "STARRED", "IMPORTANT", "DRAFT")
HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
#: Gmail answers batches of more requests with 400.
MAX_BATCH_REQUESTS = 100
_API_PREFIX = "/gmail/v1/users/"
_BATCH_PATHS = ("/batch/gmail/v1", "/batch")
_MAX_PAGE_SIZE = 500
_DEFAULT_PAGE_SIZE = 100
_FIRST_HISTORY_ID = 1000
_FIRST_INTERNAL_DATE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_RECORD_KEYS = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}

_Predicate = Callable[["_Message"], bool]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"


@dataclass
class _Message:
    id: str
    thread_id: str
    labels: list[str]
    internal_date_ms: int
    headers: list[tuple[str, str]]
    body: str
    attachments: list[Attachment]
    history_id: int

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key.lower() == name.lower()), "")

    @property
    def size_estimate(self) -> int:
        headers = sum(len(k) + len(v) + 4 for k, v in self.headers)
        # Attachments travel base64-encoded: four bytes for every three.
        return headers + len(self.body.encode()) + sum(len(a.content) * 4 // 3 for a in self.attachments)

    @property
    def snippet(self) -> str:
        return " ".join(self.body.split())[:200]

    def minimal(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "threadId": self.thread_id,
            "labelIds": list(self.labels),
            "snippet": self.snippet,
            "historyId": str(self.history_id),
            "internalDate": str(self.internal_date_ms),
            "sizeEstimate": self.size_estimate,
        }

    def reference(self) -> dict[str, Any]:
        """How history records name the message."""
        return {"id": self.id, "threadId": self.thread_id, "labelIds": list(self.labels)}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@dataclass(frozen=True)
class _HistoryRecord:
    id: int
    kind: str
    message: dict[str, Any]
    label_ids: tuple[str, ...] = ()

    def resource(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"message": self.message}
        if self.kind in ("labelAdded", "labelRemoved"):
            entry["labelIds"] = list(self.label_ids)
        return {"id": str(self.id), "messages": [self.message], _RECORD_KEYS[self.kind]: [entry]}


_TOKEN = re.compile(r'\s*(?:(\()|(\))|(\{)|(\})|("[^"]*")|(-)(?=\S)|([^\s(){}"]+))')
_OPERATORS = ("from", "to", "cc", "subject", "label", "has", "filename", "rfc822msgid")


def _label_slug(name: str) -> str:
    return re.sub(r"[\s/]+", "-", name.strip().lower())


class _QueryParser(TokenParser):
    """Recursive descent over the documented subset of Gmail's search syntax::

    disjunction := conjunction ("OR" conjunction)*
    conjunction := unary+
    unary       := "-" unary | "(" disjunction ")" | "{" unary+ "}" | term
    term        := OPERATOR ":" (WORD | PHRASE) | WORD | PHRASE
    """

    def __init__(self, text: str, label_names: dict[str, str]) -> None:
        super().__init__(_TOKEN, text)
        #: label id → its name, for ``label:``.
        self._label_names = label_names

    def parse(self) -> _Predicate:
        predicate = self._disjunction()
        self._finished()
        return predicate

    def _disjunction(self) -> _Predicate:
        alternatives = [self._conjunction()]
        while self._peek() == "OR":
            self._take()
            alternatives.append(self._conjunction())
        return alternatives[0] if len(alternatives) == 1 else lambda m: any(p(m) for p in alternatives)

    def _conjunction(self) -> _Predicate:
        required = [self._unary()]
        while self._peek() not in (None, ")", "}", "OR"):
            required.append(self._unary())
        return required[0] if len(required) == 1 else lambda m: all(p(m) for p in required)

    def _unary(self) -> _Predicate:
        token = self._take()
        if token == "-":
            negated = self._unary()
            return lambda m: not negated(m)
        if token == "(":
            inner = self._disjunction()
            if self._take() != ")":
                raise QuerySyntaxError("expected ')'")
            return inner
        if token == "{":
            alternatives = []
            while self._peek() != "}":
                alternatives.append(self._unary())
            self._take()
            return lambda m: any(p(m) for p in alternatives)
        if token in (")", "}"):
            raise QuerySyntaxError(f"unexpected {token!r}")
        return self._term(token)

    def _term(self, token: str) -> _Predicate:
        operator, colon, value = token.partition(":")
        if not colon or token.startswith('"'):
            return _contains_word(token.strip('"').lower())
        operator = operator.lower()
        if operator not in _OPERATORS:
            raise QuerySyntaxError(f"unsupported search operator {operator}:")
        if not value:
            value = self._take()
        value = value.strip('"')
        wanted = value.lower()
        if operator in ("from", "to", "cc", "subject"):
            return lambda m: wanted in m.header(operator).lower()
        if operator == "label":
            return lambda m: any(
                wanted in (label.lower(), _label_slug(self._label_names.get(label, label)))
                for label in m.labels
            )
        if operator == "has":
            if wanted != "attachment":
                raise QuerySyntaxError(f"unsupported has:{value}")
            return lambda m: bool(m.attachments)
        if operator == "filename":
            return lambda m: any(wanted in a.filename.lower() for a in m.attachments)
        return lambda m: m.header("Message-ID").strip("<>") == value.strip("<>")


def _contains_word(wanted: str) -> _Predicate:
    def matches(message: _Message) -> bool:
        fields = (message.header("Subject"), message.body, message.header("From"), message.header("To"))
        return any(wanted in text.lower() for text in fields)

    return matches


@dataclass
class _Batch:
    """One multipart/mixed request: its parts' Content-IDs, request lines and headers."""

    parts: list[tuple[str, str, str, Message]] = field(default_factory=list)


def _parse_batch(content_type: str, body: bytes) -> _Batch | None:
    document = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not document.is_multipart():
        return None
    batch = _Batch()
    for part in document.iter_parts():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        request_line, _, rest = payload.partition(b"\n")
        words = request_line.decode().strip().split(" ")
        if len(words) != 3:
            return None
        headers = BytesParser(policy=HTTP).parsebytes(rest, headersonly=True)
        batch.parts.append((str(part.get("Content-ID", "")), words[0], words[1], headers))
    return batch


class GmailTestServer(GoogleTestServer):
    """One in-memory mailbox (``userId`` ``me`` or :attr:`email`) over real HTTP."""

    name = "GmailTestServer"

    def __init__(self, *, email: str = "importer@example.com", slow_seconds: float = 0.5) -> None:
        super().__init__(slow_seconds=slow_seconds)
        self.email = email
        self._messages: dict[str, _Message] = {}
        self._labels: dict[str, str] = {label: label for label in SYSTEM_LABELS}
        self._history: list[_HistoryRecord] = []
        self._history_id = _FIRST_HISTORY_ID
        self._oldest_kept_history_id = _FIRST_HISTORY_ID
        self._id_counter = 0
        self._clock_ms = _FIRST_INTERNAL_DATE_MS
        #: Each ``attachmentId`` handed out → its message id and part id.
        self._attachment_ids: dict[str, tuple[str, str]] = {}

    @property
    def api_endpoint(self) -> str:
        """Base URL for ``client_options={"api_endpoint": ...}``: Gmail's method paths carry
        ``gmail/v1/`` themselves (its discovery document has an empty servicePath)."""
        return self.base_url

    @property
    def batch_uri(self) -> str:
        return f"{self.base_url}batch/gmail/v1"

    # -- the mailbox -----------------------------------------------------------

    def add_label(self, name: str) -> str:
        with self._lock:
            label_id = f"Label_{len(self._labels) - len(SYSTEM_LABELS) + 1}"
            self._labels[label_id] = name
            return label_id

    def add_message(
        self,
        *,
        sender: str,
        to: str = "importer@example.com",
        subject: str = "",
        body: str = "",
        cc: str = "",
        labels: Sequence[str] = ("INBOX", "UNREAD"),
        attachments: Sequence[Attachment] = (),
        thread_id: str | None = None,
        rfc822_message_id: str | None = None,
    ) -> str:
        """Deliver a message; returns its id. Each delivery is a ``messageAdded`` record."""
        with self._lock:
            self._id_counter += 1
            message_id = hashlib.sha256(f"gmail-test:{self._id_counter}".encode()).hexdigest()[:16]
            self._clock_ms += 1000
            unknown = [label for label in labels if label not in self._labels]
            if unknown:
                raise ValueError(f"unknown labels {unknown}; add_label first")
            headers = [
                ("From", sender),
                ("To", to),
                *([("Cc", cc)] if cc else []),
                ("Subject", subject),
                ("Message-ID", rfc822_message_id or f"<{message_id}@mail.example.com>"),
            ]
            message = _Message(
                message_id,
                thread_id or message_id,
                list(labels),
                self._clock_ms,
                headers,
                body,
                list(attachments),
                self._next_history_id(),
            )
            self._messages[message_id] = message
            self._history.append(_HistoryRecord(message.history_id, "messageAdded", message.reference()))
            return message_id

    def delete_message(self, message_id: str) -> None:
        """Delete for good (``messages.delete``): a ``messageDeleted`` record."""
        with self._lock:
            message = self._get(message_id)
            del self._messages[message_id]
            self._history.append(
                _HistoryRecord(self._next_history_id(), "messageDeleted", message.reference())
            )

    def add_labels(self, message_id: str, labels: Sequence[str]) -> None:
        self._relabel(message_id, labels, add=True)

    def remove_labels(self, message_id: str, labels: Sequence[str]) -> None:
        self._relabel(message_id, labels, add=False)

    def trash(self, message_id: str) -> None:
        """Move to the trash: the label TRASH added (listings leave the trash out)."""
        self._relabel(message_id, ["TRASH"], add=True)

    def current_history_id(self) -> str:
        with self._lock:
            return str(self._history_id)

    def expire_history_before(self, history_id: str) -> None:
        """Forget the history before ``history_id``: older start ids are answered with 404."""
        with self._lock:
            self._oldest_kept_history_id = int(history_id)
            self._history = [r for r in self._history if r.id > int(history_id)]

    def message_ids(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    # -- internals: state --------------------------------------------------------

    def _next_history_id(self) -> int:
        # Gmail's history ids rise but are not consecutive.
        self._history_id += 7
        return self._history_id

    def _get(self, message_id: str) -> _Message:
        try:
            return self._messages[message_id]
        except KeyError:
            raise KeyError(f"no such message: {message_id}") from None

    def _relabel(self, message_id: str, labels: Sequence[str], *, add: bool) -> None:
        with self._lock:
            message = self._get(message_id)
            changed = [
                label for label in labels if (label in message.labels) != add and label in self._labels
            ]
            if not changed:
                return
            if add:
                message.labels.extend(changed)
            else:
                message.labels = [label for label in message.labels if label not in changed]
            message.history_id = self._next_history_id()
            kind = "labelAdded" if add else "labelRemoved"
            self._history.append(
                _HistoryRecord(message.history_id, kind, message.reference(), tuple(changed))
            )

    # -- internals: HTTP ---------------------------------------------------------

    def _fault(self, kind: str) -> Response:
        return fault_response(kind, "Requested entity was not found.", "Gone")

    def _answer_get(
        self, target: urllib.parse.SplitResult, query: dict[str, str], headers: Message
    ) -> Response:
        return self._dispatch(target.path, urllib.parse.parse_qs(target.query), query)

    def _answer_other(
        self, method: str, target: urllib.parse.SplitResult, headers: Message, body: bytes
    ) -> Response:
        if method == "POST" and target.path in _BATCH_PATHS:
            return self._batch(headers, body)
        return super()._answer_other(method, target, headers, body)

    def _dispatch(self, path: str, multi: dict[str, list[str]], query: dict[str, str]) -> Response:
        if not path.startswith(_API_PREFIX):
            return error(404, "notFound", f"Not Found: {path}")
        user, _, rest = path[len(_API_PREFIX) :].partition("/")
        segments = [urllib.parse.unquote(s) for s in rest.split("/")]
        if urllib.parse.unquote(user) not in ("me", self.email):
            return error(403, "forbidden", "Delegation denied for this user.")
        with self._lock:
            if segments == ["profile"]:
                return json_response(
                    {
                        "emailAddress": self.email,
                        "messagesTotal": len(self._messages),
                        "threadsTotal": len({m.thread_id for m in self._messages.values()}),
                        "historyId": str(self._history_id),
                    }
                )
            if segments == ["labels"]:
                return json_response(
                    {
                        "labels": [
                            {"id": label_id, "name": name, "type": "system" if label_id == name else "user"}
                            for label_id, name in self._labels.items()
                        ]
                    }
                )
            if segments == ["messages"]:
                return self._list_messages(multi, query)
            if segments == ["history"]:
                return self._list_history(multi, query)
            if len(segments) == 2 and segments[0] == "messages":
                return self._get_message(segments[1], multi, query)
            if len(segments) == 4 and segments[0] == "messages" and segments[2] == "attachments":
                return self._get_attachment(segments[1], segments[3])
        return error(404, "notFound", f"Not Found: {path}")

    def _page_size(self, query: dict[str, str]) -> int | None:
        raw = query.get("maxResults", str(_DEFAULT_PAGE_SIZE))
        if not raw.isdigit() or int(raw) < 1:
            return None
        return min(int(raw), _MAX_PAGE_SIZE)

    def _list_messages(self, multi: dict[str, list[str]], query: dict[str, str]) -> Response:
        q = query.get("q", "")
        try:
            predicate = _QueryParser(q, self._labels).parse() if q.strip() else None
        except QuerySyntaxError as exc:
            return invalid_parameter("q", f"Invalid query: {exc}")
        page_size = self._page_size(query)
        if page_size is None:
            return invalid_parameter("maxResults")
        label_ids = multi.get("labelIds", [])
        include_spam_trash = query.get("includeSpamTrash", "false") == "true"
        # The token is bound to everything that selects the messages.
        selection = "\n".join([q, ",".join(label_ids), str(include_spam_trash)])
        offset = page_offset(query.get("pageToken"), selection)
        if offset is None:
            return invalid_parameter("pageToken")
        matches = sorted(
            (
                m
                for m in self._messages.values()
                if (include_spam_trash or not {"SPAM", "TRASH"} & set(m.labels))
                and all(label in m.labels for label in label_ids)
                and (predicate is None or predicate(m))
            ),
            key=lambda m: (-m.internal_date_ms, m.id),
        )
        payload: dict[str, Any] = {"resultSizeEstimate": len(matches)}
        page = matches[offset : offset + page_size]
        if page:
            payload["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + page_size < len(matches):
            payload["nextPageToken"] = page_token(offset + page_size, selection)
        return json_response(payload)

    def _get_message(self, message_id: str, multi: dict[str, list[str]], query: dict[str, str]) -> Response:
        message = self._messages.get(message_id)
        if message is None:
            return error(404, "notFound", "Requested entity was not found.")
        format_ = query.get("format", "full")
        resource = message.minimal()
        if format_ == "minimal":
            return json_response(resource)
        if format_ == "metadata":
            wanted = {name.lower() for name in multi.get("metadataHeaders", [])}
            headers = [(k, v) for k, v in message.headers if not wanted or k.lower() in wanted]
            resource["payload"] = self._part("", self._top_mime_type(message), "", headers, {"size": 0})
            return json_response(resource)
        if format_ != "full":
            return invalid_parameter("format", f"Invalid format: {format_}")
        text = message.body.encode()
        text_body = {"size": len(text), "data": _b64(text)}
        if not message.attachments:
            resource["payload"] = self._part("", "text/plain", "", message.headers, text_body)
            return json_response(resource)
        parts = [
            self._part("0", "text/plain", "", [("Content-Type", "text/plain; charset=UTF-8")], text_body)
        ]
        for number, attachment in enumerate(message.attachments, start=1):
            part_id = str(number)
            # A new id at every fetch, as Gmail's are.
            self._id_counter += 1
            digest = hashlib.sha256(f"{message.id}:{part_id}:{self._id_counter}".encode()).digest()
            attachment_id = "ANGjdJ" + _b64(digest * 3).rstrip("=")
            self._attachment_ids[attachment_id] = (message.id, part_id)
            disposition = f'attachment; filename="{attachment.filename}"'
            parts.append(
                self._part(
                    part_id,
                    attachment.mime_type,
                    attachment.filename,
                    [("Content-Type", attachment.mime_type), ("Content-Disposition", disposition)],
                    {"attachmentId": attachment_id, "size": len(attachment.content)},
                )
            )
        payload = self._part("", "multipart/mixed", "", message.headers, {"size": 0})
        payload["parts"] = parts
        resource["payload"] = payload
        return json_response(resource)

    @staticmethod
    def _top_mime_type(message: _Message) -> str:
        return "multipart/mixed" if message.attachments else "text/plain"

    @staticmethod
    def _part(
        part_id: str, mime_type: str, filename: str, headers: Sequence[tuple[str, str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "partId": part_id,
            "mimeType": mime_type,
            "filename": filename,
            "headers": [{"name": k, "value": v} for k, v in headers],
            "body": body,
        }

    def _get_attachment(self, message_id: str, attachment_id: str) -> Response:
        message = self._messages.get(message_id)
        issued = self._attachment_ids.get(attachment_id)
        if message is None or issued is None or issued[0] != message_id:
            return error(404, "notFound", "Requested entity was not found.")
        attachment = message.attachments[int(issued[1]) - 1]
        return json_response(
            {"attachmentId": attachment_id, "size": len(attachment.content), "data": _b64(attachment.content)}
        )

    def _list_history(self, multi: dict[str, list[str]], query: dict[str, str]) -> Response:
        start_text = query.get("startHistoryId", "")
        if not start_text.isdigit():
            return invalid_parameter("startHistoryId", "Invalid startHistoryId")
        start = int(start_text)
        if start < self._oldest_kept_history_id:
            return error(404, "notFound", "Requested entity was not found.")
        page_size = self._page_size(query)
        if page_size is None:
            return invalid_parameter("maxResults")
        kinds = multi.get("historyTypes") or list(HISTORY_TYPES)
        if any(kind not in HISTORY_TYPES for kind in kinds):
            return invalid_parameter("historyTypes")
        label_id = query.get("labelId")
        selection = "\n".join([start_text, ",".join(sorted(kinds)), label_id or ""])
        offset = page_offset(query.get("pageToken"), selection)
        if offset is None:
            return invalid_parameter("pageToken")
        records = [
            r
            for r in self._history
            if r.id > start and r.kind in kinds and (label_id is None or label_id in r.message["labelIds"])
        ]
        payload: dict[str, Any] = {"historyId": str(self._history_id)}
        page = records[offset : offset + page_size]
        if page:
            payload["history"] = [r.resource() for r in page]
        if offset + page_size < len(records):
            payload["nextPageToken"] = page_token(offset + page_size, selection)
        return json_response(payload)

    def _batch(self, headers: Message, body: bytes) -> Response:
        batch = _parse_batch(headers.get("Content-Type", ""), body)
        if batch is None:
            return error(400, "badRequest", "Failed to parse batch request.")
        if len(batch.parts) > MAX_BATCH_REQUESTS:
            return error(400, "badRequest", f"Too many requests in batch; the limit is {MAX_BATCH_REQUESTS}.")
        boundary = f"batch_{hashlib.sha256(body).hexdigest()[:24]}"
        answer: list[bytes] = []
        for content_id, method, target, part_headers in batch.parts:
            split = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
            fault = self._begin_request(method, split.path, query, target)
            if fault in STATUS_FAULTS:
                response = self._fault(fault)
            elif not (part_headers.get("Authorization") or headers.get("Authorization") or "").startswith(
                "Bearer "
            ):
                response = error(401, "required", "Login Required.", location="Authorization")
            elif method != "GET":
                response = error(501, "notImplemented", f"GmailTestServer does not batch {method}.")
            else:
                response = self._dispatch(split.path, urllib.parse.parse_qs(split.query), query)
            head = (
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{content_id.strip('<>')}>\r\n\r\n"
                f"HTTP/1.1 {response.status} {'OK' if response.status < 300 else 'Error'}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n\r\n"
            )
            answer.append(head.encode() + response.body + b"\r\n")
        answer.append(f"--{boundary}--\r\n".encode())
        return Response(200, b"".join(answer), f"multipart/mixed; boundary={boundary}")
