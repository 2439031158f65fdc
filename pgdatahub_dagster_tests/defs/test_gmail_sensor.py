"""Gmail end to end: the real client over HTTP to the Gmail test server, the code location's
gmail_sensor, runs of its import job and of handle_deleted_files, and rows in the warehouse;
after each step every table equals a fresh import of the mailbox as it is now."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions

from pgdatahub_dagster.defs.partitions import partition_key_for
from pgdatahub_dagster.defs.sources.gmail import GMAIL
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources.gmail import GmailClient
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.testing.gmail_server import XLSX_MIME_TYPE, Attachment, GmailTestServer
from pgdatahub_dagster_tests.drive_fixtures import write_service_account_key
from pgdatahub_dagster_tests.exact_sync import SensorDaemon, assert_ledger_consistent, assert_tables_equal
from pgdatahub_dagster_tests.files import write_xlsx
from pgdatahub_dagster_tests.gmail_sync import VENDOR, VENDOR_MAPPING, fresh_gmail_import

MAPPING = VENDOR_MAPPING


@pytest.fixture
def mailbox(
    gmail_server: GmailTestServer, source_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> GmailTestServer:
    monkeypatch.setenv("PGDATAHUB_GMAIL_ACCESS_TOKEN", "test-token")
    monkeypatch.setenv("PGDATAHUB_GMAIL_API_ENDPOINT", gmail_server.api_endpoint)
    (source_dir / "pgdatahub.yaml").write_text(MAPPING)
    return gmail_server


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with connect(url) as warehouse:
        return sorted(warehouse.fetchall(sql))


def _workbook(tmp_path: Path, name: str, rows: list[list[Any]]) -> bytes:
    return write_xlsx(tmp_path / name, {"Sheet1": [["sku", "units"], *rows]}).read_bytes()


def test_gmail_through_the_sensor_and_runs(
    test_defs: Definitions,
    instance: DagsterInstance,
    mailbox: GmailTestServer,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
    tmp_path: Path,
) -> None:
    daemon = SensorDaemon(test_defs, instance, GMAIL.sensor_name)
    client = GmailClient.connect_to_emulator("test-token", mailbox.api_endpoint)
    mapping = FolderMapping.parse(MAPPING)
    steps: list[str] = []

    def check(step: str) -> None:
        steps.append(step)
        fresh = new_warehouse("fresh")
        fresh_gmail_import(fresh, client, mapping)
        assert_tables_equal(warehouse_url, fresh, history=steps)
        assert_ledger_consistent(warehouse_url, steps)

    week1 = _workbook(tmp_path, "w1.xlsx", [["A-1", 5], ["A-2", 7]])
    first = mailbox.add_message(
        sender=VENDOR, subject="Week 1", attachments=[Attachment("week1.xlsx", week1, XLSX_MIME_TYPE)]
    )
    mailbox.add_message(sender="friend@example.com", subject="Hello")

    # First sync: the message and its workbook, one run each.
    assert sorted(daemon.sync()) == sorted([partition_key_for(first), partition_key_for(f"{first}:1")])
    check("first sync")
    assert _rows(warehouse_url, "SELECT sku, units FROM vendor_reports") == [("A-1", 5), ("A-2", 7)]
    assert _rows(warehouse_url, "SELECT id, subject FROM gmail_messages") == [(first, "Week 1")]

    # An idle tick costs one API call.
    mailbox.reset_request_log()
    assert daemon.tick() == ([], [])
    assert (mailbox.round_trips, len(mailbox.request_log)) == (1, 1)
    assert mailbox.request_log[0][1].endswith("/history")

    # A new message with a workbook lands within one tick.
    second = mailbox.add_message(
        sender=VENDOR,
        subject="Week 2",
        attachments=[Attachment("week2.xlsx", _workbook(tmp_path, "w2.xlsx", [["B-1", 3]]), XLSX_MIME_TYPE)],
    )
    assert sorted(daemon.sync()) == sorted([partition_key_for(second), partition_key_for(f"{second}:1")])
    check("a new message with a workbook")
    assert ("B-1", 3) in _rows(warehouse_url, "SELECT sku, units FROM vendor_reports")

    # The same workbook mailed again adds no rows.
    again = mailbox.add_message(
        sender=VENDOR, subject="Week 1 again", attachments=[Attachment("copy.xlsx", week1, XLSX_MIME_TYPE)]
    )
    daemon.sync()
    check("the same workbook mailed again")
    assert len(_rows(warehouse_url, "SELECT sku FROM vendor_reports")) == 3
    # It holds the same two keys; by prefer (newest) the rows now name the newer copy.
    held = _rows(warehouse_url, f"SELECT rows_held FROM etl_imports WHERE source_file_id = '{again}:1'")
    assert held == [(2,)]
    assert _rows(
        warehouse_url, "SELECT DISTINCT source_file_id FROM vendor_reports WHERE sku LIKE 'A-%'"
    ) == [(f"{again}:1",)]

    # A deleted message follows on_delete (retract): one deletion run.
    mailbox.delete_message(second)
    [deletion], _ = daemon.tick()
    assert deletion.job_name == "handle_deleted_files"
    assert daemon.launch(deletion)
    check("a message deleted")
    assert ("B-1", 3) not in _rows(warehouse_url, "SELECT sku, units FROM vendor_reports")
    assert partition_key_for(second) not in instance.get_dynamic_partitions(GMAIL.partitions_name)

    # A history id too old: the sensor lists the searches again.
    third = mailbox.add_message(
        sender=VENDOR, subject="Week 3", attachments=[Attachment("w3.csv", b"sku,units\nC-1,9\n", "text/csv")]
    )
    mailbox.delete_message(first)
    mailbox.expire_history_before(mailbox.current_history_id())
    mailbox.reset_request_log()
    ran = daemon.sync()
    assert mailbox.request_count(path_contains="/profile") == 1  # the listing's history id
    assert {partition_key_for(third), partition_key_for(f"{third}:1"), "handle_deleted_files"} <= set(ran)
    check("history too old: listed again")
    assert _rows(warehouse_url, "SELECT id FROM gmail_messages") == sorted([(again,), (third,)])


# About 20 s per warehouse: PostgreSQL in every run, DuckDB with -m long.
@pytest.mark.parametrize(
    "warehouse_url", [pytest.param("duckdb", marks=pytest.mark.long), "postgres"], indirect=True
)
def test_a_first_sync_larger_than_a_tick_goes_on_over_ticks(
    test_defs: Definitions,
    instance: DagsterInstance,
    mailbox: GmailTestServer,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two files a tick: the listing of seven messages (fourteen files) reports one message and
    its workbook a tick, its progress in the sensor's cursor; a message deleted meanwhile
    never lands."""
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_FILES", "2")
    daemon = SensorDaemon(test_defs, instance, GMAIL.sensor_name)
    client = GmailClient.connect_to_emulator("test-token", mailbox.api_endpoint)
    ids = [
        mailbox.add_message(
            sender=VENDOR, subject=f"r{n}", attachments=[Attachment(f"r{n}.csv", f"n\n{n}\n".encode())]
        )
        for n in range(7)
    ]
    ran = daemon.sync()
    assert len(ran) == 2 and "listing" in json.loads(daemon.cursor or "")
    mailbox.delete_message(ids[0])  # the oldest, listed last
    ticks = 1
    while "listing" in json.loads(daemon.cursor or ""):
        runs = daemon.sync()
        assert len(runs) <= 2
        ran += runs
        ticks += 1
    assert ticks >= 6
    assert partition_key_for(ids[0]) not in ran
    assert set(instance.get_dynamic_partitions(GMAIL.partitions_name)) == {
        partition_key_for(file_id) for m in ids[1:] for file_id in (m, f"{m}:1")
    }
    fresh = new_warehouse("fresh")
    fresh_gmail_import(fresh, client, FolderMapping.parse(MAPPING))
    assert_tables_equal(warehouse_url, fresh)
    mailbox.reset_request_log()
    assert daemon.tick() == ([], [])
    assert mailbox.round_trips == 1


