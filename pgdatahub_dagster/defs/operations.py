"""Jobs that change what is already loaded: revert imports, handle deleted files."""

from collections.abc import Sequence

from dagster import Config, Failure, JobDefinition, OpExecutionContext, job, op

from pgdatahub_dagster.defs.assets import SHARED_RESOURCES, WAREHOUSE_POOL, apply_deletions
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.plugin import DagsterSourceState, SourcePlugin, SourceResource
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
    #: ``SourcePlugin.name`` of the source the files were in.
    source: str
    file_ids: list[str]


def handle_deleted_files_job(plugins: Sequence[SourcePlugin]) -> JobDefinition:
    """The one job that applies ``on_delete``, for the files of any of ``plugins``."""
    by_name = {plugin.name: plugin for plugin in plugins}

    @op(pool=WAREHOUSE_POOL, required_resource_keys={*SHARED_RESOURCES, *(p.resource_key for p in plugins)})
    def handle_deleted_files_op(context: OpExecutionContext, config: DeletedFilesConfig) -> None:
        if config.source not in by_name:
            raise Failure(description=f"no source is named {config.source!r}; the sources: {sorted(by_name)}")
        plugin = by_name[config.source]
        resource: SourceResource = getattr(context.resources, plugin.resource_key)
        mapping = context.resources.folder_mapping.mapping()
        with context.resources.warehouse.open() as opened:
            source = resource.source(
                DagsterSourceState(context.instance, plugin, lambda: mapping, lambda: opened)
            )
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
            apply_deletions(context, opened, mapping, gone)

    @job(
        name="handle_deleted_files",
        description="Apply on_delete (keep or retract) to files deleted, trashed or moved out of a source.",
    )
    def handle_deleted_files() -> None:
        handle_deleted_files_op()

    return handle_deleted_files
