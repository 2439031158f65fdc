"""A listing too large for one tick's budget (the first sync, or a re-list after Gmail
forgot the history) goes on over several ticks from its cursor, against the Gmail test
server over HTTP; when it ends, every table equals a fresh import of the mailbox as it is
now, whatever changed in the mailbox while it went on."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import Budget
from pgdatahub_dagster.engine.sources.gmail import GmailClient, GmailSource
from pgdatahub_dagster.testing.gmail_server import Attachment, GmailTestServer
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal
from pgdatahub_dagster_tests.gmail_sync import BUDGET, VENDOR, VENDOR_MAPPING, GmailSync, fresh_gmail_import

#: Two searches that find some messages both: those belong to the first, vendor_reports.
MAPPING = VENDOR_MAPPING + '  finance:\n    query: "label:finance filename:csv"\n'
#: Three files a tick: a page of three ids, so a message with its workbook fills most of it.
SMALL = Budget(max_files=3, seconds=30)


@pytest.fixture
def client(gmail_server: GmailTestServer) -> GmailClient:
    return GmailClient.connect_to_emulator("test-token", gmail_server.api_endpoint, num_retries=4)


def _deliver(server: GmailTestServer, n: int, *, vendor: bool = True, finance: str | None = None) -> str:
    labels = ["INBOX", finance] if finance else ["INBOX"]
    return server.add_message(
        sender=VENDOR if vendor else "someone@example.com",
        subject=f"report {n}",
        labels=labels,
        attachments=[Attachment(f"r{n}.csv", f"sku,units\nS-{n},{n}\n".encode())],
    )


def _mailbox(server: GmailTestServer) -> dict[str, str]:
    """Eight vendor messages (two also labelled finance), three finance-only ones; and the
    label's id."""
    finance = server.add_label("Finance")
    ids = {f"vendor{n}": _deliver(server, n, finance=finance if n in (1, 6) else None) for n in range(8)}
    ids |= {f"finance{n}": _deliver(server, 10 + n, vendor=False, finance=finance) for n in range(3)}
    return ids | {"finance": finance}


def _synced(
    server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str], budget: Budget
) -> tuple[FolderMapping, dict[str, str], str, GmailSync]:
    """The mailbox of ``_mailbox``, and a warehouse and its sync not ticked yet."""
    mapping = FolderMapping.parse(MAPPING)
    url = new_warehouse("synced")
    return mapping, _mailbox(server), url, GmailSync(url, client, mapping, budget)


def _check(
    url: str, client: GmailClient, mapping: FolderMapping, new_warehouse: Callable[[str], str]
) -> None:
    fresh = new_warehouse("fresh")
    fresh_gmail_import(fresh, client, mapping)
    assert_tables_equal(url, fresh)
    assert_ledger_consistent(url, [])


def test_a_first_sync_spans_ticks_and_equals_a_fresh_import(
    gmail_server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str]
) -> None:
    mapping, ids, url, sync = _synced(gmail_server, client, new_warehouse, SMALL)
    started = gmail_server.current_history_id()

    ticks = sync.list_to_the_end()
    assert len(ticks) >= 5
    # No tick reports more files than the budget's three (a message and its workbook are
    # two); nothing counts as removed before the listing has ended.
    assert all(len(t.found) <= SMALL.max_files for t in ticks)
    assert all(not t.removed for t in ticks)
    assert any("next tick" in line for line in ticks[0].log)
    assert json.loads(sync.cursor or "") == {"history_id": started}
    # A message both searches find is the first one's, even when its two listings fall in
    # different ticks: its workbook is reported once, in vendor_reports' folder.
    paths = [f.path for t in ticks for f in t.found if f.file_id == f"{ids['vendor6']}:1"]
    assert paths == [f"gmail/vendor_reports/{ids['vendor6']}-r6.csv"]
    _check(url, client, mapping, new_warehouse)

    # The listing done, an idle tick costs one call again.
    gmail_server.reset_request_log()
    assert sync.tick().found == []
    assert (gmail_server.round_trips, gmail_server.request_count(path_contains="/history")) == (1, 1)


def test_what_changes_during_a_listing_is_followed(
    gmail_server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str]
) -> None:
    mapping, ids, url, sync = _synced(gmail_server, client, new_warehouse, SMALL)
    first = sync.tick()
    assert sync.listing
    listed = {f.file_id for f in first.found if ":" not in f.file_id}
    # Between ticks: one message listed already is deleted (the pages after it shift), one
    # not listed yet is deleted, one arrives, one leaves a search by a label, one is trashed.
    gmail_server.delete_message(next(iter(listed)))
    gmail_server.delete_message(ids["vendor0"])  # the oldest: listed last
    new = _deliver(gmail_server, 99)
    gmail_server.remove_labels(ids["finance1"], [ids["finance"]])
    gmail_server.trash(ids["finance0"])
    sync.tick()
    gmail_server.remove_labels(ids["finance2"], ["INBOX"])
    ticks = sync.list_to_the_end()
    assert any("finished" in line for line in ticks[-1].log)
    _check(url, client, mapping, new_warehouse)
    assert new in sync.state.known

    # The history since the listing began repeats what the listing saw, and changes nothing.
    sync.tick()
    _check(url, client, mapping, new_warehouse)


