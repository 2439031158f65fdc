"""Sensors: find new, changed and deleted files, and ask for runs.

Local folders: files are found by their change time (``st_ctime``), which every create,
copy, rename, move or write advances, and which nobody can set back. The cursor is a small
JSON document: the newest change time handled, plus the files already handled at exactly
that time (several files can share a timestamp). A tick requests at most
``PGDATAHUB_SENSOR_MAX_RUNS`` runs (100) and picks up the rest on the next tick; a file
written in the last ``PGDATAHUB_SENSOR_SETTLE_SECONDS`` (2) waits for a later tick so that
no half-written file is imported.

Google Drive: see ``engine/sources/drive/scanner.py``; the cursor holds the Changes API page
tokens (the caller's own log, and one per shared drive holding a watched root).

An edited folder mapping can change what every file gives (its table, key, sheet, prefer):
the local sensor then asks for one full sync (``sync_local_folder``), which reads again the
files whose settings changed and decides shared keys again by a changed ``prefer``.

Both: a file that disappears (deleted, trashed, moved out) loses its partition, and one
``handle_deleted_files`` run applies its folder's ``on_delete`` setting.
"""

import hashlib
import os
import time

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    DynamicPartitionsDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from pgdatahub_dagster.defs.cursors import LocalFolderCursor, drive_state_from_json, drive_state_to_json
from pgdatahub_dagster.defs.jobs import import_drive_files, import_local_files, sync_local_folder
from pgdatahub_dagster.defs.operations import handle_deleted_files
from pgdatahub_dagster.defs.partitions import (
    DRIVE_FILES,
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
from pgdatahub_dagster.engine.sources import SourceFile, SourceUnavailableError
from pgdatahub_dagster.engine.sources.drive import DriveError, DriveScanner, FolderRegistry

SENSOR_INTERVAL_SECONDS = int(os.environ.get("PGDATAHUB_SENSOR_INTERVAL", "30"))
# The Drive sensor reads and updates the folder registry in the warehouse. A DuckDB file
# busy with an import is waited for this long; past it the tick fails and is retried.
_WAREHOUSE_WAIT_SECONDS = 15.0


def max_runs_per_tick() -> int:
    return int(os.environ.get("PGDATAHUB_SENSOR_MAX_RUNS", "100"))


def settle_seconds() -> float:
    return float(os.environ.get("PGDATAHUB_SENSOR_SETTLE_SECONDS", "2"))


def _deletions(
    source: str, partitions: DynamicPartitionsDefinition, gone: list[str], cursor: str | None
) -> tuple[list[RunRequest], list[DeleteDynamicPartitionsRequest]]:
    """One run that applies on_delete to the files whose partitions are gone, and the
    removal of those partitions (so each disappearance is handled once). The run key holds
    the cursor the tick started from: a re-evaluated tick asks for the same run, while a
    file deleted, restored and deleted again gets a new one."""
    if not gone:
        return [], []
    digest = hashlib.sha256("\n".join([cursor or "", *sorted(gone)]).encode()).hexdigest()[:16]
    request = RunRequest(
        job_name=handle_deleted_files.name,
        run_key=f"deleted:{digest}",
        run_config={
            "ops": {
                "handle_deleted_files_op": {
                    "config": {"source": source, "file_ids": [file_id_for(key) for key in sorted(gone)]}
                }
            }
        },
        tags={"pgdatahub/source": source},
    )
    return [request], [partitions.build_delete_request(sorted(gone))]


def _request_import(
    context: SensorEvaluationContext,
    job_name: str,
    source: str,
    file: SourceFile,
    known: set[str],
    new_keys: list[str],
) -> RunRequest:
    """One run for a new or changed file. Its run key (file id and version) is new at every
    change of the file, restored content included, and the same when a tick is evaluated
    again; a run that finds its work done records ``skipped``."""
    key = partition_key_for(file.file_id)
    label = file.path if file.path == file.file_id else f"{file.path} ({file.file_id})"
    if key in known:
        context.log.info(f"CHANGED {label}")
    else:
        new_keys.append(key)
        context.log.info(f"NEW {label}")
    return RunRequest(
        job_name=job_name,
        partition_key=key,
        run_key=f"{file.file_id}:{file.version}",
        tags={"pgdatahub/source": source},
    )


def _result(
    context: SensorEvaluationContext,
    partitions: DynamicPartitionsDefinition,
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
        requests.append(partitions.build_add_request(new_keys))
    return SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=cursor)


def _full_sync_for_mapping(
    context: SensorEvaluationContext, cursor: LocalFolderCursor, digest: str
) -> list[RunRequest]:
    """One full sync when the folder mapping changed since the last tick (none on the very
    first tick: every file is new then). Its run key holds the cursor the tick started
    from, as a deletion run's does: the same on a re-evaluated tick, new at each change."""
    if cursor.mapping is None or cursor.mapping == digest:
        return []
    context.log.info("MAPPING CHANGED: a full sync applies it to every file")
    run_key = hashlib.sha256(f"{context.cursor or ''}\n{digest}".encode()).hexdigest()[:16]
    return [
        RunRequest(
            job_name=sync_local_folder.name, run_key=f"mapping:{run_key}", tags={"pgdatahub/source": "local"}
        )
    ]


@sensor(
    jobs=[import_local_files, sync_local_folder, handle_deleted_files],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def local_folder_sensor(
    context: SensorEvaluationContext, local_folder: LocalFolderResource, folder_mapping: FolderMappingResource
) -> SensorResult:
    """Registers each new or changed spreadsheet of the local folder as a partition and
    requests an import run for it; hands deleted files to ``handle_deleted_files``."""
    source = local_folder.source()
    if not source.root.is_dir():
        # An unmounted share must not read as "every file was deleted".
        return SensorResult(
            skip_reason=f"the source folder {source.root} does not exist", cursor=context.cursor
        )
    cursor = LocalFolderCursor.from_json(context.cursor)
    digest = folder_mapping.mapping().digest
    full_sync = _full_sync_for_mapping(context, cursor, digest)
    cursor.mapping = digest
    settled_before_ns = time.time_ns() - int(settle_seconds() * 1e9)
    max_runs = max_runs_per_tick()
    states = list(source.scan())
    known = set(context.instance.get_dynamic_partitions(LOCAL_FILES))
    gone = sorted(known - {partition_key_for(state.file.file_id) for state in states})
    for key in gone:
        context.log.info(f"REMOVED {file_id_for(key)}: no longer in the folder")
    runs, removals = _deletions("local", local_files, gone, context.cursor)
    runs += full_sync

    pending = sorted(
        (state for state in states if cursor.is_unhandled(state)),
        key=lambda state: (state.changed_ns, state.file.file_id),
    )
    new_keys: list[str] = []
    for position, state in enumerate(pending):
        if max(state.changed_ns, state.modified_ns) > settled_before_ns:
            # Handling files in change-time order means everything after this one is
            # newer still: all of it waits for the next tick.
            waiting = len(pending) - position - 1
            context.log.info(f"SKIPPED {state.file.path} and {waiting} newer: still being written")
            break
        if position == max_runs:  # every earlier position requested one run
            context.log.info(
                f"SKIPPED {len(pending) - position} files: over {max_runs} runs this tick, next tick"
            )
            break
        runs.append(_request_import(context, import_local_files.name, "local", state.file, known, new_keys))
        cursor.advance(state)
    return _result(context, local_files, runs, removals, new_keys, cursor.to_json())


@sensor(
    jobs=[import_drive_files, handle_deleted_files],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def drive_sensor(
    context: SensorEvaluationContext, drive: DriveResource, warehouse: WarehouseResource
) -> SensorResult:
    """Follows the Drive Changes API from its stored page token: registers each new or
    changed spreadsheet under the watched folders as a partition and requests a run for it
    (run key: file id and the number of times the scanner reported it, new at every report);
    hands removed files to ``handle_deleted_files``."""
    settings = drive.settings()
    if not settings.configured:
        return SensorResult(
            skip_reason="Google Drive is not configured: set PGDATAHUB_DRIVE_FOLDER_ID and "
            "PGDATAHUB_DRIVE_CREDENTIALS (or GOOGLE_APPLICATION_CREDENTIALS)",
            cursor=context.cursor,
        )
    state = drive_state_from_json(context.cursor)
    try:
        with warehouse.open(wait_seconds=_WAREHOUSE_WAIT_SECONDS) as opened:
            scanner = DriveScanner(
                drive.client(),
                FolderRegistry(opened),
                settings.folder_ids,
                budget_seconds=settings.tick_seconds,
            )
            result = scanner.scan(state)
    except (SourceUnavailableError, DriveError) as error:
        # Refused credentials, Drive failing after every retry: one clear line, and the next
        # tick starts from the same cursor (the failed tick changed nothing).
        context.log.error(str(error))
        return SensorResult(skip_reason=str(error), cursor=context.cursor)
    for line in result.log:
        context.log.info(line)
    known = set(context.instance.get_dynamic_partitions(DRIVE_FILES))
    gone = sorted({partition_key_for(file_id) for file_id in result.removed} & known)
    for key in gone:
        file_id = file_id_for(key)
        context.log.info(
            f"REMOVED {result.removed[file_id]} ({file_id}): trashed, deleted, unshared or moved out of "
            "the watched folders"
        )
    if result.ignored:
        context.log.info(f"SKIPPED {result.ignored} changes outside the watched folders or not spreadsheets")
    runs, removals = _deletions("drive", drive_files, gone, context.cursor)
    if result.found:
        context.log.info(f"Change detected: {len(result.found)} spreadsheets new or changed")
    new_keys: list[str] = []
    for file in result.found.values():
        runs.append(_request_import(context, import_drive_files.name, "drive", file, known, new_keys))
    return _result(context, drive_files, runs, removals, new_keys, drive_state_to_json(result.state))
