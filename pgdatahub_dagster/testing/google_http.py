"""What the Google API test servers share: real HTTP on 127.0.0.1, Google's error bodies,
page tokens bound to their query, fault injection and a log of every request.

A server subclasses :class:`GoogleTestServer` and answers requests in ``_answer``; the
handler here reads each request, claims the first queued fault that matches it, and writes
the answer (or the fault) back over a kept-alive HTTP/1.1 connection, as googleapis.com does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast

#: ``slow`` delays the answer, ``drop`` promises the whole body and sends half of it before
#: hanging up; the others answer with that status (``403_rate``: a rate-limit 403).
FAULT_KINDS = frozenset({"429", "503", "403_rate", "400", "404", "410", "slow", "drop"})
#: The faults that replace the answer with an error body.
STATUS_FAULTS = frozenset({"429", "503", "403_rate", "400", "404", "410"})
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    410: "GONE",
    416: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_response(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode())


def error(
    status: int,
    reason: str,
    message: str,
    *,
    domain: str = "global",
    location: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Response:
    """An error body as Google's JSON APIs send it."""
    detail: dict[str, str] = {"domain": domain, "reason": reason, "message": message}
    if location is not None:
        detail["locationType"] = "parameter"
        detail["location"] = location
    body: dict[str, Any] = {
        "code": status,
        "message": message,
        "errors": [detail],
        "status": STATUS_NAMES[status],
    }
    if details is not None:
        # Newer answers carry google.rpc details too, listed before ``errors``.
        body = {"code": status, "message": message, "details": details, **body}
    return json_response({"error": body}, status)


def invalid_parameter(name: str, message: str = "Invalid Value") -> Response:
    return error(400, "invalid", message, location=name)


def fault_response(kind: str, not_found: str, gone: str) -> Response:
    """The answer of a status fault; ``not_found`` and ``gone`` word the 404 and 410."""
    if kind == "429":
        return error(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    if kind == "503":
        return error(503, "backendError", "Backend Error")
    if kind == "400":
        return error(400, "badRequest", "Bad Request")
    if kind == "404":
        return error(404, "notFound", not_found)
    if kind == "410":
        return error(410, "deleted", gone, location="pageToken")
    return error(403, "userRateLimitExceeded", "User Rate Limit Exceeded", domain="usageLimits")


def query_digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def page_token(offset: int, query: str) -> str:
    """A listing's next page token, bound to its query, so that a token replayed with
    another query fails loudly instead of skipping rows."""
    return base64.urlsafe_b64encode(json.dumps([offset, query_digest(query)]).encode()).decode()


def page_offset(token: str | None, query: str) -> int | None:
    """Where a listing resumes: 0 without a token, None for a token that is not one of this
    query's."""
    if not token:
        return 0
    try:
        offset, digest = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError):
        return None
    if digest != query_digest(query) or not isinstance(offset, int) or offset < 0:
        return None
    return offset


class QuerySyntaxError(ValueError):
    """A query (or ``fields`` selector) outside the grammar a server accepts."""


