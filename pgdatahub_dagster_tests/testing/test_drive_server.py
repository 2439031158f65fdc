"""Drive the fake Drive server with the real google-api-python-client."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload

from pgdatahub_dagster.testing.drive_server import (
    FOLDER_MIME_TYPE,
    SHEET_MIME_TYPE,
    SHORTCUT_MIME_TYPE,
    XLSX_MIME_TYPE,
    DriveTestServer,
)
from pgdatahub_dagster_tests.drive_fixtures import google_service


@pytest.fixture
def server(drive_server: DriveTestServer) -> DriveTestServer:
    return drive_server


@pytest.fixture
def service(server: DriveTestServer) -> Resource:
    return google_service("drive", "v3", server.api_endpoint)


def _error_reason(error: HttpError) -> str:
    details: list[dict[str, str]] = error.error_details
    return details[0]["reason"]


def _list_all(service: Resource, **kwargs: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    page_token: str | None = None
    while True:
        response = service.files().list(pageToken=page_token, **kwargs).execute()
        pages.append(response["files"])
        page_token = response.get("nextPageToken")
        if page_token is None:
            return pages


def _download(service: Resource, file_id: str, chunksize: int) -> bytes:
    buffer = io.BytesIO()
    request = service.files().get_media(fileId=file_id, supportsAllDrives=True)
    downloader = MediaIoBaseDownload(buffer, request, chunksize=chunksize)
    done = False
    while not done:
        _, done = downloader.next_chunk()
    return buffer.getvalue()


def test_nested_listing_pages_and_returns_only_requested_fields(
    server: DriveTestServer, service: Resource
) -> None:
    root = server.add_folder("root")
    sub = server.add_folder("sub", root)
    csv_ids = [server.add_file(f"data-{n}.csv", root, f"a,b\n{n},2\n".encode(), "text/csv") for n in range(5)]
    sheet = server.add_google_sheet("budget", root, b"PK-xlsx")
    nested = server.add_file("deep.csv", sub, b"x,y\n", "text/csv")
    fields = "nextPageToken, files(id, name, mimeType, parents, md5Checksum, size)"

    pages = _list_all(
        service,
        q=f"'{root}' in parents and trashed = false",
        pageSize=3,
        fields=fields,
        supportsAllDrives=True,
        includeItemsFromAllDrives=True,
        corpora="allDrives",
        orderBy="name",
    )

    assert [len(page) for page in pages] == [3, 3, 1]
    files = {f["id"]: f for page in pages for f in page}
    assert set(files) == {sub, sheet, *csv_ids}
    assert [f["name"] for page in pages for f in page] == sorted(f["name"] for f in files.values())
    requested = {"id", "name", "mimeType", "parents", "md5Checksum", "size"}
    assert all(set(f) <= requested for f in files.values())
    assert files[csv_ids[0]]["md5Checksum"] == hashlib.md5(b"a,b\n0,2\n").hexdigest()
    assert files[csv_ids[0]]["size"] == "8"
    assert files[csv_ids[0]]["parents"] == [root]
    # Native Sheets and folders carry neither checksum nor size, as on Drive.
    assert set(files[sheet]) == {"id", "name", "mimeType", "parents"}
    assert files[sheet]["mimeType"] == SHEET_MIME_TYPE
    assert set(files[sub]) == {"id", "name", "mimeType", "parents"}

    nested_listing = service.files().list(q=f"'{sub}' in parents").execute()
    # Without ``fields`` Drive sends its default projection.
    assert nested_listing == {
        "kind": "drive#fileList",
        "incompleteSearch": False,
        "files": [
            {
                "kind": "drive#file",
                "id": nested,
                "name": "deep.csv",
                "mimeType": "text/csv",
            }
        ],
    }


def test_fields_without_next_page_token_hide_further_pages(
    server: DriveTestServer, service: Resource
) -> None:
    root = server.add_folder("root")
    for n in range(3):
        server.add_folder(f"f{n}", root)

    response = service.files().list(q=f"'{root}' in parents", pageSize=1, fields="files(id)").execute()

    # A classic client bug: forgetting nextPageToken in ``fields`` silently
    # truncates the listing to one page, exactly as Drive does.
    assert set(response) == {"files"}


def test_query_supports_or_groups_and_mime_type_filters(server: DriveTestServer, service: Resource) -> None:
    a = server.add_folder("a")
    b = server.add_folder("b")
    c = server.add_folder("c")
    in_a = server.add_file("in-a.csv", a, b"1")
    a_sub = server.add_folder("a-sub", a)
    in_b = server.add_google_sheet("in-b", b, b"xlsx")
    trashed = server.add_file("gone.csv", b, b"2")
    server.trash(trashed)
    server.add_file("in-c.csv", c, b"3")

    def ids(q: str) -> set[str]:
        listing = service.files().list(q=q, fields="files(id)").execute()
        return {f["id"] for f in listing["files"]}

    either = f"('{a}' in parents or '{b}' in parents)"
    assert ids(f"{either} and trashed = false") == {in_a, a_sub, in_b}
    assert ids(f"{either} and trashed=false") == {in_a, a_sub, in_b}
    assert ids(f"{either}") == {in_a, a_sub, in_b, trashed}
    assert ids(f"{either} and trashed = true") == {trashed}
    assert ids(f"{either} and mimeType != '{FOLDER_MIME_TYPE}'") == {
        in_a,
        in_b,
        trashed,
    }
    assert ids(f"{either} AND mimeType = '{SHEET_MIME_TYPE}'") == {in_b}
    assert ids(f"'{a}' in parents and mimeType = '{FOLDER_MIME_TYPE}'") == {a_sub}
    # ``and`` binds tighter than ``or``.
    assert ids(f"'{c}' in parents and trashed = true or '{a}' in parents") == {
        in_a,
        a_sub,
    }


@pytest.mark.parametrize(
    "q",
    [
        "name contains 'budget'",
        "'a' in parents and",
        "('a' in parents",
        "trashed = maybe",
        "'unterminated in parents",
    ],
)
def test_unsupported_query_is_a_google_shaped_400(service: Resource, q: str) -> None:
    with pytest.raises(HttpError) as caught:
        service.files().list(q=q).execute()

    assert caught.value.status_code == 400
    assert _error_reason(caught.value) == "invalid"
    body = json.loads(caught.value.content)
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["errors"][0]["location"] == "q"


def test_unknown_field_selection_is_rejected(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")

    with pytest.raises(HttpError) as caught:
        service.files().get(fileId=root, fields="id,md5checksum").execute()

    assert caught.value.status_code == 400
    assert caught.value.reason == "Invalid field selection md5checksum"


def test_get_unknown_file_is_404_not_found(service: Resource) -> None:
    with pytest.raises(HttpError) as caught:
        service.files().get(fileId="1missing", supportsAllDrives=True).execute()

    assert caught.value.status_code == 404
    assert _error_reason(caught.value) == "notFound"
    assert caught.value.reason == "File not found: 1missing."
    assert caught.value.resp["content-type"] == "application/json; charset=UTF-8"


def test_get_honours_fields_for_shortcuts_and_shared_drives(
    server: DriveTestServer, service: Resource
) -> None:
    shared_root = server.add_folder("team", drive_id="0ATeamDrive")
    target = server.add_google_sheet("source", shared_root, b"xlsx")
    shortcut = server.add_shortcut("link", shared_root, target)

    got = (
        service.files()
        .get(
            fileId=shortcut,
            fields="id,mimeType,driveId,version,modifiedTime,shortcutDetails",
            supportsAllDrives=True,
        )
        .execute()
    )

    assert got == {
        "id": shortcut,
        "mimeType": SHORTCUT_MIME_TYPE,
        "driveId": "0ATeamDrive",
        "version": "1",
        "modifiedTime": "2024-01-01T00:00:03.000Z",
        "shortcutDetails": {"targetId": target, "targetMimeType": SHEET_MIME_TYPE},
    }
    everything = service.files().get(fileId=target, fields="*").execute()
    assert "md5Checksum" not in everything
    assert "size" not in everything
    assert everything["createdTime"] == "2024-01-01T00:00:02.000Z"


def test_mutations_bump_version_and_modified_time(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    other = server.add_folder("other")
    file_id = server.add_file("a.csv", root, b"1")
    server.update_content(file_id, b"22")
    server.rename(file_id, "b.csv")
    server.move(file_id, other)

    got = service.files().get(fileId=file_id, fields="*").execute()

    assert got["version"] == "4"
    assert got["name"] == "b.csv"
    assert got["parents"] == [other]
    assert got["size"] == "2"
    assert got["modifiedTime"] == "2024-01-01T00:00:06.000Z"
    assert got["createdTime"] == "2024-01-01T00:00:03.000Z"


def test_media_download_uses_range_chunks(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    content = random.Random(7).randbytes(1024 * 1024 + 1000)
    file_id = server.add_file("big.bin", root, content)
    server.reset_request_log()

    assert _download(service, file_id, chunksize=256 * 1024) == content

    assert server.request_count("GET", f"/drive/v3/files/{file_id}") == 5
    assert all(query["alt"] == "media" for _, _, query in server.request_log)


def test_media_download_of_empty_file_finishes(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    file_id = server.add_file("empty.csv", root, b"")

    assert _download(service, file_id, chunksize=1024) == b""


def test_media_download_of_native_sheet_is_refused(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    sheet = server.add_google_sheet("budget", root, b"xlsx")

    with pytest.raises(HttpError) as caught:
        service.files().get_media(fileId=sheet).execute()

    assert caught.value.status_code == 403
    assert _error_reason(caught.value) == "fileNotDownloadable"


def test_export_returns_stored_xlsx_bytes(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    workbook = b"PK\x03\x04 pretend xlsx"
    sheet = server.add_google_sheet("budget", root, workbook)

    assert service.files().export(fileId=sheet, mimeType=XLSX_MIME_TYPE).execute() == (workbook)
    buffer = io.BytesIO()
    downloader = MediaIoBaseDownload(
        buffer, service.files().export_media(fileId=sheet, mimeType=XLSX_MIME_TYPE)
    )
    assert downloader.next_chunk()[1] is True
    assert buffer.getvalue() == workbook


def test_export_over_the_limit_is_refused(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    sheet = server.add_google_sheet("huge", root, b"x" * 2048)
    server.export_limit_bytes = 1024

    with pytest.raises(HttpError) as caught:
        service.files().export(fileId=sheet, mimeType=XLSX_MIME_TYPE).execute(num_retries=3)

    assert caught.value.status_code == 403
    # Both lists, as newer Drive answers have them: googleapiclient's error_details keeps
    # only ``details``, so the reason must be read from ``errors``.
    body = json.loads(caught.value.content)["error"]
    assert body["errors"][0]["reason"] == "exportSizeLimitExceeded"
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert caught.value.reason == "This file is too large to be exported."
    # Not a rate-limit reason, so the client must not have retried.
    assert server.request_count(path_contains="/export") == 1


def test_export_of_binary_file_is_refused(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    file_id = server.add_file("a.csv", root, b"1")

    with pytest.raises(HttpError) as caught:
        service.files().export(fileId=file_id, mimeType=XLSX_MIME_TYPE).execute()

    assert _error_reason(caught.value) == "fileNotExportable"


def test_changes_page_through_two_thousand_changes(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    start = service.changes().getStartPageToken(supportsAllDrives=True).execute()
    assert start["kind"] == "drive#startPageToken"
    file_id = server.add_file("churn.csv", root, b"0")
    for n in range(1, 2000):
        server.rename(file_id, f"churn-{n}.csv")

    seen: list[dict[str, Any]] = []
    page_token = start["startPageToken"]
    pages = 0
    while True:
        response = (
            service.changes()
            .list(
                pageToken=page_token,
                pageSize=100,
                fields="nextPageToken,newStartPageToken,changes(fileId,removed,time,file(name,version))",
                includeRemoved=True,
                restrictToMyDrive=False,
                supportsAllDrives=True,
                includeItemsFromAllDrives=True,
                spaces="drive",
            )
            .execute()
        )
        pages += 1
        seen.extend(response["changes"])
        if "nextPageToken" not in response:
            break
        assert "newStartPageToken" not in response
        assert len(response["changes"]) == 100
        page_token = response["nextPageToken"]

    assert pages == 20
    assert len(seen) == 2000
    assert [c["file"]["version"] for c in seen] == [str(n) for n in range(1, 2001)]
    assert seen[-1]["file"]["name"] == "churn-1999.csv"
    assert {c["fileId"] for c in seen} == {file_id}
    times = [c["time"] for c in seen]
    assert times == sorted(times)
    new_start = response["newStartPageToken"]
    assert new_start == server.current_page_token()

    caught_up = service.changes().list(pageToken=new_start).execute()
    assert caught_up == {
        "kind": "drive#changeList",
        "changes": [],
        "newStartPageToken": new_start,
    }


def test_changes_report_trashed_and_removed_files(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    folder = server.add_folder("reports", root)
    child = server.add_file("q1.csv", folder, b"1")
    doomed = server.add_file("old.csv", root, b"2")
    token = server.current_page_token()
    server.trash(folder)
    server.delete(doomed)

    response = service.changes().list(pageToken=token, fields="*", includeRemoved=True).execute()

    changes = response["changes"]
    assert [c["fileId"] for c in changes] == [folder, child, doomed]
    # Trashing a folder trashes what is inside it, as Drive does.
    assert [c["file"]["trashed"] for c in changes[:2]] == [True, True]
    assert all(c["removed"] is False for c in changes[:2])
    assert changes[2]["removed"] is True
    assert "file" not in changes[2]
    assert changes[2]["kind"] == "drive#change"
    assert changes[2]["changeType"] == "file"

    without_removed = service.changes().list(pageToken=token, includeRemoved=False).execute()
    assert [c["fileId"] for c in without_removed["changes"]] == [folder, child]

    with pytest.raises(HttpError) as caught:
        service.files().get(fileId=doomed).execute()
    assert caught.value.status_code == 404


@pytest.mark.parametrize("token", ["not-a-token", "-1", "999999", ""])
def test_invalid_change_token_is_rejected(service: Resource, token: str) -> None:
    with pytest.raises(HttpError) as caught:
        service.changes().list(pageToken=token).execute()

    assert caught.value.status_code == 400
    assert _error_reason(caught.value) == "invalid"


def test_expired_change_token_is_rejected(server: DriveTestServer, service: Resource) -> None:
    old = server.current_page_token()
    server.add_folder("root")
    current = server.current_page_token()
    server.expire_tokens_before(current)

    with pytest.raises(HttpError) as caught:
        service.changes().list(pageToken=old).execute()

    assert caught.value.status_code == 400
    assert _error_reason(caught.value) == "invalid"
    assert service.changes().list(pageToken=current).execute()["changes"] == []


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("429", 429, "rateLimitExceeded"),
        ("503", 503, "backendError"),
        ("403_rate", 403, "userRateLimitExceeded"),
    ],
)
def test_retryable_faults_are_recovered_by_client_retries(
    server: DriveTestServer,
    service: Resource,
    kind: str,
    status: int,
    reason: str,
) -> None:
    root = server.add_folder("root")
    server.inject_fault(kind, count=2, path_contains="/files")

    listing = service.files().list(q=f"'{root}' in parents").execute(num_retries=3)

    assert listing["files"] == []
    assert server.faults_served[kind] == 2
    assert server.request_count("GET", "/drive/v3/files") == 3

    server.inject_fault(kind, path_contains="/files")
    with pytest.raises(HttpError) as caught:
        service.files().list().execute()
    assert caught.value.status_code == status
    assert _error_reason(caught.value) == reason


def test_faults_only_hit_matching_requests(server: DriveTestServer, service: Resource) -> None:
    server.inject_fault("503", path_contains="/changes")

    assert service.files().list().execute()["files"] == []
    with pytest.raises(HttpError):
        service.changes().getStartPageToken().execute()
    assert service.changes().getStartPageToken().execute()["startPageToken"] == "0"
    assert server.faults_served == {"503": 1}


def test_slow_fault_delays_the_answer(server: DriveTestServer, service: Resource) -> None:
    server.slow_seconds = 0.2
    server.inject_fault("slow")

    began = time.monotonic()
    assert service.files().list().execute()["files"] == []

    assert time.monotonic() - began >= 0.2
    assert server.faults_served["slow"] == 1


def test_dropped_connection_mid_download_is_resumable(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    content = random.Random(3).randbytes(600 * 1024)
    file_id = server.add_file("big.bin", root, content)
    buffer = io.BytesIO()
    request = service.files().get_media(fileId=file_id, supportsAllDrives=True)
    downloader = MediaIoBaseDownload(buffer, request, chunksize=256 * 1024)
    assert downloader.next_chunk()[1] is False
    server.inject_fault("drop", path_contains="alt=media")

    # A truncated body surfaces as http.client.IncompleteRead, which neither
    # httplib2 nor the client's retry loop treats as retryable, so even
    # num_retries does not save this chunk...
    with pytest.raises(http.client.IncompleteRead):
        downloader.next_chunk(num_retries=3)

    # ...but the downloader only advances on success, so calling again
    # re-requests the same range and completes the file.
    done = False
    while not done:
        _, done = downloader.next_chunk(num_retries=3)
    assert buffer.getvalue() == content
    assert server.faults_served["drop"] == 1
    assert server.request_count(path_contains=file_id) == 4


def test_request_log_records_every_request(server: DriveTestServer, service: Resource) -> None:
    root = server.add_folder("root")
    service.files().list(q=f"'{root}' in parents", pageSize=10).execute()
    service.files().get(fileId=root).execute()

    assert server.request_log == [
        (
            "GET",
            "/drive/v3/files",
            {"q": f"'{root}' in parents", "pageSize": "10", "alt": "json"},
        ),
        ("GET", f"/drive/v3/files/{root}", {"alt": "json"}),
    ]
    assert server.request_count() == 2
    assert server.request_count("GET", "/drive/v3/files/") == 1
    assert server.request_count("POST") == 0
    server.reset_request_log()
    assert server.request_count() == 0


def test_raw_http_auth_and_download_prefix(server: DriveTestServer) -> None:
    root = server.add_folder("root")
    file_id = server.add_file("a.csv", root, b"a,b\n")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = server.api_endpoint.removesuffix("drive/v3/")

    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(f"{base}drive/v3/files")
    assert caught.value.code == 401

    download = urllib.request.Request(
        f"{base}download/drive/v3/files/{file_id}?alt=media",
        headers={"Authorization": "Bearer test-token", "Range": "bytes=2-"},
    )
    with opener.open(download) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 2-3/4"
        assert response.read() == b"b\n"


def test_state_api_rejects_misuse(server: DriveTestServer) -> None:
    root = server.add_folder("root")
    file_id = server.add_file("a.csv", root, b"1")
    sub = server.add_folder("sub", root)

    with pytest.raises(KeyError):
        server.rename("1missing", "x")
    with pytest.raises(ValueError, match="not a folder"):
        server.add_file("b.csv", file_id, b"2")
    with pytest.raises(ValueError, match="into itself"):
        server.move(root, sub)
    with pytest.raises(ValueError, match="unknown fault kind"):
        server.inject_fault("500")
    with pytest.raises(ValueError, match="not a valid page token"):
        server.expire_tokens_before("later")
