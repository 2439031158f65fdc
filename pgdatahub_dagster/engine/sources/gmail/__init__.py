"""Gmail as a source: the API client, and messages and their spreadsheet attachments as files."""

from pgdatahub_dagster.engine.sources.gmail.client import GmailClient, GmailError, GmailMessage, HistoryTooOld
from pgdatahub_dagster.engine.sources.gmail.source import MESSAGE_COLUMNS, GmailSource

__all__ = ["MESSAGE_COLUMNS", "GmailClient", "GmailError", "GmailMessage", "GmailSource", "HistoryTooOld"]