class TokenParser:
    """The token cursor of a recursive-descent query parser: ``pattern`` matches one token
    (leading blanks included) in one of its groups."""

    def __init__(self, pattern: re.Pattern[str], text: str) -> None:
        self._tokens: list[str] = []
        position = 0
        while text[position:].strip():
            match = pattern.match(text, position)
            if match is None:
                raise QuerySyntaxError(f"unexpected input at offset {position}")
            self._tokens.append(match.group(match.lastindex or 0))
            position = match.end()
        self._position = 0

    def _peek(self) -> str | None:
        return self._tokens[self._position] if self._position < len(self._tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise QuerySyntaxError("unexpected end of query")
        self._position += 1
        return token

    def _finished(self) -> None:
        """Raise unless every token was read."""
        if self._peek() is not None:
            raise QuerySyntaxError(f"unexpected {self._peek()!r}")


@dataclass
class _Fault:
    kind: str
    remaining: int
    path_contains: str | None


class _HTTPServer(ThreadingHTTPServer):
    def __init__(self, owner: GoogleTestServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps httplib2's pooled connection alive between requests the
    # way googleapis.com does; every response therefore sets Content-Length.
    protocol_version = "HTTP/1.1"

    @property
    def _owner(self) -> GoogleTestServer:
        return cast(_HTTPServer, self.server).owner

    def setup(self) -> None:
        super().setup()
        self._owner._track_connection(self.connection, open_=True)

    def finish(self) -> None:
        self._owner._track_connection(self.connection, open_=False)
        super().finish()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # request_log is the supported record; stderr noise would drown tests.
        pass

    def _serve(self, method: str) -> None:
        owner = self._owner
        target = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(target.query, keep_blank_values=True))
        owner._count_round_trip()
        fault = owner._begin_request(method, target.path, query, self.path)
        body = b""
        if method != "GET":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if fault == "slow":
            time.sleep(owner.slow_seconds)
        if fault in STATUS_FAULTS:
            response = owner._fault(fault)
        elif method == "POST" and target.path == "/token":
            # The OAuth token endpoint: every refresh is refused, as for a revoked grant.
            response = json_response(
                {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, 400
            )
        elif not (self.headers.get("Authorization") or "").startswith("Bearer "):
            response = error(401, "required", "Login Required.", location="Authorization")
        elif method == "GET":
            response = owner._answer_get(target, query, self.headers)
        else:
            response = owner._answer_other(method, target, self.headers, body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault == "drop":
            # Promise the whole body, deliver half, then hang up: what a reset
            # connection looks like to the client mid-answer.
            self.wfile.write(response.body[: len(response.body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(response.body)


class GoogleTestServer:
    """An in-memory Google API served over real HTTP, with hooks to misbehave and a log of
    what it was asked. Subclasses answer authorised requests in ``_answer_get`` and
    ``_answer_other`` (taking ``self._lock`` themselves) and word their faults in ``_fault``."""

    #: The thread's name, for debugging hangs.
    name = "GoogleTestServer"

    def __init__(self, *, slow_seconds: float = 0.5) -> None:
        self.slow_seconds = slow_seconds
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._faults_served: Counter[str] = Counter()
        self._request_log: list[tuple[str, str, dict[str, str]]] = []
        self._round_trips = 0
        self._connections: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _answer_get(
        self, target: urllib.parse.SplitResult, query: dict[str, str], headers: Message
    ) -> Response:
        """The answer to an authorised GET."""
        raise NotImplementedError

    def _answer_other(
        self, method: str, target: urllib.parse.SplitResult, headers: Message, body: bytes
    ) -> Response:
        """The answer to an authorised request of another method: none is implemented."""
        return error(501, "notImplemented", f"{self.name} does not implement {method}.")

    def _fault(self, kind: str) -> Response:
        return fault_response(kind, "Not Found", "Gone")

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already running")
        self._server = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # shutdown() waits for the loop's next poll; the default 0.5 s
            # would dominate teardown of every test.
            kwargs={"poll_interval": 0.02},
            name=self.name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        # Handler threads sit in recv() on httplib2's kept-alive connections;
        # shutting the sockets down lets them finish instead of lingering.
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # The client may have hung up already; that is the goal anyway.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running; call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def token_uri(self) -> str:
        """An OAuth token endpoint that refuses every refresh (``invalid_grant``), as Google's
        does for revoked or expired credentials."""
        return f"{self.base_url}token"

    # -- fault injection and observation -----------------------------------

    def inject_fault(self, kind: str, count: int = 1, path_contains: str | None = None) -> None:
        """Queue ``count`` faults for requests whose target contains a string.

        ``path_contains`` is matched against the raw request target, query
        string included, so ``"alt=media"`` selects downloads. Faults are
        consumed in the order they were injected.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(_Fault(kind, count, path_contains))

    @property
    def faults_served(self) -> Counter[str]:
        with self._lock:
            return Counter(self._faults_served)

    @property
    def request_log(self) -> list[tuple[str, str, dict[str, str]]]:
        """``(method, path, query)`` per request received, oldest first."""
        with self._lock:
            return list(self._request_log)

    def request_count(self, method: str | None = None, path_contains: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for logged_method, path, _ in self._request_log
                if method in (None, logged_method) and (path_contains is None or path_contains in path)
            )

    @property
    def round_trips(self) -> int:
        """HTTP requests received (a batch of many requests is one)."""
        with self._lock:
            return self._round_trips

    def reset_request_log(self) -> None:
        with self._lock:
            self._request_log.clear()
            self._round_trips = 0

    # -- internals -------------------------------------------------------------

    def _track_connection(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _count_round_trip(self) -> None:
        with self._lock:
            self._round_trips += 1

    def _begin_request(self, method: str, path: str, query: dict[str, str], target: str) -> str | None:
        """Log the request and claim the first queued fault that matches it."""
        with self._lock:
            self._request_log.append((method, path, dict(query)))
            for fault in self._faults:
                if fault.path_contains is None or fault.path_contains in target:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    self._faults_served[fault.kind] += 1
                    return fault.kind
        return None
