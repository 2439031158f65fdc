"""The local-folder sensor: finds new and changed files and asks for one run per file.

Files are found by their change time (``st_ctime``), which every create, copy, rename,
move or write advances, and which nobody can set back. The cursor is a small JSON
document: the newest change time handled, plus the files already handled at exactly that
time (several files can share a timestamp). A tick requests at most
``PGDATAHUB_SENSOR_MAX_RUNS`` runs and picks up the rest on the next tick; a file written
in the last ``SETTLE_SECONDS`` waits for the next tick so that no half-written file is
imported.
"""

import os
import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from pgdatahub_dagster.defs.cursors import LocalFolderCursor, drive_state_from_json, drive_state_to_json
from pgdatahub_dagster.defs.jobs import import_drive_files, import_local_files
from pgdatahub_dagster.defs.partitions import drive_files, local_files, partition_key_for
from pgdatahub_dagster.defs.resources import DriveResource, LocalFolderResource, WarehouseResource
from pgdatahub_dagster.engine.sources.drive import DriveScanner, FolderRegistry
from pgdatahub_dagster.engine.sources.local import LocalFileState

SENSOR_INTERVAL_SECONDS = int(os.environ.get("PGDATAHUB_SENSOR_INTERVAL", "30"))


def max_runs_per_tick() -> int:
    return int(os.environ.get("PGDATAHUB_SENSOR_MAX_RUNS", "100"))


def settle_seconds() -> float:
    return float(os.environ.get("PGDATAHUB_SENSOR_SETTLE_SECONDS", "2"))


def run_key_for(state: LocalFileState) -> str:
    """File id plus content fingerprint: a re-requested run for the same content is a no-op."""
    return f"{state.file.file_id}:{state.file.version}"


@sensor(
    job=import_local_files,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def local_folder_sensor(context: SensorEvaluationContext, local_folder: LocalFolderResource) -> SensorResult:
    """Registers each new or changed spreadsheet of the local folder as a partition and
    requests an import run for it."""
    cursor = LocalFolderCursor.from_json(context.cursor)
    settled_before_ns = time.time_ns() - int(settle_seconds() * 1e9)
    max_runs = max_runs_per_tick()
    pending = sorted(
        (state for state in local_folder.source().scan() if cursor.is_unhandled(state)),
        key=lambda state: (state.changed_ns, state.file.file_id),
    )
    if not pending:
        context.log.info("idle: no new or changed files")
        return SensorResult(skip_reason="idle: no new or changed files", cursor=cursor.to_json())

    known = set(context.instance.get_dynamic_partitions(local_files.name))
    new_keys: list[str] = []
    requests: list[RunRequest] = []
    for position, state in enumerate(pending):
        if max(state.changed_ns, state.modified_ns) > settled_before_ns:
            # Handling files in change-time order means everything after this one is
            # newer still: all of it waits for the next tick.
            context.log.info(
                f"SKIPPED {state.file.path} and {len(pending) - position - 1} newer: still being written"
            )
            break
        if len(requests) == max_runs:
            context.log.info(
                f"SKIPPED {len(pending) - position} files: over {max_runs} runs this tick, next tick"
            )
            break
        key = partition_key_for(state.file.file_id)
        if key not in known:
            new_keys.append(key)
            context.log.info(f"NEW {state.file.path}")
        else:
            context.log.info(f"CHANGED {state.file.path}")
        requests.append(
            RunRequest(partition_key=key, run_key=run_key_for(state), tags={"pgdatahub/source": "local"})
        )
        cursor.advance(state)

    context.log.info(f"DONE: requested {len(requests)} runs, {len(new_keys)} for new files")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[local_files.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor.to_json(),
    )


# The sensor reads and updates the folder registry in the warehouse. A DuckDB file busy
# with an import is waited for this long; past it the tick is skipped and retried.
_WAREHOUSE_WAIT_SECONDS = 15.0


@sensor(
    job=import_drive_files,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
)
def drive_sensor(
    context: SensorEvaluationContext, drive: DriveResource, warehouse: WarehouseResource
) -> SensorResult:
    """Follows the Drive Changes API from its stored page token: registers each new or
    changed spreadsheet under the watched folders as a partition and requests a run for it
    (run key: file id and content version)."""
    settings = drive.settings()
    if not settings.configured:
        return SensorResult(
            skip_reason="Google Drive is not configured: set PGDATAHUB_DRIVE_FOLDER_ID and "
            "PGDATAHUB_DRIVE_CREDENTIALS (or GOOGLE_APPLICATION_CREDENTIALS)",
            cursor=context.cursor,
        )
    state = drive_state_from_json(context.cursor)
    with warehouse.open(wait_seconds=_WAREHOUSE_WAIT_SECONDS) as opened:
        scanner = DriveScanner(
            drive.client(), FolderRegistry(opened), settings.folder_ids, budget_seconds=settings.tick_seconds
        )
        result = scanner.scan(state)
    for line in result.log:
        context.log.info(line)
    if result.ignored:
        context.log.info(f"SKIPPED {result.ignored} changes outside the watched folders or not spreadsheets")
    known = set(context.instance.get_dynamic_partitions(drive_files.name))
    for file_id, name in result.removed:
        if partition_key_for(file_id) in known:
            context.log.info(
                f"REMOVED {name} ({file_id}): trashed, deleted or moved out of the watched folders"
            )
    if not result.found:
        context.log.info("idle: no new or changed spreadsheets")
        return SensorResult(
            skip_reason="idle: no new or changed spreadsheets", cursor=drive_state_to_json(result.state)
        )

    context.log.info(f"Change detected: {len(result.found)} spreadsheets new or changed")
    new_keys: list[str] = []
    requests: list[RunRequest] = []
    for file in result.found.values():
        key = partition_key_for(file.file_id)
        if key not in known:
            new_keys.append(key)
            context.log.info(f"NEW {file.path} ({file.file_id})")
        else:
            context.log.info(f"CHANGED {file.path} ({file.file_id})")
        requests.append(
            RunRequest(
                partition_key=key,
                run_key=f"{file.file_id}:{file.version}",
                tags={"pgdatahub/source": "drive"},
            )
        )
    context.log.info(f"DONE: requested {len(requests)} runs, {len(new_keys)} for new files")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[drive_files.build_add_request(new_keys)] if new_keys else [],
        cursor=drive_state_to_json(result.state),
    )
