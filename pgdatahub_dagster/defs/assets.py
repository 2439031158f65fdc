"""Assets that import files, one pair per source; all the work happens in the engine's
``Importer``.

A source's import asset (``local_spreadsheets``, ``drive_spreadsheets``) has one partition
per file: sensors request them per file and backfills import many files per run
(``BackfillPolicy.multi_run``). Every one of them goes through ``_import_partitions``. A
source's full-sync asset (``local_folder_sync``) syncs it whole in one run (imports, and
``on_delete`` for files gone): the command for CI and the quick start. Both report each
file's outcome as metadata and fail the run when any file failed, after every other file has
been imported and committed. A system fault (the warehouse lost, a full disk) stops the run
at once with its own message; a full sync has reported every file committed before it already.
"""

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    asset,
)

from pgdatahub_dagster.defs.partitions import file_id_for, partition_key_for
from pgdatahub_dagster.defs.sources.plugin import DagsterSourceState, FullSync, SourcePlugin, SourceResource
from pgdatahub_dagster.defs.tables import progress_logger, report_failure, report_tables
from pgdatahub_dagster.engine.errors import PgDataHubError
from pgdatahub_dagster.engine.importer import Importer, ImportResult, skip_reason
from pgdatahub_dagster.engine.lifecycle import DeletionOutcome, record_deletion
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.settings import SensorSettings
from pgdatahub_dagster.engine.sources import FileRefusedError, Source, SourceFile, SourceUnavailableError
from pgdatahub_dagster.engine.warehouse import Warehouse

#: Imports share this Dagster pool; its limit (dagster.yaml) keeps backfills from
#: swamping the warehouse, and keeps DuckDB, which has one writer, to one import at a time.
WAREHOUSE_POOL = "warehouse"
#: The resources every source's assets use besides its own.
SHARED_RESOURCES = frozenset({"warehouse", "folder_mapping"})
_LISTED_FILES = 200
#: How often a long run logs how far it has got.
_PROGRESS_SECONDS = 10.0


def file_metadata(result: ImportResult) -> dict[str, Any]:
    record = result.record
    metadata: dict[str, Any] = {
        "status": record.status,
        "table": record.table_name,
        "source_file": record.source_file,
        "rows_read": record.rows_read,
        "rows_inserted": record.rows_inserted,
        "rows_duplicate": record.rows_duplicate,
        "file_sha256": record.file_sha256,
        "schema_changes": MetadataValue.json(
            [
                {
                    "change": change.change_type,
                    "column": change.column_name,
                    "old_type": change.old_type,
                    "new_type": change.new_type,
                }
                for change in result.schema_changes
            ]
        ),
    }
    if record.status == "skipped":
        metadata["reason"] = skip_reason(record)
    if record.sheet_name:
        metadata["sheet"] = record.sheet_name
    if record.duplicate_of:
        metadata["duplicate_of"] = record.duplicate_of
    if record.error:
        metadata["error"] = record.error
    return metadata


def _summary(results: list[ImportResult]) -> dict[str, Any]:
    def count(status: str) -> int:
        return sum(result.status == status for result in results)

    lines = ["| file | table | status | new rows | duplicates |", "|---|---|---|---|---|"]
    for result in results[:_LISTED_FILES]:
        record = result.record
        lines.append(
            f"| {record.source_file} | {record.table_name} | {record.status} "
            f"| {record.rows_inserted} | {record.rows_duplicate} |"
        )
    if len(results) > _LISTED_FILES:
        lines.append(f"| … and {len(results) - _LISTED_FILES} more | | | | |")
    return {
        "files": len(results),
        "imported": count("success"),
        "skipped": count("skipped"),
        "failed": count("failed"),
        "rows_inserted": sum(result.record.rows_inserted for result in results),
        "rows_duplicate": sum(result.record.rows_duplicate for result in results),
        "tables": sorted({result.record.table_name for result in results}),
        "results": MetadataValue.md("\n".join(lines)),
    }


@contextmanager
def _system_faults_stop_the_run() -> Iterator[None]:
    """What escapes the engine is a system fault or a broken configuration (a file's own
    errors fail only that file): the run fails with the engine's message alone, not with the
    driver's traceback."""
    try:
        yield
    except PgDataHubError as error:
        raise Failure(
            description=f"{error} (the run stopped; the files it imported before stay imported, "
            "and a new run goes on from there)"
        ) from None


