"""Jobs: what sensors and the UI launch, one import job per source (and a full-sync job for
a source that has one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import define_asset_job

from pgdatahub_dagster.defs.sources.plugin import FullSync, SourcePlugin

if TYPE_CHECKING:
    # define_asset_job's return type, which Dagster does not export.
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def import_job(plugin: SourcePlugin) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        plugin.job_name,
        selection=[plugin.asset_name],
        description=f"Import files of {plugin.label}, one partition per file.",
    )


def full_sync_job(plugin: SourcePlugin, names: FullSync) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        names.job_name,
        selection=[names.asset_name],
        description=f"A full sync of {plugin.label}: what the sensor asks for after the mapping changed.",
    )
