"""Local folders as a source: a folder tree of spreadsheets (``PGDATAHUB_SOURCE_DIR``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pgdatahub_dagster.defs.sources.plugin import FullSync, SourcePlugin, SourceResource
from pgdatahub_dagster.engine.settings import SensorSettings, Settings
from pgdatahub_dagster.engine.sources import LocalFolderSource, SourceState


class LocalFolderResource(SourceResource):
    """A local folder tree of spreadsheets."""

    source_dir: str | None = Field(default=None, description="Defaults to PGDATAHUB_SOURCE_DIR.")

    def root(self) -> Path:
        return Settings.from_env(source_dir=self.source_dir).source_dir

    def source(self, state: SourceState) -> LocalFolderSource:
        return LocalFolderSource(self.root(), state, settle_seconds=SensorSettings.from_env().settle_seconds)


LOCAL_FOLDER = SourcePlugin(
    name="local",
    resource_key="local_folder",
    default_resource=LocalFolderResource,
    label="the local folder tree",
    group_name="local_folder",
    kinds=frozenset({"polars", "csv", "excel"}),
    # The names of the first release, kept so that instances keep their history.
    sensor_name="local_folder_sensor",
    full_sync=FullSync(asset_name="local_folder_sync", job_name="sync_local_folder"),
)
