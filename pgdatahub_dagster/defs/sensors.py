"""Sensors: one per source, built from its plugin. Each tick asks the engine's source for its
changes since the stored cursor (``Source.changes``; how each source finds them is in its
engine module) and turns them into runs.

A new or changed file is registered as a partition of the source's import asset and gets one
import run (run key: file id and version, new at every change). A file that disappeared
(deleted, trashed, moved out) loses its partition, and one ``handle_deleted_files`` run
applies its folder's ``on_delete`` setting. A source that asks for a full sync (locally: the
folder mapping was edited) gets one run of its full-sync job. A tick requests at most
``PGDATAHUB_SENSOR_MAX_RUNS`` import runs (100) and works for ``PGDATAHUB_SENSOR_TICK_SECONDS``
(30); the rest follow on the next ticks. A source that cannot be read at all skips the tick
with the reason, and the next tick starts from the same cursor: nothing counts as deleted.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from typing import TYPE_CHECKING

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from pgdatahub_dagster.defs.assets import SHARED_RESOURCES
from pgdatahub_dagster.defs.partitions import file_id_for, partition_key_for
from pgdatahub_dagster.defs.sources.plugin import DagsterSourceState, SourcePlugin, SourceResource
from pgdatahub_dagster.engine.settings import SensorSettings
from pgdatahub_dagster.engine.sources import Budget, Changes, SourceFile, SourceUnavailableError

if TYPE_CHECKING:
    # define_asset_job's return type, which Dagster does not export.
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# A sensor that reads and updates a source's tables in the warehouse (Drive's folder
# registry) waits this long for a DuckDB file busy with an import; past it the tick fails
# and is retried.
_WAREHOUSE_WAIT_SECONDS = 15.0


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _deletions(
    plugin: SourcePlugin, deleted_job: JobDefinition, gone: list[str], cursor: str | None
) -> tuple[list[RunRequest], list[DeleteDynamicPartitionsRequest]]:
    """One run that applies on_delete to the files whose partitions are gone, and the
    removal of those partitions (so each disappearance is handled once). The run key holds
    the cursor the tick started from: a re-evaluated tick asks for the same run, while a
    file deleted, restored and deleted again gets a new one."""
    if not gone:
        return [], []
    request = RunRequest(
        job_name=deleted_job.name,
        run_key=f"deleted:{_digest(cursor or '', *sorted(gone))}",
        run_config={
            "ops": {
                "handle_deleted_files_op": {
                    "config": {"source": plugin.name, "file_ids": [file_id_for(key) for key in sorted(gone)]}
                }
            }
        },
        tags={"pgdatahub/source": plugin.name},
    )
    return [request], [plugin.partitions_def.build_delete_request(sorted(gone))]


def _label(file_id: str, path: str) -> str:
    return path if path == file_id else f"{path} ({file_id})"


def _request_import(
    context: SensorEvaluationContext,
    plugin: SourcePlugin,
    file: SourceFile,
    known: set[str],
    new_keys: list[str],
) -> RunRequest:
    """One run for a new or changed file. Its run key (file id and version) is new at every
    change of the file, restored content included, and the same when a tick is evaluated
    again; a run that finds its work done records ``skipped``."""
    key = partition_key_for(file.file_id)
    if key in known:
        context.log.info(f"CHANGED {_label(file.file_id, file.path)}")
    else:
        new_keys.append(key)
        context.log.info(f"NEW {_label(file.file_id, file.path)}")
    return RunRequest(
        job_name=plugin.job_name,
        partition_key=key,
        run_key=f"{file.file_id}:{file.version}",
        tags={"pgdatahub/source": plugin.name},
    )


def _full_sync(context: SensorEvaluationContext, plugin: SourcePlugin) -> RunRequest:
    """One full sync. Its run key holds the cursor the tick started from, as a deletion
    run's does: the same on a re-evaluated tick, new at each later request."""
    if plugin.full_sync is None:
        raise TypeError(f"the source {plugin.name} asked for a full sync, but has no full-sync job")
    return RunRequest(
        job_name=plugin.full_sync.job_name,
        run_key=f"full_sync:{_digest(context.cursor or '')}",
        tags={"pgdatahub/source": plugin.name},
    )


def _result(
    context: SensorEvaluationContext,
    plugin: SourcePlugin,
    runs: list[RunRequest],
    removals: list[DeleteDynamicPartitionsRequest],
    new_keys: list[str],
    cursor: str,
) -> SensorResult:
    if not runs:
        context.log.info("idle: no new, changed or deleted files")
        return SensorResult(skip_reason="idle: no new, changed or deleted files", cursor=cursor)
    context.log.info(
        f"DONE: requested {len(runs)} runs, {len(new_keys)} for new files, {len(removals)} removals"
    )
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = list(removals)
    if new_keys:
        requests.append(plugin.partitions_def.build_add_request(new_keys))
    return SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=cursor)


def _changes(context: SensorEvaluationContext, plugin: SourcePlugin, resource: SourceResource) -> Changes:
    settings = SensorSettings.from_env()
    with ExitStack() as stack:
        state = DagsterSourceState(
            context.instance,
            plugin,
            context.resources.folder_mapping.mapping,
            lambda: stack.enter_context(
                context.resources.warehouse.open(wait_seconds=_WAREHOUSE_WAIT_SECONDS)
            ),
        )
        return resource.source(state).changes(
            context.cursor, Budget(settings.max_runs, settings.tick_seconds)
        )


def source_sensor(
    plugin: SourcePlugin, jobs: list[UnresolvedAssetJobDefinition], deleted_job: JobDefinition
) -> SensorDefinition:
    """The source's sensor; ``jobs``: its import job and full-sync job, if any."""

    @sensor(
        name=plugin.sensor_name,
        jobs=[*jobs, deleted_job],
        minimum_interval_seconds=SensorSettings.from_env().interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys={*SHARED_RESOURCES, plugin.resource_key},
        description=f"Registers each new or changed spreadsheet of {plugin.label} as a partition and "
        "requests an import run for it; hands files gone to handle_deleted_files.",
    )
    def follow_source(context: SensorEvaluationContext, **_resources: object) -> SensorResult:
        # Called directly (tests, bench), Dagster also passes the required resources as keyword
        # arguments; the daemon does not. Both put them in context.resources.
        resource: SourceResource = getattr(context.resources, plugin.resource_key)
        if (reason := resource.unconfigured()) is not None:
            return SensorResult(skip_reason=reason, cursor=context.cursor)
        try:
            changes = _changes(context, plugin, resource)
        except SourceUnavailableError as error:
            # An unmounted share, refused credentials, an API failing after every retry: one
            # clear line, and the next tick starts from the same cursor (this one changed nothing).
            context.log.error(str(error))
            return SensorResult(skip_reason=str(error), cursor=context.cursor)
        for line in changes.log:
            context.log.info(line)
        known = set(context.instance.get_dynamic_partitions(plugin.partitions_name))
        gone = sorted({partition_key_for(file_id) for file_id in changes.removed} & known)
        for key in gone:
            file_id = file_id_for(key)
            context.log.info(f"REMOVED {_label(file_id, changes.removed[file_id])}: no longer in the source")
        runs, removals = _deletions(plugin, deleted_job, gone, context.cursor)
        if changes.full_sync:
            runs.append(_full_sync(context, plugin))
        if changes.found:
            context.log.info(f"Change detected: {len(changes.found)} spreadsheets new or changed")
        new_keys: list[str] = []
        runs += [_request_import(context, plugin, file, known, new_keys) for file in changes.found]
        return _result(context, plugin, runs, removals, new_keys, changes.cursor)

    return follow_source
