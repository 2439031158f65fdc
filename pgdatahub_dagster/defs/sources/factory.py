"""One factory for every source: its partitions, import asset, job and sensor (and full-sync
asset and job, if it has one), with the names its ``SourcePlugin`` gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster import AssetsDefinition, JobDefinition, SensorDefinition

from pgdatahub_dagster.defs.assets import full_sync_asset, import_asset
from pgdatahub_dagster.defs.jobs import full_sync_job, import_job
from pgdatahub_dagster.defs.operations import handle_deleted_files_job
from pgdatahub_dagster.defs.sensors import source_sensor
from pgdatahub_dagster.defs.sources.plugin import SourcePlugin, SourceResource

if TYPE_CHECKING:
    # define_asset_job's return type, which Dagster does not export.
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


@dataclass(frozen=True)
class SourceDefinitions:
    """What the sources add to the code location."""

    assets: list[AssetsDefinition]
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition]
    sensors: list[SensorDefinition]
    #: Each source's resource, from the environment, for the keys a caller does not set.
    default_resources: dict[str, SourceResource]


def source_definitions(plugins: Sequence[SourcePlugin]) -> SourceDefinitions:
    names = [plugin.name for plugin in plugins]
    if len(set(names)) != len(names):
        raise ValueError(f"two sources share a name: {names}")
    deleted = handle_deleted_files_job(plugins)
    assets: list[AssetsDefinition] = []
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition] = [deleted]
    sensors = []
    for plugin in plugins:
        source_jobs = [import_job(plugin)]
        assets.append(import_asset(plugin))
        if plugin.full_sync is not None:
            assets.append(full_sync_asset(plugin, plugin.full_sync))
            source_jobs.append(full_sync_job(plugin, plugin.full_sync))
        jobs += source_jobs
        sensors.append(source_sensor(plugin, source_jobs, deleted))
    return SourceDefinitions(
        assets, jobs, sensors, {plugin.resource_key: plugin.default_resource() for plugin in plugins}
    )
