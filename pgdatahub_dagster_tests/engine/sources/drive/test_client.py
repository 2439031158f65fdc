"""The Drive client against the project's Drive test server, over real HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import pytest

from pgdatahub_dagster.engine.errors import ConfigError, FileImportError
from pgdatahub_dagster.engine.sources.drive import (
    CredentialsRefused,
    DriveClient,
    DriveError,
    InvalidPageToken,
)
from pgdatahub_dagster.engine.sources.drive.client import load_credentials
from pgdatahub_dagster.testing.drive_server import DriveTestServer
from pgdatahub_dagster_tests.files import write_xlsx


def test_only_the_readonly_scope_is_requested(drive_credentials: Path) -> None:
    credentials = load_credentials(drive_credentials)
    assert credentials.scopes == ["https://www.googleapis.com/auth/drive.readonly"]


def test_bad_credentials_fail_without_showing_secrets(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"type": "mystery", "private_key": "SECRET-KEY-MATERIAL"}))
    with pytest.raises(ConfigError) as failure:
        load_credentials(path)
    assert "SECRET-KEY-MATERIAL" not in str(failure.value)
    assert str(path) in str(failure.value)


def test_downloads_stream_in_bounded_chunks_and_hash_on_the_way(
    drive_server: DriveTestServer, client: DriveClient
) -> None:
    root = drive_server.add_folder("root")
    content = random.Random(1).randbytes(1024 * 1024 + 17)
    file_id = drive_server.add_file("big.csv", root, content)
    drive_server.reset_request_log()
    target = io.BytesIO()
    sha256 = client.download(client.get(file_id), target, "big.csv")
    assert target.getvalue() == content
    assert sha256 == hashlib.sha256(content).hexdigest()
    # 256 KiB chunks: five ranged requests, never the whole file in one response.
    assert drive_server.request_count(path_contains=file_id) - 1 == 5


def test_rate_limits_and_server_errors_are_retried(
    drive_server: DriveTestServer, client: DriveClient
) -> None:
    root = drive_server.add_folder("root")
    file_id = drive_server.add_file("a.csv", root, b"n\n1\n")
    for kind in ("429", "503", "403_rate"):
        drive_server.inject_fault(kind, count=1)
    assert [item.name for item in client.list_children([root])] == ["a.csv"]
    drive_server.inject_fault("503", count=2, path_contains="alt=media")
    assert (
        client.download(client.get(file_id), io.BytesIO(), "a.csv") == hashlib.sha256(b"n\n1\n").hexdigest()
    )
    assert drive_server.faults_served == {"429": 1, "503": 3, "403_rate": 1}


def test_a_connection_dropped_mid_body_resumes(drive_server: DriveTestServer, client: DriveClient) -> None:
    root = drive_server.add_folder("root")
    content = random.Random(2).randbytes(600 * 1024)
    file_id = drive_server.add_file("a.csv", root, content)
    drive_server.inject_fault("drop", count=2, path_contains="alt=media")
    target = io.BytesIO()
    client.download(client.get(file_id), target, "a.csv")
    assert target.getvalue() == content
    assert drive_server.faults_served["drop"] == 2


def test_google_sheets_are_exported_as_xlsx(
    drive_server: DriveTestServer, client: DriveClient, tmp_path: Path
) -> None:
    xlsx = write_xlsx(tmp_path / "s.xlsx", {"Data": [["a"], [1]]}).read_bytes()
    root = drive_server.add_folder("root")
    sheet = client.get(drive_server.add_google_sheet("Budget", root, xlsx))
    assert sheet.is_native_sheet and sheet.md5 is None
    target = io.BytesIO()
    client.download(sheet, target, "Budget")
    assert target.getvalue() == xlsx


def test_sheets_over_the_export_limit_fail_with_a_clear_reason(
    drive_server: DriveTestServer, client: DriveClient, tmp_path: Path
) -> None:
    drive_server.export_limit_bytes = 1000
    xlsx = write_xlsx(tmp_path / "s.xlsx", {"Data": [["a"]] + [[i] for i in range(2000)]}).read_bytes()
    root = drive_server.add_folder("root")
    sheet = client.get(drive_server.add_google_sheet("Huge", root, xlsx))
    with pytest.raises(FileImportError, match="Huge: this Google Sheet is over Drive's 10 MB export limit"):
        client.download(sheet, io.BytesIO(), "Huge")


def test_a_rejected_page_token_is_reported(drive_server: DriveTestServer, client: DriveClient) -> None:
    old = client.start_page_token()
    drive_server.add_folder("x")
    drive_server.expire_tokens_before(drive_server.current_page_token())
    with pytest.raises(InvalidPageToken):
        client.changes(old)


def test_only_a_rejected_page_token_counts_as_one(drive_server: DriveTestServer, client: DriveClient) -> None:
    token = client.start_page_token()
    # A 400 about something else, or a 404, is Drive's fault, not a reason to walk again.
    for kind in ("400", "404"):
        drive_server.inject_fault(kind, path_contains="/changes?")
        with pytest.raises(DriveError, match="Drive answered") as failure:
            client.changes(token)
        assert not isinstance(failure.value, InvalidPageToken)
    drive_server.inject_fault("410", path_contains="/changes?")
    with pytest.raises(InvalidPageToken):
        client.changes(token)


def test_refused_credentials_give_one_message_naming_the_file(
    drive_server: DriveTestServer, refused_credentials: Path
) -> None:
    """A service-account key whose token request Google refuses (the key was deleted, the
    account disabled): the real google-auth signs a real key and asks the test server."""
    client = DriveClient.connect(refused_credentials, api_endpoint=drive_server.api_endpoint, num_retries=0)
    with pytest.raises(CredentialsRefused) as failure:
        client.start_page_token()
    message = str(failure.value)
    assert message.startswith(f"{refused_credentials}: Google refused these credentials")
    assert "PGDATAHUB_DRIVE_CREDENTIALS" in message
    assert "SECRET" not in message and "PRIVATE KEY" not in message and "invalid_grant" not in message


def test_a_plain_access_token_is_for_emulators_only(drive_server: DriveTestServer) -> None:
    with pytest.raises(ConfigError, match="PGDATAHUB_DRIVE_API_ENDPOINT"):
        DriveClient.connect_to_emulator("emulator-token", api_endpoint=None)
    client = DriveClient.connect_to_emulator("emulator-token", api_endpoint=drive_server.api_endpoint)
    client.start_page_token()
    assert drive_server.request_count(path_contains="startPageToken") == 1