def test_unconfigured_gmail_skips_saying_what_to_set(
    test_defs: Definitions, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "PGDATAHUB_GMAIL_CREDENTIALS",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "PGDATAHUB_GMAIL_ACCESS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    result = SensorDaemon(test_defs, instance, GMAIL.sensor_name).evaluate()
    assert result.skip_reason is not None and "PGDATAHUB_GMAIL_CREDENTIALS" in str(result.skip_reason)


def test_refused_credentials_skip_the_tick_with_one_line_and_no_secret(
    test_defs: Definitions,
    instance: DagsterInstance,
    gmail_server: GmailTestServer,
    source_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = write_service_account_key(tmp_path / "revoked.json", gmail_server.token_uri)
    monkeypatch.delenv("PGDATAHUB_GMAIL_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("PGDATAHUB_GMAIL_CREDENTIALS", str(key))
    monkeypatch.setenv("PGDATAHUB_GMAIL_SUBJECT", "boss@example.com")
    monkeypatch.setenv("PGDATAHUB_GMAIL_API_ENDPOINT", gmail_server.api_endpoint)
    (source_dir / "pgdatahub.yaml").write_text(MAPPING)
    daemon = SensorDaemon(test_defs, instance, GMAIL.sensor_name)
    result = daemon.evaluate()
    reason = str(result.skip_reason)
    assert str(key) in reason and "refused" in reason
    assert "SECRET" not in reason and "PRIVATE KEY" not in reason
    assert daemon.cursor is None  # the next tick starts over
