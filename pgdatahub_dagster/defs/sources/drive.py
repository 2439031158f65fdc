"""Google Drive as a source: the watched folders (``PGDATAHUB_DRIVE_*``), read with the
drive.readonly scope only; the folder registry lives in the warehouse."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import Field

from pgdatahub_dagster.defs.sources.plugin import SourcePlugin, SourceResource
from pgdatahub_dagster.engine.settings import DriveSettings
from pgdatahub_dagster.engine.sources import SourceState
from pgdatahub_dagster.engine.sources.drive import DriveClient, DriveSource, FolderRegistry


class DriveResource(SourceResource):
    """Google Drive folders, read with the drive.readonly scope only."""

    folder_ids: str | None = Field(
        default=None, description="Comma-separated; defaults to PGDATAHUB_DRIVE_FOLDER_ID."
    )
    credentials_file: str | None = Field(
        default=None,
        description="A service-account key or OAuth authorized-user token file; defaults to "
        "PGDATAHUB_DRIVE_CREDENTIALS, else GOOGLE_APPLICATION_CREDENTIALS.",
    )
    api_endpoint: str | None = Field(default=None, description="Defaults to PGDATAHUB_DRIVE_API_ENDPOINT.")

    def settings(self) -> DriveSettings:
        settings = DriveSettings.from_env()
        if self.folder_ids:
            settings = replace(
                settings, folder_ids=[f.strip() for f in self.folder_ids.split(",") if f.strip()]
            )
        if self.credentials_file:
            settings = replace(settings, credentials_file=Path(self.credentials_file))
        if self.api_endpoint:
            settings = replace(settings, api_endpoint=self.api_endpoint)
        return settings

    def unconfigured(self) -> str | None:
        if self.settings().configured:
            return None
        return (
            "Google Drive is not configured: set PGDATAHUB_DRIVE_FOLDER_ID and "
            "PGDATAHUB_DRIVE_CREDENTIALS (or GOOGLE_APPLICATION_CREDENTIALS)"
        )

    def source(self, state: SourceState) -> DriveSource:
        """The watched folders; the folder registry lives in ``state.warehouse()``."""
        settings = self.settings()
        return DriveSource(
            self.client(), FolderRegistry(state.warehouse()), settings.folder_ids, settings.tick_seconds
        )

    def client(self) -> DriveClient:
        settings = self.settings()
        if settings.access_token is not None:
            return DriveClient.connect_to_emulator(
                settings.access_token,
                api_endpoint=settings.api_endpoint,
                num_retries=settings.num_retries,
                chunk_bytes=settings.chunk_bytes,
            )
        assert settings.credentials_file is not None
        return DriveClient.connect(
            settings.credentials_file,
            api_endpoint=settings.api_endpoint,
            num_retries=settings.num_retries,
            chunk_bytes=settings.chunk_bytes,
        )


GOOGLE_DRIVE = SourcePlugin(
    name="drive",
    resource_key="drive",
    default_resource=DriveResource,
    label="the watched Google Drive folders (Google Sheets exported as xlsx)",
    group_name="google_drive",
    kinds=frozenset({"googledrive", "csv", "excel"}),
)