def _import(
    context: AssetExecutionContext,
    importer: Importer,
    files: Iterable[SourceFile],
    files_asset: AssetKey,
    committed: Callable[[SourceFile, ImportResult], None] | None = None,
) -> list[ImportResult]:
    """Import the files one by one; ``committed`` hears of each file imported or skipped,
    as soon as it is, so a run that stops later has reported it already. A failed file's
    reason goes on its partition of ``files_asset``, the source's partitioned asset, and in
    a line of its own; the others are counted in a line every ``_PROGRESS_SECONDS`` and one
    at the end (each file's figures are in its materialisation's metadata): every log line
    is an event Dagster stores, 5–60 ms each on its SQLite instance by the machine's load,
    as much as a small file's import (docs/benchmarks.md)."""
    importer.progress = progress_logger(context)
    results: list[ImportResult] = []
    logged_at = time.monotonic()
    for file in files:
        result = importer.import_file(file)
        if result.failed:
            context.log.error(f"FAILED {result.record.error}")
        report_failure(context, files_asset, result)
        if committed is not None and not result.failed:
            committed(file, result)
        results.append(result)
        if time.monotonic() - logged_at >= _PROGRESS_SECONDS:
            context.log.info(f"IMPORTING: {_counts(results)} so far")
            logged_at = time.monotonic()
    context.log.info(f"DONE: {_counts(results)}")
    report_tables(
        context, importer.warehouse, [r.record.table_name for r in results if r.status == "success"]
    )
    return results


def _counts(results: list[ImportResult]) -> str:
    def count(status: str) -> int:
        return sum(result.status == status for result in results)

    rows = sum(result.record.rows_inserted for result in results)
    return (
        f"{len(results)} files, {count('success')} imported ({rows:,} new rows), "
        f"{count('skipped')} skipped, {count('failed')} failed"
    )


def apply_deletions(
    context: AssetExecutionContext | OpExecutionContext,
    warehouse: Warehouse,
    mapping: FolderMapping,
    file_ids: Iterable[str],
) -> list[DeletionOutcome]:
    """Apply each gone file's ``on_delete``, logging what happened to its rows."""
    outcomes: list[DeletionOutcome] = []
    for file_id in file_ids:
        done = record_deletion(warehouse, mapping, file_id, context.run.run_id)
        if not done:
            context.log.info(f"DELETED {file_id}: it held no rows")
        for outcome in done:
            if outcome.status == "retracted":
                removed = f"{outcome.rows_deleted} rows left {outcome.table_name}"
                context.log.info(f"RETRACTED {outcome.source_file}: {removed} (rows other files hold stay)")
            else:
                context.log.info(
                    f"DELETED {outcome.source_file}: rows kept in {outcome.table_name} (on_delete: keep)"
                )
        outcomes += done
    report_tables(context, warehouse, [outcome.table_name for outcome in outcomes])
    return outcomes


def _listed(source: Source) -> list[SourceFile]:
    """Every file of the source; a source that cannot be read fails the run, naming it,
    and never counts as a source whose files were all deleted."""
    try:
        return list(source.list_files())
    except SourceUnavailableError as error:
        raise Failure(description=str(error)) from None


def _result(results: list[ImportResult], metadata: dict[str, Any]) -> MaterializeResult[None]:
    """``metadata`` for the materialisation; a run that failed gets the run's summary."""
    failed = [result.record for result in results if result.failed]
    if failed:
        reasons = "\n".join(f"- {record.error}" for record in failed)
        raise Failure(
            description=f"{len(failed)} of {len(results)} files failed; the others were imported:\n{reasons}",
            metadata=metadata or _summary(results),
        )
    return MaterializeResult(metadata=metadata)


def _import_partitions(
    context: AssetExecutionContext, warehouse: Warehouse, source: Source, mapping: FolderMapping
) -> MaterializeResult[None]:
    """Import the run's partitions. Each partition's materialisation carries its own file's
    metadata (``add_asset_metadata``); Dagster writes a run's materialisations as one batch
    where its storage can (``DAGSTER_EVENT_BATCH_SIZE``, docs/deployment.md)."""
    keys: list[str] = []
    files: list[SourceFile] = []
    refused: list[str] = []
    for key in context.partition_keys:
        try:
            files.append(source.get_file(file_id_for(key)))
            keys.append(key)
        except FileRefusedError as error:
            refused.append(str(error))
        except FileNotFoundError as error:
            # Gone since the partition was registered: the deletion run handles it.
            context.log.warning(f"SKIPPED {error}")
        except SourceUnavailableError as error:
            raise Failure(description=str(error)) from None
    importer = Importer(warehouse, source, mapping, run_id=context.run.run_id)
    results = _import(context, importer, files, context.asset_key)
    if len(context.partition_keys) == 1:
        metadata = file_metadata(results[0]) if results else {}
    else:
        for key, result in zip(keys, results, strict=True):
            _add_partition_metadata(context, key, file_metadata(result))
        metadata = {}
    if refused:
        reasons = "\n".join(f"- {reason}" for reason in refused)
        raise Failure(description=f"{len(refused)} partitions name no file of the source:\n{reasons}")
    return _result(results, metadata)


