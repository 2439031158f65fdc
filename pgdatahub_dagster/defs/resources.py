"""Dagster resources: where the warehouse is and which folder to import.

Both default to the environment (``PGDATAHUB_DATABASE_URL``, ``PGDATAHUB_SOURCE_DIR``,
``PGDATAHUB_CONFIG``) so that no secret needs to be written into resource config, where
the UI would show it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource
from pydantic import Field

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.settings import Settings
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import Warehouse, connect


class WarehouseResource(ConfigurableResource):  # type: ignore[misc]
    """The warehouse: ``duckdb:///path/file.duckdb`` or ``postgresql://…``."""

    database_url: str | None = Field(
        default=None,
        description="Defaults to PGDATAHUB_DATABASE_URL, else a DuckDB file under ./data. "
        "Pass secrets as EnvVar, never as plain text.",
    )

    def url(self) -> str:
        return Settings.from_env(database_url=self.database_url).database_url

    @contextmanager
    def open(self) -> Iterator[Warehouse]:
        with connect(self.url()) as warehouse:
            yield warehouse


class LocalFolderResource(ConfigurableResource):  # type: ignore[misc]
    """A local folder tree of spreadsheets and its folder mapping."""

    source_dir: str | None = Field(default=None, description="Defaults to PGDATAHUB_SOURCE_DIR.")
    config_path: str | None = Field(
        default=None, description="Defaults to PGDATAHUB_CONFIG, else pgdatahub.yaml in the source folder."
    )

    def _settings(self) -> Settings:
        return Settings.from_env(source_dir=self.source_dir, config_path=self.config_path)

    def source(self) -> LocalFolderSource:
        return LocalFolderSource(self._settings().source_dir)

    def mapping(self) -> FolderMapping:
        return FolderMapping.load(self._settings().config_path)
