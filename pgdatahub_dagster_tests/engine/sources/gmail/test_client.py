"""The Gmail client's credentials: the read-only scope, delegation, refusals without secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.sources.gmail import GmailClient
from pgdatahub_dagster.engine.sources.gmail.client import GMAIL_SCOPES, batch_uri_for
from pgdatahub_dagster.engine.sources.google_api import CredentialsRefused, load_credentials
from pgdatahub_dagster.testing.gmail_server import GmailTestServer
from pgdatahub_dagster_tests.drive_fixtures import write_service_account_key


def test_only_the_readonly_scope_for_the_delegated_mailbox(tmp_path: Path) -> None:
    key = write_service_account_key(tmp_path / "key.json", "http://127.0.0.1:9/token")
    credentials = load_credentials(key, GMAIL_SCOPES, subject="boss@example.com")
    assert GMAIL_SCOPES == ["https://www.googleapis.com/auth/gmail.readonly"]
    assert credentials.scopes == GMAIL_SCOPES
    assert credentials._subject == "boss@example.com"


def test_a_service_account_without_a_subject_is_refused_by_name(tmp_path: Path) -> None:
    key = write_service_account_key(tmp_path / "key.json", "http://127.0.0.1:9/token")
    with pytest.raises(ConfigError) as failure:
        GmailClient.connect(key)
    assert "PGDATAHUB_GMAIL_SUBJECT" in str(failure.value) and str(key) in str(failure.value)
    assert "SECRET" not in str(failure.value) and "PRIVATE KEY" not in str(failure.value)


def test_refused_credentials_give_one_message_naming_the_file(
    gmail_server: GmailTestServer, tmp_path: Path
) -> None:
    key = write_service_account_key(tmp_path / "revoked.json", gmail_server.token_uri)
    client = GmailClient.connect(key, subject="boss@example.com", api_endpoint=gmail_server.api_endpoint)
    with pytest.raises(CredentialsRefused) as failure:
        client.history_id()
    message = str(failure.value)
    assert str(key) in message and "PGDATAHUB_GMAIL_CREDENTIALS" in message
    assert "SECRET" not in message and "invalid_grant" not in message


def test_an_emulator_token_needs_an_emulator() -> None:
    with pytest.raises(ConfigError, match="PGDATAHUB_GMAIL_API_ENDPOINT"):
        GmailClient.connect_to_emulator("token", None)


def test_the_batch_endpoint_sits_beside_the_api_endpoint() -> None:
    assert batch_uri_for(None) == "https://gmail.googleapis.com/batch/gmail/v1"
    assert batch_uri_for("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/batch/gmail/v1"
    assert batch_uri_for("https://proxy.example/google") == "https://proxy.example/google/batch/gmail/v1"
