"""Assets that import files; all the work happens in the engine's ``Importer``.

``local_spreadsheets`` and ``drive_spreadsheets`` have one partition per file: sensors
request them per file and backfills import many files per run
(``BackfillPolicy.multi_run``). ``local_folder_sync`` is a full sync of the folder in one
run (imports, and ``on_delete`` for files gone): the command for CI and the quick start.
Both report each file's outcome as metadata and fail the run when any file failed, after
every other file has been imported and committed. A system fault (the warehouse lost, a full
disk) stops the run at once with its own message; ``local_folder_sync`` has reported every file
committed before it already.
"""

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    asset,
)

from pgdatahub_dagster.defs.partitions import (
    LOCAL_FILES,
    drive_files,
    file_id_for,
    local_files,
    partition_key_for,
)
from pgdatahub_dagster.defs.resources import (
    DriveResource,
    FolderMappingResource,
    LocalFolderResource,
    WarehouseResource,
)
from pgdatahub_dagster.defs.tables import progress_logger, report_failure, report_tables
from pgdatahub_dagster.engine.errors import PgDataHubError
from pgdatahub_dagster.engine.importer import Importer, ImportResult, skip_reason
from pgdatahub_dagster.engine.lifecycle import DeletionOutcome, record_deletion
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import Source, SourceFile, SourceUnavailableError
from pgdatahub_dagster.engine.warehouse import Warehouse

#: Imports share this Dagster pool; its limit (dagster.yaml) keeps backfills from
#: swamping the warehouse, and keeps DuckDB, which has one writer, to one import at a time.
WAREHOUSE_POOL = "warehouse"
FILES_PER_RUN = int(os.environ.get("PGDATAHUB_FILES_PER_RUN", "25"))
_LISTED_FILES = 200


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
    committed: Callable[[SourceFile, ImportResult], None] | None = None,
) -> list[ImportResult]:
    """Import the files one by one; ``committed`` hears of each file imported or skipped,
    as soon as it is, so a run that stops later has reported it already."""
    importer.progress = progress_logger(context)
    results = []
    for file in files:
        result = importer.import_file(file)
        record = result.record
        if result.failed:
            context.log.error(f"FAILED {record.error}")
        elif record.status == "skipped":
            context.log.info(f"SKIPPED {record.source_file}: {skip_reason(record)}")
        else:
            context.log.info(
                f"DONE {record.source_file} → {record.table_name}: {record.rows_inserted} new rows, "
                f"{record.rows_duplicate} duplicates, {len(result.schema_changes)} schema changes"
            )
        report_failure(context, importer.source.kind, result)
        if committed is not None and not result.failed:
            committed(file, result)
        results.append(result)
    report_tables(
        context, importer.warehouse, [r.record.table_name for r in results if r.status == "success"]
    )
    return results


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
    failed = [result.record for result in results if result.failed]
    if failed:
        reasons = "\n".join(f"- {record.error}" for record in failed)
        raise Failure(
            description=f"{len(failed)} of {len(results)} files failed; the others were imported:\n{reasons}",
            metadata=metadata,
        )
    return MaterializeResult(metadata=metadata)


def _import_partitions(
    context: AssetExecutionContext, warehouse: Warehouse, source: Source, mapping: FolderMapping
) -> MaterializeResult[None]:
    files: list[SourceFile] = []
    for key in context.partition_keys:
        try:
            files.append(source.get_file(file_id_for(key)))
        except FileNotFoundError as error:
            # Gone since the partition was registered: the deletion run handles it.
            context.log.warning(f"SKIPPED {error}")
        except SourceUnavailableError as error:
            raise Failure(description=str(error)) from None
    importer = Importer(warehouse, source, mapping, run_id=context.run.run_id)
    results = _import(context, importer, files)
    metadata = file_metadata(results[0]) if len(results) == 1 else _summary(results)
    return _result(results, metadata)


@asset(
    partitions_def=local_files,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=FILES_PER_RUN),
    pool=WAREHOUSE_POOL,
    group_name="local_folder",
    kinds={"polars", "csv", "excel"},
)
def local_spreadsheets(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    local_folder: LocalFolderResource,
    folder_mapping: FolderMappingResource,
) -> MaterializeResult[None]:
    """The spreadsheets of the local folder tree, one partition per file, loaded into the
    warehouse tables the folder mapping names."""
    with _system_faults_stop_the_run(), warehouse.open() as opened:
        return _import_partitions(context, opened, local_folder.source(), folder_mapping.mapping())


@asset(pool=WAREHOUSE_POOL, group_name="local_folder", kinds={"polars", "csv", "excel"})
def local_folder_sync(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    local_folder: LocalFolderResource,
    folder_mapping: FolderMappingResource,
) -> MaterializeResult[None]:
    """A full sync of the local folder tree in one run: new and changed files are imported,
    and files gone from the tree get their folder's ``on_delete``, so the warehouse ends
    equal to the folder.

    New files are registered as partitions of ``local_spreadsheets`` (gone ones removed),
    and each imported file is recorded as a materialisation of its partition, so the UI
    shows the same state whichever way a file was imported.
    """
    source = local_folder.source()
    files = _listed(source)
    present = {partition_key_for(file.file_id) for file in files}
    known = set(context.instance.get_dynamic_partitions(LOCAL_FILES))
    new_keys = sorted(present - known)
    if new_keys:
        context.instance.add_dynamic_partitions(LOCAL_FILES, new_keys)

    def committed(file: SourceFile, result: ImportResult) -> None:
        context.log_event(
            AssetMaterialization(
                asset_key=local_spreadsheets.key,
                partition=partition_key_for(file.file_id),
                metadata=file_metadata(result),
            )
        )

    mapping = folder_mapping.mapping()
    with _system_faults_stop_the_run(), warehouse.open() as opened:
        importer = Importer(opened, source, mapping, run_id=context.run.run_id)
        results = _import(context, importer, files, committed)
        gone = sorted(opened.live_file_ids(source.kind) - {file.file_id for file in files})
        deletions = apply_deletions(context, opened, mapping, gone)
    for key in sorted(known - present):
        context.instance.delete_dynamic_partition(LOCAL_FILES, key)
    metadata = _summary(results)
    metadata["files_gone"] = len(gone)
    metadata["rows_retracted"] = sum(outcome.rows_deleted for outcome in deletions)
    return _result(results, metadata)


@asset(
    partitions_def=drive_files,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=FILES_PER_RUN),
    pool=WAREHOUSE_POOL,
    group_name="google_drive",
    kinds={"googledrive", "csv", "excel"},
)
def drive_spreadsheets(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    drive: DriveResource,
    folder_mapping: FolderMappingResource,
) -> MaterializeResult[None]:
    """The spreadsheets of the watched Google Drive folders (Google Sheets exported as
    xlsx), one partition per Drive file id."""
    with _system_faults_stop_the_run(), warehouse.open() as opened:
        return _import_partitions(context, opened, drive.source(opened), folder_mapping.mapping())
