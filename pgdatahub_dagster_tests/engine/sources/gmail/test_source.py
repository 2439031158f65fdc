"""The Gmail source end to end against the Gmail test server, on both warehouses: ticks of
``changes`` from its cursor, the files found imported through the Importer, the files
removed handed to ``on_delete`` — after each, every table equals a fresh import of the
mailbox as it is now."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources.gmail import GmailClient, GmailSource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.testing.gmail_server import XLSX_MIME_TYPE, Attachment, GmailTestServer
from pgdatahub_dagster_tests.conftest import url_of_warehouse
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal
from pgdatahub_dagster_tests.files import write_xlsx
from pgdatahub_dagster_tests.gmail_sync import BUDGET, VENDOR, VENDOR_MAPPING, GmailSync, fresh_gmail_import

MAPPING = VENDOR_MAPPING


def _workbook(tmp_path: Path, name: str, rows: list[list[Any]]) -> bytes:
    return write_xlsx(tmp_path / name, {"Sheet1": [["sku", "units"], *rows]}).read_bytes()


@pytest.fixture
def client(gmail_server: GmailTestServer) -> GmailClient:
    return GmailClient.connect_to_emulator("test-token", gmail_server.api_endpoint, num_retries=4)


def _rows(url: str, table: str, columns: str) -> list[tuple[Any, ...]]:
    with connect(url) as warehouse:
        return sorted(warehouse.fetchall(f"SELECT {columns} FROM {warehouse.quote(table)}"))


def test_ticks_follow_the_mailbox_and_equal_a_fresh_import(
    gmail_server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str], tmp_path: Path
) -> None:
    mapping = FolderMapping.parse(MAPPING)
    url = new_warehouse("synced")
    sync = GmailSync(url, client, mapping)
    week1 = _workbook(tmp_path, "w1.xlsx", [["A-1", 5], ["A-2", 7]])
    first = gmail_server.add_message(
        sender=f"Vendor <{VENDOR}>",
        cc="boss@example.com",
        subject="Week 1",
        body="Numbers attached",
        attachments=[Attachment("week1.xlsx", week1, XLSX_MIME_TYPE), Attachment("logo.png", b"\x89PNG")],
    )
    gmail_server.add_message(sender=f"Vendor <{VENDOR}>", subject="No attachment")
    gmail_server.add_message(
        sender="friend@example.com", subject="Hello", attachments=[Attachment("a.csv", b"x\n1\n")]
    )

    def check(step: str) -> None:
        fresh = new_warehouse("fresh")
        fresh_gmail_import(fresh, client, mapping)
        assert_tables_equal(url, fresh, history=[step])
        assert_ledger_consistent(url, [step])

    # First sync: the listing finds the vendor's message with an attachment, and nothing else.
    changes = sync.tick()
    assert sorted(f.path for f in changes.found) == [
        f"gmail/messages/{first}",
        f"gmail/vendor_reports/{first}-week1.xlsx",
    ]
    check("first sync")
    assert _rows(url, "vendor_reports", "sku, units") == [("A-1", 5), ("A-2", 7)]
    (row,) = _rows(
        url, "gmail_messages", 'id, "from", cc, subject, attachment_names, has_spreadsheet_attachments'
    )
    assert row == (first, f"Vendor <{VENDOR}>", "boss@example.com", "Week 1", "week1.xlsx, logo.png", True)
    with connect(url) as warehouse:
        types = {name: kind.value for name, kind in (warehouse.table_columns("gmail_messages") or {}).items()}
    assert {k: types[k] for k in ("id", "internal_date", "size", "has_spreadsheet_attachments")} == {
        "id": "TEXT",
        "internal_date": "TIMESTAMP",
        "size": "INTEGER",
        "has_spreadsheet_attachments": "BOOLEAN",
    }

    # An idle tick is one call: the history since the cursor.
    gmail_server.reset_request_log()
    assert sync.tick().found == []
    assert (gmail_server.round_trips, gmail_server.request_count(path_contains="/history")) == (1, 1)

    # A new message with a workbook lands within one tick: history, one batch, one search.
    week2 = _workbook(tmp_path, "w2.xlsx", [["B-1", 3]])
    second = gmail_server.add_message(
        sender=VENDOR, subject="Week 2", attachments=[Attachment("week2.xlsx", week2, XLSX_MIME_TYPE)]
    )
    gmail_server.reset_request_log()
    changes = sync.tick()
    assert {f.file_id for f in changes.found} == {second, f"{second}:1"}
    assert gmail_server.round_trips <= 4 + 2 * len(changes.found)  # the imports fetch their files
    check("a new message")
    assert ("B-1", 3) in _rows(url, "vendor_reports", "sku, units")

    # The same workbook mailed again adds no rows.
    resent = gmail_server.add_message(
        sender=VENDOR, subject="Week 1 again", attachments=[Attachment("copy.xlsx", week1, XLSX_MIME_TYPE)]
    )
    sync.tick()
    check("the same workbook again")
    assert len(_rows(url, "vendor_reports", "sku")) == 3
    assert len(_rows(url, "gmail_messages", "id")) == 3

    # Deleted: its message row leaves (retract); the rows the copy still holds stay.
    gmail_server.delete_message(first)
    sync.tick()
    check("the first message deleted")
    assert [r[0] for r in _rows(url, "gmail_messages", "id")] == sorted([second, resent])
    assert len(_rows(url, "vendor_reports", "sku")) == 3

    # Moved out of the query (trashed): its rows leave too.
    gmail_server.trash(resent)
    sync.tick()
    check("the copy trashed")
    assert _rows(url, "vendor_reports", "sku, units") == [("B-1", 3)]

    # A history id too old: every query is listed again, and what left meanwhile is removed.
    third = gmail_server.add_message(
        sender=VENDOR, subject="Week 3", attachments=[Attachment("w3.csv", b"sku,units\nC-1,9\n", "text/csv")]
    )
    gmail_server.delete_message(second)
    gmail_server.expire_history_before(gmail_server.current_history_id())
    changes = sync.tick()
    assert any("listed again" in line for line in changes.log)
    check("history expired")
    assert _rows(url, "vendor_reports", "sku, units") == [("C-1", 9)]
    assert [r[0] for r in _rows(url, "gmail_messages", "id")] == [third]


def test_on_delete_keep_keeps_a_deleted_messages_rows(
    gmail_server: GmailTestServer, client: GmailClient, warehouse_url: str, tmp_path: Path
) -> None:
    mapping = FolderMapping.parse(MAPPING.replace("on_delete: retract", "on_delete: keep"))
    sync = GmailSync(warehouse_url, client, mapping)
    message = gmail_server.add_message(
        sender=VENDOR,
        subject="w",
        attachments=[Attachment("w.xlsx", _workbook(tmp_path, "w.xlsx", [["K", 1]]))],
    )
    sync.tick()
    gmail_server.delete_message(message)
    changes = sync.tick()
    assert set(changes.removed) >= {message, f"{message}:1"}
    assert _rows(warehouse_url, "vendor_reports", "sku") == [("K",)]
    with connect(warehouse_url) as warehouse:
        statuses = {r["status"] for r in warehouse.ledger() if r["source_file_id"] == f"{message}:1"}
    assert statuses == {"kept", "deleted"}


def test_batches_and_searches_retry_faults(gmail_server: GmailTestServer, client: GmailClient) -> None:
    source = GmailSource(client, FolderMapping.parse(MAPPING).gmail_queries)
    cursor = source.changes(None, BUDGET).cursor
    ids = [
        gmail_server.add_message(sender=VENDOR, subject=f"n{n}", attachments=[Attachment("n.csv", b"a\n1\n")])
        for n in range(3)
    ]
    gmail_server.inject_fault("503", path_contains="/history")
    gmail_server.inject_fault("429", path_contains=f"messages/{ids[1]}")
    gmail_server.inject_fault("drop", path_contains="/batch/")
    gmail_server.inject_fault("403_rate", path_contains="/messages?")
    changes = source.changes(cursor, BUDGET)
    assert {f.file_id for f in changes.found} == {*ids, *(f"{i}:1" for i in ids)}
    assert sum(gmail_server.faults_served.values()) == 4
    file = next(f for f in changes.found if f.file_id == f"{ids[0]}:1")
    with source.fetch(file) as copy:
        assert copy.path.read_bytes() == b"a\n1\n"


def test_a_broken_mailbox_raises_a_source_fault_that_shows_no_token(
    gmail_server: GmailTestServer, client: GmailClient
) -> None:
    source = GmailSource(client, FolderMapping.parse(MAPPING).gmail_queries)
    gmail_server.inject_fault("503", count=10)
    with pytest.raises(Exception) as failure:
        source.changes(None, BUDGET)
    assert type(failure.value).__name__ == "GmailError"
    assert "test-token" not in str(failure.value)
    assert "503" in str(failure.value)


def test_the_message_row_quotes_what_it_must(gmail_server: GmailTestServer, client: GmailClient) -> None:
    source = GmailSource(client, FolderMapping.parse(MAPPING).gmail_queries)
    message = gmail_server.add_message(
        sender=VENDOR, subject='Quotes "and", commas', attachments=[Attachment("x.csv", b"a\n")]
    )
    file = next(f for f in source.changes(None, BUDGET).found if f.file_id == message)
    with source.fetch(file) as copy:
        text = io.StringIO(copy.path.read_text())
    assert text.readline().startswith("id,thread_id,internal_date,from,to,cc,subject")
    assert '"Quotes ""and"", commas"' in text.read()


@pytest.mark.parametrize("warehouse_url", ["ducklake"], indirect=True)
def test_ticks_on_a_ducklake(
    gmail_server: GmailTestServer,
    client: GmailClient,
    warehouse_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """The Gmail source keeps nothing in the warehouse, so a DuckLake serves it as well."""
    mapping = FolderMapping.parse(MAPPING)
    sync = GmailSync(warehouse_url, client, mapping)
    first = gmail_server.add_message(
        sender=VENDOR, subject="a", attachments=[Attachment("a.csv", b"k,v\n1,2\n")]
    )
    sync.tick()
    gmail_server.add_message(
        sender=VENDOR, subject="b", attachments=[Attachment("b.csv", b"k,v\n1,2\n3,4\n")]
    )
    sync.tick()
    gmail_server.delete_message(first)
    sync.tick()
    (tmp_path / "fresh").mkdir()
    fresh = url_of_warehouse("ducklake", request, tmp_path / "fresh")
    fresh_gmail_import(fresh, client, mapping)
    assert_tables_equal(warehouse_url, fresh)
    assert _rows(warehouse_url, "vendor_reports", "k, v") == [(1, 2), (3, 4)]
