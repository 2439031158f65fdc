"""The warehouse's tables as Dagster assets, keyed ``["warehouse", <table>]``.

The tables are data, not code: a folder is a table (through the folder mapping). The code
location learns them when it loads, from the mapping and the local folder tree (the folders
that hold spreadsheets, as an import sees them); no warehouse connection is made at load, so a
busy DuckDB file or a PostgreSQL server that is down never stops the code location from
loading. A table asset is external: the import runs report it. After the files they import (and
the deletions they apply) they record a materialisation of each table they changed, with its
column schema, row count, the files and rows it holds and its last schema change; so do
``local_folder_sync`` runs from the command line with no daemon. A table that appears after the
code location loaded (a new folder) is reported all the same, and shows as a defined asset,
with its checks, after *Reload definitions*.

The same module logs the outcome of a failed file on its partition, and the progress of long
imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSpec,
    MetadataValue,
    OpExecutionContext,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
)

from pgdatahub_dagster.defs.partitions import partition_key_for
from pgdatahub_dagster.engine.importer import ImportProgress, ImportResult, ProgressCallback
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import TableDetails, table_details
from pgdatahub_dagster.engine.sources import LocalFolderSource, SourceUnavailableError
from pgdatahub_dagster.engine.warehouse import Warehouse

TABLE_KEY_PREFIX = "warehouse"
LOCAL_GROUP = "local_folder"
#: The import assets that write the local tables (keys, not the assets: they import this module).
LOCAL_IMPORT_ASSETS = (AssetKey("local_spreadsheets"), AssetKey("local_folder_sync"))

Context = AssetExecutionContext | OpExecutionContext


def table_key(table: str) -> AssetKey:
    return AssetKey([TABLE_KEY_PREFIX, table])


def local_tables(source: LocalFolderSource, mapping: FolderMapping) -> dict[str, list[str]]:
    """The tables the folders of the local tree load into, each with its folders (relative
    paths, ``.`` for the root). A missing source folder has none: the sensor and the sync say
    why."""
    tables: dict[str, list[str]] = {}
    try:
        for root_name, parts in source.folders():
            table = mapping.settings_for(parts, root_name).table
            tables.setdefault(table, []).append("/".join(parts) or ".")
    except SourceUnavailableError:
        return {}
    return dict(sorted(tables.items()))


def table_specs(tables: Mapping[str, Sequence[str]], kind: str) -> list[AssetSpec]:
    """One external asset per table, downstream of the imports that write it."""
    return [
        AssetSpec(
            table_key(table),
            deps=LOCAL_IMPORT_ASSETS,
            group_name=LOCAL_GROUP,
            kinds={kind, "table"},
            description=f"The warehouse table {table}: the rows of the spreadsheets in "
            f"{', '.join(folders[:5])}{' …' if len(folders) > 5 else ''}.",
        )
        for table, folders in tables.items()
    ]


def column_schema(details: TableDetails) -> TableSchema:
    """The table's columns with their SQL types; tags mark the key and the lineage columns."""
    columns = []
    for column in details.columns:
        tags = {}
        if column.is_key:
            tags["key"] = "true"
        if column.is_lineage:
            tags["lineage"] = "true"
        columns.append(
            TableColumn(
                column.name,
                type=column.sql_type,
                constraints=TableColumnConstraints(unique=column.name == "_row_key"),
                tags=tags,
            )
        )
    return TableSchema(columns=columns)


def table_metadata(details: TableDetails) -> dict[str, Any]:
    change = details.last_schema_change
    return {
        "dagster/table_name": details.qualified_name,
        "dagster/column_schema": column_schema(details),
        "dagster/row_count": details.row_count,
        "files_held": details.files_held,
        "rows_held": details.rows_held,
        "last_schema_change": MetadataValue.json(
            {
                "change": change.change_type,
                "column": change.column_name,
                "old_type": change.old_type,
                "new_type": change.new_type,
                "source_file": change.source_file,
                "changed_at": change.changed_at.isoformat(),
            }
            if change
            else {}
        ),
    }


def report_tables(context: Context, warehouse: Warehouse, tables: Sequence[str]) -> None:
    """Record each table as it is now as a materialisation of its asset: the run changed it.
    Once per table and run, after its files: the figures cost a count of the table's rows."""
    for table in sorted(set(tables)):
        details = table_details(warehouse, table)
        if details is not None:
            context.log_event(
                AssetMaterialization(asset_key=table_key(table), metadata=table_metadata(details))
            )


def observe_tables(context: Context, warehouse: Warehouse, tables: Sequence[str]) -> None:
    """Record the tables as they are as observations (nothing changed them: they only bring
    the catalog up to date, e.g. for tables filled before they were assets)."""
    for table in tables:
        details = table_details(warehouse, table)
        if details is not None:
            context.log_event(AssetObservation(asset_key=table_key(table), metadata=table_metadata(details)))


def report_failure(context: AssetExecutionContext, files_asset: AssetKey, result: ImportResult) -> None:
    """A failed file's reason on its partition of ``files_asset``: an observation, which
    Dagster shows among the partition's events (the run's failure says it too)."""
    record = result.record
    if result.failed:
        context.log_event(
            AssetObservation(
                asset_key=files_asset,
                partition=partition_key_for(record.source_file_id),
                metadata={"status": "failed", "error": record.error or "", "table": record.table_name},
                description=record.error,
            )
        )


def progress_logger(context: Context) -> ProgressCallback:
    """Log a long import's progress from its second batch on (one-batch files stay quiet)."""
    batches: dict[str, int] = {}

    def log(progress: ImportProgress) -> None:
        seen = batches[progress.source_file] = batches.get(progress.source_file, 0) + 1
        if seen >= 2:
            context.log.info(
                f"PROGRESS {progress.source_file} → {progress.table}: {progress.rows_read:,} rows so far, "
                f"{progress.rows_per_second:,.0f} rows/s"
            )

    return log
