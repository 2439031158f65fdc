"""Drive the Gmail test server with the real google-api-python-client."""

from __future__ import annotations

import base64
import http.client
from typing import Any

import pytest
from googleapiclient.discovery import Resource
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from pgdatahub_dagster.testing.gmail_server import XLSX_MIME_TYPE, Attachment, GmailTestServer
from pgdatahub_dagster_tests.drive_fixtures import google_service


@pytest.fixture
def server(gmail_server: GmailTestServer) -> GmailTestServer:
    return gmail_server


@pytest.fixture
def service(server: GmailTestServer) -> Resource:
    return google_service("gmail", "v1", server.api_endpoint)


def _ids(service: Resource, q: str, **kwargs: Any) -> list[list[str]]:
    """Every page of a listing, as message ids."""
    pages: list[list[str]] = []
    page_token = None
    while True:
        response = service.users().messages().list(userId="me", q=q, pageToken=page_token, **kwargs).execute()
        pages.append([m["id"] for m in response.get("messages", [])])
        page_token = response.get("nextPageToken")
        if page_token is None:
            return pages


def _mailbox(server: GmailTestServer) -> dict[str, str]:
    finance = server.add_label("Finance/Reports")
    return {
        "report": server.add_message(
            sender="Vendor Reports <reports@vendor.example>",
            subject="Weekly sales",
            body="See the attached workbook.",
            labels=["INBOX", finance],
            attachments=[Attachment("sales.xlsx", b"PK-sales", XLSX_MIME_TYPE)],
        ),
        "note": server.add_message(sender="reports@vendor.example", subject="No report this week"),
        "other": server.add_message(
            sender="alice@example.com",
            cc="bob@example.com",
            subject="Lunch",
            body="Pizza on friday?",
            attachments=[Attachment("menu.pdf", b"%PDF", "application/pdf")],
        ),
        "finance": finance,
    }


def test_search_subset(server: GmailTestServer, service: Resource) -> None:
    ids = _mailbox(server)
    cases = {
        "from:reports@vendor.example has:attachment": {ids["report"]},
        "from:reports@vendor.example": {ids["report"], ids["note"]},
        "label:finance-reports": {ids["report"]},
        f"label:{ids['finance']}": {ids["report"]},
        "subject:weekly": {ids["report"]},
        "pizza": {ids["other"]},
        '"attached workbook"': {ids["report"]},
        "filename:xlsx": {ids["report"]},
        "cc:bob": {ids["other"]},
        "has:attachment -filename:pdf": {ids["report"]},
        "lunch OR subject:weekly": {ids["report"], ids["other"]},
        "from:vendor (subject:weekly OR subject:none)": {ids["report"]},
        "{pizza weekly}": {ids["report"], ids["other"]},
        f"rfc822msgid:{ids['note']}@mail.example.com": {ids["note"]},
    }
    for q, expected in cases.items():
        assert {i for page in _ids(service, q) for i in page} == expected, q
    with pytest.raises(HttpError) as refused:
        service.users().messages().list(userId="me", q="after:2024/01/01").execute()
    assert refused.value.status_code == 400


def test_listing_pages_newest_first_and_leaves_the_trash_out(
    server: GmailTestServer, service: Resource
) -> None:
    ids = [server.add_message(sender="a@example.com", subject=f"n{n}") for n in range(7)]
    server.trash(ids[0])
    pages = _ids(service, "from:a@example.com", maxResults=3)
    assert pages == [ids[6:3:-1], ids[3:0:-1]]
    everything = _ids(service, "from:a@example.com", includeSpamTrash=True)
    assert everything == [ids[::-1]]
    response = service.users().messages().list(userId="me", q="from:nobody").execute()
    assert response == {"resultSizeEstimate": 0}


def test_get_formats_and_attachments(server: GmailTestServer, service: Resource) -> None:
    ids = _mailbox(server)
    messages = service.users().messages()
    metadata = messages.get(
        userId="me", id=ids["report"], format="metadata", metadataHeaders=["From"]
    ).execute()
    assert metadata["payload"]["headers"] == [
        {"name": "From", "value": "Vendor Reports <reports@vendor.example>"}
    ]
    assert "parts" not in metadata["payload"]
    assert metadata["labelIds"] == ["INBOX", ids["finance"]]
    full = messages.get(userId="me", id=ids["report"], format="full").execute()
    text, workbook = full["payload"]["parts"]
    assert base64.urlsafe_b64decode(text["body"]["data"]) == b"See the attached workbook."
    assert (workbook["partId"], workbook["filename"], workbook["mimeType"]) == (
        "1",
        "sales.xlsx",
        XLSX_MIME_TYPE,
    )
    again = messages.get(userId="me", id=ids["report"], format="full").execute()
    # Gmail hands out a new attachment id at every fetch; each one stays readable.
    first_id, second_id = (
        workbook["body"]["attachmentId"],
        again["payload"]["parts"][1]["body"]["attachmentId"],
    )
    assert first_id != second_id
    for attachment_id in (first_id, second_id):
        body = messages.attachments().get(userId="me", messageId=ids["report"], id=attachment_id).execute()
        assert base64.urlsafe_b64decode(body["data"]) == b"PK-sales"
        assert body["size"] == len(b"PK-sales")
    with pytest.raises(HttpError) as missing:
        messages.attachments().get(userId="me", messageId=ids["note"], id=first_id).execute()
    assert missing.value.status_code == 404
    labels = service.users().labels().list(userId="me").execute()["labels"]
    assert {"id": ids["finance"], "name": "Finance/Reports", "type": "user"} in labels


