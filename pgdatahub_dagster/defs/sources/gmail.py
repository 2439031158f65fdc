"""Gmail as a source: the messages the ``gmail:`` searches of the folder mapping find, and
their spreadsheet attachments (``PGDATAHUB_GMAIL_*``), read with the gmail.readonly scope only."""

from __future__ import annotations

from pydantic import Field

from pgdatahub_dagster.defs.sources.plugin import SourcePlugin, SourceResource
from pgdatahub_dagster.engine.settings import GmailSettings
from pgdatahub_dagster.engine.sources import SourceState
from pgdatahub_dagster.engine.sources.gmail import GmailClient, GmailSource


class GmailResource(SourceResource):
    """One mailbox, read with the gmail.readonly scope only."""

    credentials_file: str | None = Field(
        default=None,
        description="A service-account key (with domain-wide delegation) or OAuth authorized-user token "
        "file; defaults to PGDATAHUB_GMAIL_CREDENTIALS, else GOOGLE_APPLICATION_CREDENTIALS.",
    )
    subject: str | None = Field(
        default=None, description="The mailbox a service account reads; defaults to PGDATAHUB_GMAIL_SUBJECT."
    )
    api_endpoint: str | None = Field(default=None, description="Defaults to PGDATAHUB_GMAIL_API_ENDPOINT.")

    def settings(self) -> GmailSettings:
        return GmailSettings.from_env(
            credentials_file=self.credentials_file, subject=self.subject, api_endpoint=self.api_endpoint
        )

    def unconfigured(self) -> str | None:
        if self.settings().configured:
            return None
        return "Gmail is not configured: set PGDATAHUB_GMAIL_CREDENTIALS (or GOOGLE_APPLICATION_CREDENTIALS)"

    def source(self, state: SourceState) -> GmailSource:
        """The mailbox, searched with the queries of the mapping's ``gmail:`` block."""
        return GmailSource(self.client(), state.mapping().gmail_queries, state)

    def client(self) -> GmailClient:
        return GmailClient.from_settings(self.settings())


GMAIL = SourcePlugin(
    name="gmail",
    resource_key="gmail",
    default_resource=GmailResource,
    label="the messages the Gmail searches of the folder mapping find, and their spreadsheet attachments",
    group_name="gmail",
    kinds=frozenset({"gmail", "csv", "excel"}),
)
