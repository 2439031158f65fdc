"""Dagster resources: the warehouse, the folder mapping, and the two sources.

Each defaults to the environment (``PGDATAHUB_DATABASE_URL``, ``PGDATAHUB_CONFIG``,
``PGDATAHUB_SOURCE_DIR``, ``PGDATAHUB_DRIVE_*``) so that no secret needs to be written into
resource config, where the UI would show it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from pgdatahub_dagster.defs.crashed_runs import end_crashed_runs, record_process
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.settings import DriveSettings, Settings
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.sources.drive import DriveClient, DriveSource, FolderRegistry
from pgdatahub_dagster.engine.warehouse import Warehouse, connect


class WarehouseResource(ConfigurableResource["WarehouseResource"]):
    """The warehouse: ``duckdb:///path/file.duckdb`` or ``postgresql://…``."""

    database_url: str | None = Field(
        default=None,
        description="Defaults to PGDATAHUB_DATABASE_URL, else a DuckDB file under ./data. "
        "Pass secrets as EnvVar, never as plain text.",
    )

    def url(self) -> str:
        return Settings.from_env(database_url=self.database_url).database_url

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Before the step asks for its slot of the ``warehouse`` pool (the in-process executor
        sets resources up first): runs of this machine whose process died are marked failed and
        give their slots back, and this run records its own process for the runs after it
        (``crashed_runs``)."""
        if context.instance is not None and context.run is not None:
            for crashed in end_crashed_runs(context.instance, context.run):
                if context.log is not None:
                    context.log.warning(f"Run {crashed.run_id} had died; marked it failed, freed its slots")
            record_process(context.instance, context.run)

    @contextmanager
    def open(self, wait_seconds: float = 120.0) -> Iterator[Warehouse]:
        with connect(self.url(), wait_seconds=wait_seconds) as warehouse:
            yield warehouse


class FolderMappingResource(ConfigurableResource["FolderMappingResource"]):
    """Which table, sheet and key each folder's files use (the YAML folder mapping)."""

    config_path: str | None = Field(
        default=None,
        description="Defaults to PGDATAHUB_CONFIG, else pgdatahub.yaml in the local source folder.",
    )

    def mapping(self) -> FolderMapping:
        return FolderMapping.load(Settings.from_env(config_path=self.config_path).config_path)


class LocalFolderResource(ConfigurableResource["LocalFolderResource"]):
    """A local folder tree of spreadsheets."""

    source_dir: str | None = Field(default=None, description="Defaults to PGDATAHUB_SOURCE_DIR.")

    def source(self) -> LocalFolderSource:
        return LocalFolderSource(Settings.from_env(source_dir=self.source_dir).source_dir)


class DriveResource(ConfigurableResource["DriveResource"]):
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

    def source(self, warehouse: Warehouse) -> DriveSource:
        """The watched folders as a source; the folder registry lives in ``warehouse``."""
        return DriveSource(self.client(), FolderRegistry(warehouse))

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
