"""Sensors: one per source, built from its plugin. Each tick asks the engine's source for its
changes since the stored cursor (``Source.changes``; how each source finds them is in its
engine module) and turns them into runs.

New files are registered as partitions of the source's import asset by the tick itself, in
one statement. A few get one import run each (run key: file id and version, new
at every change); a batch of at least ``PGDATAHUB_SENSOR_BACKFILL_FILES`` (200), or more than
the ``PGDATAHUB_SENSOR_MAX_RUNS`` runs (10) a tick may request, becomes ONE backfill of
``PGDATAHUB_FILES_PER_RUN`` files per run: Dagster's cost per tick grows with the requests it
resolves and submits, so a first load of 100k files must not be 100k runs. Files that
disappeared (deleted, trashed, moved out) lose their partitions, removed by the tick in bulk,
and one ``handle_deleted_files`` run applies their folders' ``on_delete`` setting
(``_deletions``). A source that asks for a full sync (locally: the
folder mapping was edited) gets one run of its full-sync job. A tick reports at most
``PGDATAHUB_SENSOR_MAX_FILES`` files (10,000) and works for ``PGDATAHUB_SENSOR_TICK_SECONDS``
(8) less what Dagster needs for the requests it may make (``_walk_seconds``); the rest follow
on the next ticks. A source that cannot be read at all skips the tick with the reason, and the
next tick starts from the same cursor: nothing counts as deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.metadata import RawMetadataMapping
from dagster._core.definitions.target import ExecutableDefinition
from dagster._core.errors import DagsterInvalidSubsetError
from dagster._core.execution.backfill import BulkActionsFilter

from pgdatahub_dagster.defs.assets import SHARED_RESOURCES
from pgdatahub_dagster.defs.partitions import delete_partitions, partition_key_for
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
#: What a tick takes after the source's walk, set aside from the tick's seconds: Dagster's
#: resolution and submission of one run (0.35-0.65 s at load 3-8, 2 s at load 25-30, on the
#: SQLite instance: each run a dozen storage connections and an execution plan from the code
#: server), and registering and backfilling one partition, or removing one, with its share of
#: the log (0.2 ms). Measured under the sensor daemon (bench ``tick_scale``;
#: docs/benchmarks.md, "Sensor ticks at scale"). A tick's walk keeps a third of the tick
#: whatever the reserve says.
_SECONDS_PER_RUN = 0.5
_SECONDS_PER_PARTITION = 0.0002
SOURCE_TAG = "pgdatahub/source"
#: The tag naming a backfill's batch (``_batch_key``).
BATCH_TAG = "pgdatahub/batch"
#: The sensor cursor's key for the deletion run its tick asked for (``_SensorCursor``).
_DELETION_RUN = "pgdatahub/deletion_run"
#: Files a batch's log line names.
_FILES_NAMED = 10


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _SensorCursor:
    """The sensor's cursor: the source's own (``Changes.cursor``) and, after a tick that asked
    for a deletion run, that run's key. Dagster keeps a tick's cursor only with its run
    requests, so a tick that finds the key knows the run is Dagster's to launch, and the
    deletion no longer needs keeping in the instance (``_PendingDeletion``). A cursor with no
    deletion is the source's cursor as it is."""

    source: str | None
    deletion_run: str | None = None

    def to_json(self) -> str | None:
        if self.deletion_run is None:
            return self.source
        return json.dumps({_DELETION_RUN: self.deletion_run, "source": self.source}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> _SensorCursor:
        if text is None or not text.startswith(f'{{"{_DELETION_RUN}"'):
            return cls(text)
        data = json.loads(text)
        return cls(data["source"], data[_DELETION_RUN])


@dataclass(frozen=True)
class _PendingDeletion:
    """The files a tick found gone, kept in the instance from the moment their partitions are
    removed until a later tick finds the deletion run's key in its cursor. A tick that fails
    after removing them starts again from the old cursor, where the source (which compares
    with the partitions, or reported them once) would no longer tell them: they are taken from
    here, and requested again. ``waiting`` holds the files gone beyond a tick's
    ``PGDATAHUB_SENSOR_MAX_FILES``, for the next ticks (Drive reports a file gone once)."""

    run_key: str
    #: file id → its last path: the files of the run ``run_key``, and those waiting for a tick.
    files: dict[str, str]
    waiting: dict[str, str]

    @staticmethod
    def key(plugin: SourcePlugin) -> str:
        return f"pgdatahub/pending_deletion/{plugin.name}"

    @classmethod
    def read(cls, instance: DagsterInstance, plugin: SourcePlugin) -> _PendingDeletion | None:
        text = instance.run_storage.get_cursor_values({cls.key(plugin)}).get(cls.key(plugin))
        if not text:
            return None
        data = json.loads(text)
        return cls(data["run_key"], data["files"], data["waiting"])

    def write(self, instance: DagsterInstance, plugin: SourcePlugin) -> None:
        value = {"run_key": self.run_key, "files": self.files, "waiting": self.waiting}
        instance.run_storage.set_cursor_values({self.key(plugin): json.dumps(value)})

    @classmethod
    def clear(cls, instance: DagsterInstance, plugin: SourcePlugin) -> None:
        instance.run_storage.set_cursor_values({cls.key(plugin): ""})


def _pending_deletion(context: SensorEvaluationContext, plugin: SourcePlugin) -> dict[str, str] | None:
    """The files gone that earlier ticks found and no kept tick asked a run for: file id →
    last path (None: the instance keeps no deletion). A deletion whose run key the cursor
    holds was kept by Dagster with its run; only its waiting files are left."""
    pending = _PendingDeletion.read(context.instance, plugin)
    if pending is None:
        return None
    if pending.run_key != _SensorCursor.from_json(context.cursor).deletion_run:
        return {**pending.files, **pending.waiting}
    return pending.waiting


def _deletions(
    context: SensorEvaluationContext,
    plugin: SourcePlugin,
    deleted_job: JobDefinition,
    gone: dict[str, str],
    kept: bool,
) -> RunRequest | None:
    """One run that applies on_delete to the files gone (file id → last path), at most
    ``PGDATAHUB_SENSOR_MAX_FILES`` of them (the rest wait for the next ticks), and the
    removal of their partitions, in bulk, so each disappearance is handled once: Dagster's
    own removal (a ``DeleteDynamicPartitionsRequest``) takes two queries a key, minutes for
    10,000 files, and happens before Dagster keeps the tick's run requests. The files are
    kept in the instance first, so a tick that fails after the removal asks for them again
    (``_PendingDeletion``). The run key holds the cursor the tick started from: a re-evaluated
    tick asks for the same run, while a file deleted, restored and deleted again gets a new
    one. ``kept``: the instance keeps a deletion, which this tick replaces or ends."""
    if not gone:
        if kept:
            _PendingDeletion.clear(context.instance, plugin)
        return None
    file_ids, limit = sorted(gone), SensorSettings.from_env().max_files
    now, later = file_ids[:limit], file_ids[limit:]
    request = RunRequest(
        job_name=deleted_job.name,
        run_key=f"deleted:{_digest(context.cursor or '', *(partition_key_for(f) for f in now))}",
        run_config={"ops": {"handle_deleted_files_op": {"config": {"source": plugin.name, "file_ids": now}}}},
        tags={SOURCE_TAG: plugin.name},
    )
    pending = _PendingDeletion(str(request.run_key), {f: gone[f] for f in now}, {f: gone[f] for f in later})
    pending.write(context.instance, plugin)
    delete_partitions(context.instance, plugin.partitions_name, [partition_key_for(f) for f in now])
    if later:
        context.log.info(f"{len(later)} more files gone wait for the next ticks")
    return request


def _log_removed(context: SensorEvaluationContext, gone: dict[str, str]) -> None:
    """A line per file gone when they are few, else their count with the first few."""
    if len(gone) <= SensorSettings.from_env().max_runs:
        for file_id in sorted(gone):
            context.log.info(f"REMOVED {_label(file_id, gone[file_id])}: no longer in the source")
        return
    shown = ", ".join(_label(file_id, gone[file_id]) for file_id in sorted(gone)[:_FILES_NAMED])
    more = f" and {len(gone) - _FILES_NAMED} more" if len(gone) > _FILES_NAMED else ""
    context.log.info(f"REMOVED {len(gone)} files, no longer in the source: {shown}{more}")


def _label(file_id: str, path: str) -> str:
    return path if path == file_id else f"{path} ({file_id})"


def _log_found(context: SensorEvaluationContext, files: list[SourceFile], known: frozenset[str]) -> list[str]:
    """Log the new and changed files, each on its own line when they get a run each, else
    by count with the first few (a line per file was a quarter of a tick reporting 10,000,
    and the backfill lists its partitions); the partition keys of the new ones, to register."""
    new: list[SourceFile] = []
    changed: list[SourceFile] = []
    for file in files:
        (changed if partition_key_for(file.file_id) in known else new).append(file)
    if _is_batch(files):
        for word, group in (("NEW", new), ("CHANGED", changed)):
            if group:
                shown = ", ".join(_label(file.file_id, file.path) for file in group[:_FILES_NAMED])
                more = f" and {len(group) - _FILES_NAMED} more" if len(group) > _FILES_NAMED else ""
                context.log.info(f"{word} {len(group)} files: {shown}{more}")
    else:
        new_ids = {file.file_id for file in new}
        for file in files:
            word = "NEW" if file.file_id in new_ids else "CHANGED"
            context.log.info(f"{word} {_label(file.file_id, file.path)}")
    return [partition_key_for(file.file_id) for file in new]


def _request_import(plugin: SourcePlugin, file: SourceFile) -> RunRequest:
    """One run for a new or changed file. Its run key (file id and version) is new at every
    change of the file, restored content included, and the same when a tick is evaluated
    again; a run that finds its work done records ``skipped``."""
    return RunRequest(
        job_name=plugin.job_name,
        partition_key=partition_key_for(file.file_id),
        run_key=f"{file.file_id}:{file.version}",
        tags={SOURCE_TAG: plugin.name},
    )


def _batch_key(files: list[SourceFile]) -> str:
    """What identifies a batch: its files at their versions. A tick evaluated again reports
    the same batch; any later change of any of its files makes a new one."""
    return _digest(*sorted(f"{file.file_id}:{file.version}" for file in files))


def _request_backfill(
    context: SensorEvaluationContext, plugin: SourcePlugin, files: list[SourceFile]
) -> list[RunRequest]:
    """One backfill of the files' partitions, run ``PGDATAHUB_FILES_PER_RUN`` files per run
    (the import asset's ``BackfillPolicy``). Dagster gives a backfill no run key, so the batch's
    tag stands in for one: a tick evaluated again finds the backfill it launched and asks for
    none. A batch with any file at a new version has a new tag, so no old backfill blocks it."""
    batch = _batch_key(files)
    launched = context.instance.get_backfills(
        filters=BulkActionsFilter(tags={BATCH_TAG: batch, SOURCE_TAG: plugin.name}), limit=1
    )
    if launched:
        context.log.info(f"backfill {launched[0].backfill_id} holds these {len(files)} files already")
        return []
    keys = sorted({partition_key_for(file.file_id) for file in files})
    # Dagster's serdes decorator hides the NamedTuple's defaults from mypy.
    subset = AssetGraphSubset(  # type: ignore[call-arg]
        partitions_subsets_by_asset_key={
            AssetKey(plugin.asset_name): plugin.partitions_def.subset_with_partition_keys(keys)
        }
    )
    context.log.info(f"BACKFILL of {len(keys)} files, {SensorSettings.from_env().files_per_run} per run")
    return [RunRequest.for_asset_graph_subset(subset, tags={SOURCE_TAG: plugin.name, BATCH_TAG: batch})]


def _is_batch(files: list[SourceFile]) -> bool:
    """Whether the files become one backfill: at least ``PGDATAHUB_SENSOR_BACKFILL_FILES``
    of them, or more than the tick's runs."""
    settings = SensorSettings.from_env()
    return len(files) >= settings.backfill_files or len(files) > settings.max_runs


def _request_imports(
    context: SensorEvaluationContext, plugin: SourcePlugin, files: list[SourceFile]
) -> list[RunRequest]:
    """A run per file for a few files; one backfill for a batch."""
    if not files:
        return []
    if _is_batch(files):
        return _request_backfill(context, plugin, files)
    return [_request_import(plugin, file) for file in files]


def _full_sync(context: SensorEvaluationContext, plugin: SourcePlugin) -> RunRequest:
    """One full sync. Its run key holds the cursor the tick started from, as a deletion
    run's does: the same on a re-evaluated tick, new at each later request."""
    if plugin.full_sync is None:
        raise TypeError(f"the source {plugin.name} asked for a full sync, but has no full-sync job")
    return RunRequest(
        job_name=plugin.full_sync.job_name,
        run_key=f"full_sync:{_digest(context.cursor or '')}",
        tags={SOURCE_TAG: plugin.name},
    )


def _result(
    context: SensorEvaluationContext,
    plugin: SourcePlugin,
    runs: list[RunRequest],
    removed: int,
    new_keys: list[str],
    cursor: str | None,
) -> SensorResult:
    if not (runs or new_keys):
        context.log.info("idle: no new, changed or deleted files")
        return SensorResult(skip_reason="idle: no new, changed or deleted files", cursor=cursor)
    backfills = sum(run.requires_backfill_daemon() for run in runs)
    context.log.info(
        f"DONE: requested {len(runs) - backfills} runs and {backfills} backfills, "
        f"{len(new_keys)} new files, {removed} removed"
    )
    if new_keys:
        # Registered here, in one statement, not handed to Dagster as a partition request: the
        # daemon checks each key of a request in a query of its own before adding them (18 ms
        # a key on the SQLite instance at load 10: 10,000 new files made a tick of 3 minutes;
        # docs/benchmarks.md, "Sensor ticks at scale"). A tick that fails after this reports
        # the same files again from its old cursor, and adding a partition twice is a no-op.
        context.instance.add_dynamic_partitions(plugin.partitions_name, new_keys)
    return SensorResult(run_requests=runs, cursor=cursor)


def _walk_seconds(settings: SensorSettings) -> float:
    """The source's share of the tick: what the tick and Dagster do with its result (register
    and remove partitions, create and submit the runs) counts against Dagster's limit too, so
    it is set aside for the most a tick can ask for: its runs, ``max_files`` files new and as
    many gone (at the defaults 5 + 4 s of 8, so the walk keeps its third, 2.7 s)."""
    partitions = 2 * settings.max_files
    reserved = settings.max_runs * _SECONDS_PER_RUN + partitions * _SECONDS_PER_PARTITION
    return max(settings.tick_seconds - reserved, settings.tick_seconds / 3)


def _changes(
    context: SensorEvaluationContext, plugin: SourcePlugin, resource: SourceResource
) -> tuple[Changes, frozenset[str]]:
    """The source's changes, and its partitions as they were before this tick."""
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
        budget = Budget(settings.max_files, _walk_seconds(settings))
        changes = resource.source(state).changes(_SensorCursor.from_json(context.cursor).source, budget)
        return changes, state.partition_keys()


def source_sensor(
    plugin: SourcePlugin, jobs: list[UnresolvedAssetJobDefinition], deleted_job: JobDefinition
) -> SensorDefinition:
    """The source's sensor; ``jobs``: its import job and full-sync job, if any."""

    def follow_source(context: SensorEvaluationContext, **_resources: object) -> SensorResult:
        # Called directly (tests, bench), Dagster also passes the required resources as keyword
        # arguments; the daemon does not. Both put them in context.resources.
        resource: SourceResource = getattr(context.resources, plugin.resource_key)
        if (reason := resource.unconfigured()) is not None:
            return SensorResult(skip_reason=reason, cursor=context.cursor)
        # Files gone that earlier ticks found and no kept tick asked a run for.
        pending = _pending_deletion(context, plugin)
        try:
            changes, known = _changes(context, plugin, resource)
        except SourceUnavailableError as error:
            # An unmounted share, refused credentials, an API failing after every retry: one
            # clear line, and the next tick starts from the same cursor (this one changed nothing).
            context.log.error(str(error))
            return SensorResult(skip_reason=str(error), cursor=context.cursor)
        for line in changes.log:
            context.log.info(line)
        gone = {
            file_id: path for file_id, path in changes.removed.items() if partition_key_for(file_id) in known
        }
        gone.update(pending or {})
        for file in changes.found:  # back meanwhile (a file waiting, or a failed tick's)
            gone.pop(file.file_id, None)
        _log_removed(context, gone)
        deletion = _deletions(context, plugin, deleted_job, gone, pending is not None)
        runs = [deletion] if deletion else []
        cursor = _SensorCursor(changes.cursor, deletion.run_key if deletion else None).to_json()
        if changes.full_sync:
            runs.append(_full_sync(context, plugin))
        if changes.found:
            context.log.info(f"Change detected: {len(changes.found)} spreadsheets new or changed")
        new_keys = _log_found(context, changes.found, known)
        runs += _request_imports(context, plugin, changes.found)
        return _result(context, plugin, runs, len(gone), new_keys, cursor)

    return _SourceSensor(
        AssetKey(plugin.asset_name),
        name=plugin.sensor_name,
        evaluation_fn=follow_source,
        jobs=[*jobs, deleted_job],
        minimum_interval_seconds=SensorSettings.from_env().interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        required_resource_keys={*SHARED_RESOURCES, plugin.resource_key},
        description=f"Registers each new or changed spreadsheet of {plugin.label} as a partition and "
        "requests an import run for it, or one backfill for a large batch; hands files gone to "
        "handle_deleted_files.",
    )


class _SourceSensor(SensorDefinition):
    """A sensor that targets jobs (the import, full-sync and deletion jobs) and may launch
    backfills of its import asset. Dagster accepts backfill requests only from sensors that
    target an asset selection, and a sensor cannot target both; this one checks a backfill
    request against its import asset instead."""

    def __init__(self, import_asset: AssetKey, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._import_asset = import_asset

    def validate_backfill_requests(
        self, run_requests: Sequence[RunRequest], context: SensorEvaluationContext
    ) -> Sequence[RunRequest]:
        for run_request in run_requests:
            subset = run_request.asset_graph_subset
            if subset is None or set(subset.asset_keys) != {self._import_asset}:
                raise DagsterInvalidSubsetError(
                    f"sensor {self.name} launches backfills of {self._import_asset.to_user_string()} only"
                )
        return run_requests

    def with_attributes(
        self,
        *,
        jobs: Sequence[ExecutableDefinition] | None = None,
        metadata: RawMetadataMapping | None = None,
    ) -> SensorDefinition:
        # Definitions binds the jobs' resources through this copy; it must stay a _SourceSensor.
        copy = super().with_attributes(jobs=jobs, metadata=metadata)
        copy.__class__ = _SourceSensor
        assert isinstance(copy, _SourceSensor)
        copy._import_asset = self._import_asset
        return copy
