"""Dagster resources shared by every source: the warehouse and the folder mapping. Each
source's own resource is in its module under ``defs/sources/``.

Each defaults to the environment (``PGDATAHUB_DATABASE_URL``, ``PGDATAHUB_CONFIG``) so that no
secret needs to be written into resource config, where the UI would show it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from pgdatahub_dagster.defs.crashed_runs import end_crashed_runs, record_process
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.settings import Settings
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