def test_history_pages_types_and_expiry(server: GmailTestServer, service: Resource) -> None:
    start = service.users().getProfile(userId="me").execute()["historyId"]
    assert start == server.current_history_id()
    added = [server.add_message(sender="a@example.com", subject=f"n{n}") for n in range(3)]
    server.add_labels(added[0], ["STARRED"])
    server.remove_labels(added[0], ["UNREAD"])
    server.delete_message(added[1])
    history = service.users().history()
    records: list[dict[str, Any]] = []
    page_token = None
    while True:
        page = history.list(userId="me", startHistoryId=start, maxResults=2, pageToken=page_token).execute()
        records += page["history"]
        page_token = page.get("nextPageToken")
        if page_token is None:
            break
    assert page["historyId"] == server.current_history_id()
    kinds = [next(k for k in r if k not in ("id", "messages")) for r in records]
    assert kinds == ["messagesAdded"] * 3 + ["labelsAdded", "labelsRemoved", "messagesDeleted"]
    assert records[3]["labelsAdded"][0]["labelIds"] == ["STARRED"]
    assert [int(r["id"]) for r in records] == sorted(int(r["id"]) for r in records)
    deleted = history.list(userId="me", startHistoryId=start, historyTypes=["messageDeleted"]).execute()
    assert [r["messagesDeleted"][0]["message"]["id"] for r in deleted["history"]] == [added[1]]
    idle = history.list(userId="me", startHistoryId=server.current_history_id()).execute()
    assert idle == {"historyId": server.current_history_id()}
    server.expire_history_before(server.current_history_id())
    with pytest.raises(HttpError) as too_old:
        history.list(userId="me", startHistoryId=start).execute()
    assert too_old.value.status_code == 404


def test_batch_at_the_gmail_batch_path_with_a_fault_in_one_part(
    server: GmailTestServer, service: Resource
) -> None:
    ids = [server.add_message(sender="a@example.com", subject=f"n{n}") for n in range(3)]
    server.inject_fault("429", path_contains=f"messages/{ids[1]}")
    answers: dict[str, Any] = {}

    def collect(request_id: str, response: Any, exception: HttpError | None) -> None:
        answers[request_id] = exception.status_code if exception is not None else response["id"]

    # service.new_batch_http_request() would post to gmail.googleapis.com: the client builds
    # the batch URL from the discovery document's rootUrl, not from api_endpoint.
    batch = BatchHttpRequest(callback=collect, batch_uri=server.batch_uri)
    for message_id in ids:
        batch.add(
            service.users().messages().get(userId="me", id=message_id, format="metadata"),
            request_id=message_id,
        )
    server.reset_request_log()
    batch.execute()
    assert answers == {ids[0]: ids[0], ids[1]: 429, ids[2]: ids[2]}
    assert server.round_trips == 1
    assert server.request_count(path_contains="/messages/") == 3
    # The connection stays usable: a second batch, and a plain request, on the same client.
    again = BatchHttpRequest(callback=collect, batch_uri=server.batch_uri)
    again.add(service.users().messages().get(userId="me", id=ids[1]), request_id=ids[1])
    again.execute()
    assert answers[ids[1]] == ids[1]
    assert service.users().getProfile(userId="me").execute()["historyId"] == server.current_history_id()


def test_faults_are_retried_by_the_client_and_counted(server: GmailTestServer, service: Resource) -> None:
    server.inject_fault("503", count=2, path_contains="/profile")
    server.inject_fault("403_rate", path_contains="/profile")
    server.reset_request_log()
    profile = service.users().getProfile(userId="me").execute(num_retries=3)
    assert profile["historyId"] == server.current_history_id()
    assert server.faults_served == {"503": 2, "403_rate": 1}
    assert server.round_trips == 4
    server.inject_fault("drop", path_contains="/profile")
    with pytest.raises(http.client.IncompleteRead):
        service.users().getProfile(userId="me").execute()


def test_requests_without_a_token_are_refused(server: GmailTestServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1].strip("/")))
    connection.request("GET", "/gmail/v1/users/me/profile")
    assert connection.getresponse().status == 401
