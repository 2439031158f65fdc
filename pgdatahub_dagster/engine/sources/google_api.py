"""What the Google sources (Drive, Gmail) share: credentials, the API client, and one retry
policy for every call.

Every request is sent with the client's own retry loop (``num_retries``): 429, 5xx and 403
rate-limit answers back off exponentially. A connection dropped mid-answer, which that loop
does not cover, is sent again the same way. A request of a batch that got such an answer is
sent again alone, under the same loop, so batched calls follow the same policy. Credentials,
tokens and keys never appear in messages.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import google.auth.exceptions
import google.oauth2.credentials
import google_auth_httplib2
import googleapiclient.http
import httplib2
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.sources.base import SourceUnavailableError

_HTTP_TIMEOUT_SECONDS = 120
#: A connection that broke off mid-answer.
DROPPED_CONNECTION = (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout)
_T = TypeVar("_T")


class CredentialsRefused(SourceUnavailableError):
    """Google refused the credentials (revoked, expired, deleted key): nothing can be read
    until they are replaced."""


def load_credentials(path: Path, scopes: list[str], subject: str | None = None) -> Any:
    """A service-account key (acting for ``subject`` by domain-wide delegation, when given)
    or an OAuth authorized-user token file, limited to ``scopes``."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read Google credentials ({type(error).__name__})") from None
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=scopes, subject=subject
            )
        if kind == "authorized_user" or (isinstance(info, dict) and "refresh_token" in info):
            return google.oauth2.credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=scopes
            )
    except (ValueError, KeyError) as error:
        # The message of google-auth names missing fields, never their values.
        raise ConfigError(f"{path}: invalid Google credentials: {error}") from None
    raise ConfigError(f"{path}: not a service-account key or an OAuth authorized-user token file")


def is_service_account_key(path: Path) -> bool:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("type") == "service_account"


def emulator_credentials(access_token: str, api_endpoint: str | None, product: str, prefix: str) -> Any:
    """A plain access token, sent as it is and never refreshed: for emulators and tests only,
    so refused without an emulator's endpoint (``<prefix>_API_ENDPOINT``)."""
    if not api_endpoint:
        raise ConfigError(
            f"{prefix}_ACCESS_TOKEN is for {product} emulators only: set {prefix}_API_ENDPOINT "
            f"to the emulator's URL, or use {prefix}_CREDENTIALS for {product}"
        )
    return google.oauth2.credentials.Credentials(token=access_token)  # type: ignore[no-untyped-call]


def build_service(api: str, version: str, credentials: Any, api_endpoint: str | None) -> Any:
    # A socket timeout, so a hung connection fails (and is retried) instead of blocking a
    # sensor tick or a run forever.
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=_HTTP_TIMEOUT_SECONDS))
    return build(
        api,
        version,
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": api_endpoint} if api_endpoint else None,
    )


def error_entries(error: HttpError) -> list[dict[str, Any]]:
    """Every entry of the error body's ``errors`` and ``details`` lists: Google may send
    both, and googleapiclient's ``error_details`` keeps only one of them."""
    try:
        body = json.loads(error.content.decode("utf-8")).get("error", {})
    except (ValueError, AttributeError, UnicodeDecodeError):
        return []
    entries = [*(body.get("errors") or []), *(body.get("details") or [])] if isinstance(body, dict) else []
    return [entry for entry in entries if isinstance(entry, dict)]


def has_reason(error: HttpError, reason: str) -> bool:
    return any(entry.get("reason") == reason for entry in error_entries(error))


def is_retried(error: HttpError) -> bool:
    """Whether the client's retry loop retries this answer (429, 5xx, a rate-limit 403): its
    own rule, so that batched requests follow exactly the policy of every other call."""
    return bool(googleapiclient.http._should_retry_response(error.status_code, error.content))


class GoogleCalls:
    """Sends requests under the retry policy; refused credentials become one message that
    names the credentials and the variable to change, never their content."""

    def __init__(self, num_retries: int, credentials_name: str, credentials_variable: str) -> None:
        self.num_retries = num_retries
        #: Named in the message when Google refuses the credentials.
        self.credentials_name = credentials_name
        self.credentials_variable = credentials_variable

    def refused(self) -> CredentialsRefused:
        # google-auth's message may quote the token endpoint's answer: never shown.
        return CredentialsRefused(
            f"{self.credentials_name}: Google refused these credentials (revoked, expired, or the key "
            "was deleted); create a new service-account key or authorized-user token file and point "
            f"{self.credentials_variable} at it"
        )

    def authorised(self, call: Callable[[], _T]) -> _T:
        """``call()``, with refused or unrefreshable credentials raised as source faults."""
        try:
            return call()
        except google.auth.exceptions.RefreshError:
            raise self.refused() from None
        except google.auth.exceptions.TransportError:
            raise SourceUnavailableError(
                f"{self.credentials_name}: Google's token endpoint cannot be reached to refresh "
                "these credentials; check the network"
            ) from None

    def send(self, request: Any) -> Any:
        """``request.execute`` under the retry policy; an ``HttpError`` left after it is raised."""
        dropped = 0
        while True:
            try:
                return self.authorised(lambda: request.execute(num_retries=self.num_retries))
            except DROPPED_CONNECTION:
                dropped += 1
                if dropped > self.num_retries:
                    raise
                backoff(dropped)

    def send_batch(self, requests: Mapping[str, Any], batch_uri: str) -> dict[str, Any | HttpError]:
        """Every request's answer, or the ``HttpError`` it got, sent as one batch. Requests the
        batch answered with a retried status, or all of them when the batch itself failed,
        are sent again alone under the retry policy."""
        answers: dict[str, Any | HttpError] = {}
        again: list[str] = []

        def collect(request_id: str, response: Any, exception: HttpError | None) -> None:
            if exception is not None and is_retried(exception):
                again.append(request_id)
            else:
                answers[request_id] = exception if exception is not None else response

        batch = BatchHttpRequest(callback=collect, batch_uri=batch_uri)
        for request_id, request in requests.items():
            batch.add(request, request_id=request_id)
        try:
            self.authorised(batch.execute)
        except (HttpError, BatchError, *DROPPED_CONNECTION):
            answers.clear()
            again = list(requests)
        for request_id in again:
            try:
                answers[request_id] = self.send(requests[request_id])
            except HttpError as error:
                answers[request_id] = error
        return answers


def backoff(attempt: int) -> None:
    """The client's own pause before retry ``attempt``: a random share of 2**attempt seconds."""
    time.sleep(googleapiclient.http.random.random() * 2**attempt)