def _add_partition_metadata(context: AssetExecutionContext, key: str, metadata: Mapping[str, Any]) -> None:
    """What ``context.add_asset_metadata(metadata, partition_key=key)`` does, without its check
    that ``key`` is one of the run's (it is: it comes from ``context.partition_keys``). That
    check reads every partition key of the asset from the instance, in three queries, at each
    call: a run of 200 files over an asset of 100,000 partitions read 20 million keys, and on
    the SQLite instance the queries alone took 37 ms a file (docs/benchmarks.md, *Dagster's
    cost per file*). Dagster 1.13 has no public way to attach a partition's metadata
    unchecked; ``test_a_run_of_many_partitions_gives_each_its_own_file_metadata`` holds this
    to what the public call records."""
    step = context.op_execution_context._step_execution_context
    step._metadata_accumulator = step._metadata_accumulator.with_additional_asset_metadata(
        asset_key=context.asset_key, partition_key=key, metadata=metadata
    )


def import_asset(plugin: SourcePlugin) -> AssetsDefinition:
    """The source's files, one partition per file, through ``_import_partitions``."""

    @asset(
        name=plugin.asset_name,
        partitions_def=plugin.partitions_def,
        backfill_policy=BackfillPolicy.multi_run(
            max_partitions_per_run=SensorSettings.from_env().files_per_run
        ),
        pool=WAREHOUSE_POOL,
        group_name=plugin.group_name,
        kinds=set(plugin.kinds),
        description=f"The spreadsheets of {plugin.label}, one partition per file, loaded into the "
        "warehouse tables the folder mapping names.",
        required_resource_keys={*SHARED_RESOURCES, plugin.resource_key},
    )
    def import_files(context: AssetExecutionContext) -> MaterializeResult[None]:
        resource: SourceResource = getattr(context.resources, plugin.resource_key)
        mapping = context.resources.folder_mapping.mapping()
        with _system_faults_stop_the_run(), context.resources.warehouse.open() as opened:
            state = DagsterSourceState(context.instance, plugin, lambda: mapping, lambda: opened)
            return _import_partitions(context, opened, resource.source(state), mapping)

    return import_files


def full_sync_asset(plugin: SourcePlugin, names: FullSync) -> AssetsDefinition:
    """A full sync of the source in one run: new and changed files are imported, and files
    gone get their folder's ``on_delete``, so the warehouse ends equal to the source.

    New files are registered as partitions of the source's import asset (gone ones removed),
    and each imported file is recorded as a materialisation of its partition, so the UI shows
    the same state whichever way a file was imported."""

    @asset(
        name=names.asset_name,
        pool=WAREHOUSE_POOL,
        group_name=plugin.group_name,
        kinds=set(plugin.kinds),
        description=f"A full sync of {plugin.label} in one run: new and changed files are imported, "
        "and files gone get their folder's on_delete, so the warehouse ends equal to the source.",
        required_resource_keys={*SHARED_RESOURCES, plugin.resource_key},
    )
    def full_sync(context: AssetExecutionContext) -> MaterializeResult[None]:
        resource: SourceResource = getattr(context.resources, plugin.resource_key)
        partitions = plugin.partitions_name
        with _system_faults_stop_the_run(), ExitStack() as stack:
            state = DagsterSourceState(
                context.instance,
                plugin,
                context.resources.folder_mapping.mapping,
                lambda: stack.enter_context(context.resources.warehouse.open()),
            )
            source = resource.source(state)
            # Listed before the warehouse is opened: a source that cannot be read stops here.
            files = _listed(source)
            present = {partition_key_for(file.file_id) for file in files}
            known = set(context.instance.get_dynamic_partitions(partitions))
            new_keys = sorted(present - known)
            if new_keys:
                context.instance.add_dynamic_partitions(partitions, new_keys)

            def committed(file: SourceFile, result: ImportResult) -> None:
                context.log_event(
                    AssetMaterialization(
                        asset_key=AssetKey(plugin.asset_name),
                        partition=partition_key_for(file.file_id),
                        metadata=file_metadata(result),
                    )
                )

            mapping = state.mapping()
            opened = state.warehouse()
            importer = Importer(opened, source, mapping, run_id=context.run.run_id)
            results = _import(context, importer, files, AssetKey(plugin.asset_name), committed)
            gone = sorted(opened.live_file_ids(source.name) - {file.file_id for file in files})
            deletions = apply_deletions(context, opened, mapping, gone)
        for key in sorted(known - present):
            context.instance.delete_dynamic_partition(partitions, key)
        metadata = _summary(results)
        metadata["files_gone"] = len(gone)
        metadata["rows_retracted"] = sum(outcome.rows_deleted for outcome in deletions)
        return _result(results, metadata)

    return full_sync
