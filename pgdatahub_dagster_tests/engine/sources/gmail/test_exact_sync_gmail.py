"""Model-based: random mailbox histories (deliveries with shared workbooks, deletions, trash,
labels added and removed, history expiring) followed tick by tick by the Gmail source; after
every tick each table equals a fresh import of the mailbox as it is now."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources.gmail import GmailClient
from pgdatahub_dagster.testing.gmail_server import Attachment, GmailTestServer
from pgdatahub_dagster_tests.exact_sync import assert_ledger_consistent, assert_tables_equal, machine_settings
from pgdatahub_dagster_tests.gmail_sync import VENDOR, VENDOR_MAPPING, GmailSync, fresh_gmail_import

MAPPING = VENDOR_MAPPING + '  finance:\n    query: "label:finance filename:csv"\n'
#: Workbooks that share rows, so that the same keys are held by several messages.
WORKBOOKS = [b"sku,units\nA,1\nB,2\n", b"sku,units\nB,2\nC,3\n", b"sku,units\nA,1\n"]

_deliver = st.tuples(
    st.just("deliver"), st.booleans(), st.sampled_from([None, 0, 1, 2]), st.booleans(), st.integers(0, 0)
)
_change = st.tuples(
    st.sampled_from(["delete", "trash", "label", "unlabel"]),
    st.none(),
    st.none(),
    st.none(),
    st.integers(0, 20),
)
_expire = st.tuples(st.just("expire"), st.none(), st.none(), st.none(), st.integers(0, 0))
_operation = st.one_of(_deliver, _deliver, _change, _expire)


def _check(
    gmail_server_factory: Callable[[], GmailTestServer],
    new_warehouse: Callable[[str], str],
    operations: list[tuple[str, bool | None, int | None, bool | None, int]],
) -> None:
    mapping = FolderMapping.parse(MAPPING)
    with gmail_server_factory() as server:
        finance = server.add_label("Finance")
        client = GmailClient.connect_to_emulator("test-token", server.api_endpoint, num_retries=2)
        url = new_warehouse("synced")
        sync = GmailSync(url, client, mapping)
        history: list[str] = []
        for kind, from_vendor, workbook, labelled, pick in operations:
            ids = server.message_ids()
            if kind == "deliver":
                attachments = (
                    [] if workbook is None else [Attachment(f"w{workbook}.csv", WORKBOOKS[workbook])]
                )
                labels = ["INBOX", finance] if labelled else ["INBOX"]
                sender = VENDOR if from_vendor else "someone@example.com"
                server.add_message(sender=sender, subject="s", labels=labels, attachments=attachments)
                history.append(f"deliver from {sender}, workbook {workbook}, labels {labels}")
            elif kind == "expire":
                server.expire_history_before(server.current_history_id())
                history.append("history expired")
            elif ids:
                target = ids[pick % len(ids)]
                {
                    "delete": server.delete_message,
                    "trash": server.trash,
                    "label": lambda m: server.add_labels(m, [finance]),
                    "unlabel": lambda m: server.remove_labels(m, [finance]),
                }[kind](target)
                history.append(f"{kind} {target}")
            sync.tick()
            history.append("tick")
            fresh = new_warehouse("fresh")
            fresh_gmail_import(fresh, client, mapping)
            assert_tables_equal(url, fresh, history=history)
            assert_ledger_consistent(url, history)


_OPERATIONS = st.lists(_operation, min_size=3, max_size=8)


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_random_mailbox_histories(gmail_server: GmailTestServer, new_warehouse: Callable[[str], str]) -> None:
    # The fixture's server only sets up the environment (no proxy, quick retries); each
    # example has a mailbox of its own.
    @machine_settings(3, 8, shrink=False)
    @given(_OPERATIONS)
    def run(operations: list[tuple[str, bool | None, int | None, bool | None, int]]) -> None:
        _check(GmailTestServer, new_warehouse, operations)

    run()


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_random_mailbox_histories_long(
    gmail_server: GmailTestServer, new_warehouse: Callable[[str], str]
) -> None:
    @machine_settings(30, 12, shrink=True)
    @given(st.lists(_operation, min_size=3, max_size=12))
    def run(operations: list[tuple[str, bool | None, int | None, bool | None, int]]) -> None:
        _check(GmailTestServer, new_warehouse, operations)

    run()
