"""Jobs that change what is already loaded: revert imports, handle deleted files."""

from dagster import Config, Failure, OpExecutionContext, job, op

from pgdatahub_dagster.defs.assets import WAREHOUSE_POOL, apply_deletions
from pgdatahub_dagster.defs.resources import (
    DriveResource,
    FolderMappingResource,
    LocalFolderResource,
    WarehouseResource,
)
from pgdatahub_dagster.engine.revert import SELECTORS, revert


class RevertConfig(Config):
    """Exactly one of file, file_id, sha256 or run chooses the imports to undo."""

    file: str | None = None
    file_id: str | None = None
    sha256: str | None = None
    run: str | None = None
    dry_run: bool = False
    undo_schema_changes: bool = False


@op(pool=WAREHOUSE_POOL)
def revert_imports_op(
    context: OpExecutionContext,
    config: RevertConfig,
    warehouse: WarehouseResource,
    folder_mapping: FolderMappingResource,
) -> None:
    chosen = {name: getattr(config, name) for name in SELECTORS if getattr(config, name)}
    if len(chosen) != 1:
        raise Failure(
            description=f"choose exactly one of {', '.join(SELECTORS)}; got {sorted(chosen) or 'none'}"
        )
    [(selector, value)] = chosen.items()
    with warehouse.open() as opened:
        report = revert(
            opened,
            mapping=folder_mapping.mapping(),
            selector=selector,
            value=value,
            schema=config.undo_schema_changes,
            dry_run=config.dry_run,
            run_id=context.run.run_id,
        )
    verb = "would revert" if report.dry_run else "reverted"
    if not report.imports:
        context.log.warning(f"nothing to revert: no successful import has {selector} = {value!r}")
    for item in report.imports:
        where = f"{item.source_file} in {item.table_name}"
        context.log.info(f"{verb} import {item.import_id}: {where}, {item.rows_deleted} rows")
    for undo in report.schema:
        context.log.info(
            f"schema {undo.change_type} {undo.table_name}.{undo.column_name or ''}: {undo.reason}"
        )


@job(description="Undo imports chosen by file, file id, content hash or run (see the run config).")
def revert_imports() -> None:
    revert_imports_op()


class DeletedFilesConfig(Config):
    source: str
    file_ids: list[str]


@op(pool=WAREHOUSE_POOL)
def handle_deleted_files_op(
    context: OpExecutionContext,
    config: DeletedFilesConfig,
    warehouse: WarehouseResource,
    folder_mapping: FolderMappingResource,
    local_folder: LocalFolderResource,
    drive: DriveResource,
) -> None:
    with warehouse.open() as opened:
        source = local_folder.source() if config.source == "local" else drive.source(opened)
        # Runs may execute out of order: a file restored after this run was requested is
        # there again (and its import run has it), so it is not deleted now.
        gone = []
        for file_id in config.file_ids:
            try:
                source.get_file(file_id)
            except FileNotFoundError:
                gone.append(file_id)
            else:
                context.log.info(f"KEPT {file_id}: it is back in the source, nothing to delete")
        apply_deletions(context, opened, folder_mapping.mapping(), gone)


@job(description="Apply on_delete (keep or retract) to files deleted, trashed or moved out of a source.")
def handle_deleted_files() -> None:
    handle_deleted_files_op()
