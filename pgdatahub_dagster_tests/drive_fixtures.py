"""Fixtures for everything that talks to Google Drive or Gmail: the project's test servers on
127.0.0.1 and the environment the real google-api-python-client needs to reach them."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path

import googleapiclient.http
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import Resource, build

from pgdatahub_dagster.testing.drive_server import DriveTestServer
from pgdatahub_dagster.testing.gmail_server import GmailTestServer


def google_service(api: str, version: str, api_endpoint: str) -> Resource:
    """The real client for a test server, with a plain token (without explicit credentials
    the client probes the GCE metadata server)."""
    return build(
        api,
        version,
        credentials=Credentials(token="test-token"),  # type: ignore[no-untyped-call]
        static_discovery=True,
        client_options={"api_endpoint": api_endpoint},
        cache_discovery=False,
    )


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


def _reach_local_servers_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # httplib2 honours proxy variables even for 127.0.0.1.
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # The client sleeps rand() * 2**attempt seconds between retries. Shrinking rand keeps
    # the real retry loop but not the wait; the patch is scoped to googleapiclient.http.
    monkeypatch.setattr(googleapiclient.http, "random", types.SimpleNamespace(random=lambda: 0.001))


@pytest.fixture
def drive_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[DriveTestServer]:
    _reach_local_servers_fast(monkeypatch)
    with DriveTestServer() as server:
        yield server


@pytest.fixture
def gmail_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GmailTestServer]:
    _reach_local_servers_fast(monkeypatch)
    with GmailTestServer() as server:
        yield server


@pytest.fixture
def drive_credentials(tmp_path: Path) -> Path:
    """An OAuth authorized-user token file, loaded by the real google-auth code path. Its
    access token expires far in the future, so it is never refreshed against Google."""
    path = tmp_path / "drive-token.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "token": "test-access-token",
                "expiry": "2099-01-01T00:00:00Z",
                "refresh_token": "test-refresh-token",
                "client_id": "test-client.apps.googleusercontent.com",
                "client_secret": "test-client-secret",
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
    )
    return path


def write_service_account_key(path: Path, token_uri: str) -> Path:
    """A real service-account key whose token requests go to ``token_uri``. Its secrets start
    with ``SECRET`` (or are PEM), so a test can tell that none of them is shown."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test",
                "private_key_id": "SECRET-KEY-ID",
                "private_key": pem,
                "client_email": "importer@test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


@pytest.fixture
def refused_credentials(drive_server: DriveTestServer, tmp_path: Path) -> Path:
    """A real service-account key whose token requests the test server refuses, as Google
    does for a deleted key or a disabled account (``invalid_grant``)."""
    return write_service_account_key(tmp_path / "revoked.json", drive_server.token_uri)
