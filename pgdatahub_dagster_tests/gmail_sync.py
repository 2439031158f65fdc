"""The Gmail source ticked with the engine alone, as its sensor and runs do, and a fresh import
of the mailbox: what the synced warehouse of the Gmail tests must equal."""

from __future__ import annotations

import json

from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.lifecycle import record_deletion
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import Budget, Changes, SourceState
from pgdatahub_dagster.engine.sources.gmail import GmailClient, GmailSource
from pgdatahub_dagster.engine.warehouse import Warehouse, connect

BUDGET = Budget(max_files=100, seconds=30)
VENDOR = "reports@vendor.example"
#: The vendor's workbooks into vendor_reports; messages and workbooks retracted when they go.
VENDOR_MAPPING = f"""\
gmail:
  on_delete: retract
  vendor_reports:
    query: "from:{VENDOR} has:attachment"
    table: vendor_reports
"""


def fresh_gmail_import(url: str, client: GmailClient, mapping: FolderMapping) -> None:
    """Import every file the mapping's Gmail searches find now into the empty warehouse at
    ``url``; every file must import."""
    with connect(url) as warehouse:
        importer = Importer(warehouse, GmailSource(client, mapping.gmail_queries), mapping)
        failures = [result.record.error for result in importer.import_all() if result.failed]
    assert not failures, failures


class KnownFiles(SourceState):
    """What the Dagster layer keeps for a source: the files reported and not removed."""

    def __init__(self, mapping: FolderMapping) -> None:
        self.known: set[str] = set()
        self._mapping = mapping

    def known_file_ids(self) -> set[str]:
        return set(self.known)

    def warehouse(self) -> Warehouse:
        raise AssertionError("the Gmail source keeps nothing in the warehouse")

    def mapping(self) -> FolderMapping:
        return self._mapping


class GmailSync:
    """One tick as the sensor and its runs do it, with the engine alone."""

    def __init__(
        self, url: str, client: GmailClient, mapping: FolderMapping, budget: Budget = BUDGET
    ) -> None:
        self.url, self.mapping, self.budget = url, mapping, budget
        self.state = KnownFiles(mapping)
        self.source = GmailSource(client, mapping.gmail_queries, self.state)
        self.cursor: str | None = None

    def tick(self) -> Changes:
        changes = self.source.changes(self.cursor, self.budget)
        self.cursor = changes.cursor
        with connect(self.url) as warehouse:
            importer = Importer(warehouse, self.source, self.mapping)
            for file in changes.found:
                assert not importer.import_file(file).failed
                self.state.known.add(file.file_id)
            for file_id in sorted(changes.removed.keys() & self.state.known):
                record_deletion(warehouse, self.mapping, file_id, run_id=None)
                self.state.known.discard(file_id)
        return changes

    def list_to_the_end(self) -> list[Changes]:
        """Ticks until the listing under way (or a first one) has ended: the cursor is a
        history id again. Every tick of it is returned."""
        ticks = [self.tick()]
        while self.listing:
            ticks.append(self.tick())
            assert len(ticks) < 100, "the listing does not advance"
        return ticks

    @property
    def listing(self) -> bool:
        return self.cursor is not None and "listing" in json.loads(self.cursor)