def test_a_relist_after_history_expired_spans_ticks(
    gmail_server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str]
) -> None:
    mapping, ids, url, sync = _synced(gmail_server, client, new_warehouse, BUDGET)
    assert len(sync.list_to_the_end()) == 1  # within the default budget: one tick
    sync.budget = SMALL

    gmail_server.delete_message(ids["vendor3"])
    gmail_server.trash(ids["finance1"])
    added = _deliver(gmail_server, 50)
    gmail_server.expire_history_before(gmail_server.current_history_id())
    ticks = sync.list_to_the_end()
    assert len(ticks) >= 5
    assert any("listed again" in line for line in ticks[0].log)
    # Files that left are told only when the listing has ended.
    assert all(not t.removed for t in ticks[:-1])
    assert {ids["vendor3"], f"{ids['vendor3']}:1", ids["finance1"]} <= set(ticks[-1].removed)
    assert added in sync.state.known
    _check(url, client, mapping, new_warehouse)


def test_a_tick_out_of_seconds_stops_after_one_page(
    gmail_server: GmailTestServer, client: GmailClient
) -> None:
    _mailbox(gmail_server)
    source = GmailSource(client, FolderMapping.parse(MAPPING).gmail_queries)
    changes = source.changes(None, Budget(max_files=100, seconds=0))
    # The vendor search's one page of eight messages, then the seconds are spent.
    assert len(changes.found) == 16
    assert json.loads(changes.cursor)["listing"] == {"query": 1, "page_token": None, "skip": 0}
    # Evaluated again from that cursor, the same tick reports the same.
    again = source.changes(changes.cursor, Budget(max_files=100, seconds=0))
    assert again.cursor == source.changes(changes.cursor, Budget(max_files=100, seconds=0)).cursor
    assert {f.file_id for f in again.found} == {
        f.file_id for f in source.changes(changes.cursor, Budget(max_files=100, seconds=0)).found
    }


def test_message_ids_with_search_syntax_in_them_are_found(
    gmail_server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str]
) -> None:
    """Braces, parentheses and quotes are legal in a Message-ID; the membership search names
    the message all the same (quoted), or falls back to the whole listing."""
    mapping = FolderMapping.parse(VENDOR_MAPPING)
    url = new_warehouse("synced")
    sync = GmailSync(url, client, mapping)
    sync.tick()
    odd = [
        gmail_server.add_message(
            sender=VENDOR,
            subject=header,
            rfc822_message_id=header,
            attachments=[Attachment("a.csv", f"k,v\n{n},{n}\n".encode())],
        )
        for n, header in enumerate(["<{braced}(x)@mail.example.com>", '<"odd id"@mail.example.com>'])
    ]
    changes = sync.tick()
    assert {f.file_id for f in changes.found} == {*odd, *(f"{m}:1" for m in odd)}
    _check(url, client, mapping, new_warehouse)


def test_a_long_history_is_read_over_ticks_within_the_budget(
    gmail_server: GmailTestServer, client: GmailClient, new_warehouse: Callable[[str], str]
) -> None:
    mapping, ids, url, sync = _synced(gmail_server, client, new_warehouse, BUDGET)
    assert len(sync.list_to_the_end()) == 1
    sync.budget = SMALL
    # Nine history records: seven arrivals, one deletion of a message listed already, one
    # message taken out of the finance search; more than one tick's three files.
    added = [_deliver(gmail_server, 200 + n) for n in range(7)]
    gmail_server.delete_message(ids["vendor2"])
    gmail_server.remove_labels(ids["finance2"], [ids["finance"]])
    ticks = []
    while True:
        start = json.loads(sync.cursor or "")["history_id"]
        ticks.append(sync.tick())
        if json.loads(sync.cursor or "")["history_id"] == gmail_server.current_history_id():
            break
        # A tick that stops part-way leaves the id of the last record it read, inside the
        # history, and says so.
        assert int(start) < int(json.loads(sync.cursor or "")["history_id"])
        assert any("next tick" in line for line in ticks[-1].log)
        assert len(ticks) < 20, "the history does not advance"
    assert len(ticks) >= 3
    # Pages of three records: no tick names more than three messages.
    for t in ticks:
        named = [*(f.file_id for f in t.found), *t.removed]
        assert len({file_id.partition(":")[0] for file_id in named}) <= 3
    assert set(added) <= sync.state.known
    _check(url, client, mapping, new_warehouse)
    # The history read to its end, an idle tick costs one call again.
    gmail_server.reset_request_log()
    assert sync.tick().found == []
    assert gmail_server.request_count(path_contains="/history") == 1
