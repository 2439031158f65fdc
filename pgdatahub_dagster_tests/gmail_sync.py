"""A fresh import of a Gmail mailbox with the engine alone: what the synced warehouse of the
Gmail tests must equal."""

from __future__ import annotations

from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources.gmail import GmailClient, GmailSource
from pgdatahub_dagster.engine.warehouse import connect


def fresh_gmail_import(url: str, client: GmailClient, mapping: FolderMapping) -> None:
    """Import every file the mapping's Gmail searches find now into the empty warehouse at
    ``url``; every file must import."""
    with connect(url) as warehouse:
        importer = Importer(warehouse, GmailSource(client, mapping.gmail_queries), mapping)
        failures = [result.record.error for result in importer.import_all() if result.failed]
    assert not failures, failures
