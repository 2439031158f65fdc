"""The warehouse's tables as Dagster assets, keyed ``["warehouse", <table>]``.

The tables are data, not code. The code location learns them when it loads, from two places:
the mapping and the local folder tree (each folder that holds spreadsheets is a table, as an
import maps it), and the warehouse's ledger (every table it holds rows of, with the sources
that wrote them, so that the tables only Google Drive or Gmail load into are declared too).
The ledger is read once per initialisation of the code location (a start, *Reload
definitions*) as Dagster's state-backed definitions (``table_checks.TableDefinitions``); the
runs rebuild the same assets from that state, without reading the warehouse. When the
warehouse cannot be read in a few seconds (a PostgreSQL server down, a DuckDB file busy with
an import), the tables read at the last load that could are declared, and a warning says so.

A table asset is external: the import runs report it. After the files they import (and the
deletions they apply) they record a materialisation of each table they changed, with its
column schema, row count, the files and rows it holds and its last schema change; so do
``local_folder_sync`` runs from the command line with no daemon. A table that appears after
the code location loaded (a new folder, a new Drive folder) is reported all the same, and shows
as a defined asset, with its checks, after *Reload definitions*.

The same module logs the outcome of a failed file on its partition, and the progress of long
imports.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
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
    get_dagster_logger,
)

from pgdatahub_dagster.defs.partitions import partition_key_for
from pgdatahub_dagster.defs.sources.plugin import SourcePlugin
from pgdatahub_dagster.engine.errors import PgDataHubError, WarehouseNotCreatedError
from pgdatahub_dagster.engine.importer import ImportProgress, ImportResult, ProgressCallback
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import TableDetails, table_details, table_sources
from pgdatahub_dagster.engine.settings import last_tables_path, redact_url
from pgdatahub_dagster.engine.sources import LocalFolderSource, SourceUnavailableError
from pgdatahub_dagster.engine.warehouse import Warehouse, connect

TABLE_KEY_PREFIX = "warehouse"
#: How long loading the code location waits for the warehouse before it declares the tables
#: of the last load: a DuckDB file stays busy for a whole import.
LOAD_WAIT_SECONDS = 2.0
#: The tables the warehouse holds rows of, each with the sources that wrote them.
TableSources = dict[str, list[str]]

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


def warehouse_tables(url: str) -> TableSources:
    """The tables the warehouse's ledger holds rows of, with their sources (none when the
    warehouse is a file not created yet); when the warehouse cannot be read, those of the last
    read (none, the first time), with a warning in the log."""
    last = last_tables_path(url)
    try:
        # Not created here: a code location loaded before any import must leave no empty file.
        with connect(url, wait_seconds=LOAD_WAIT_SECONDS, create=False) as warehouse:
            tables = table_sources(warehouse)
    except WarehouseNotCreatedError:
        tables = {}
    except PgDataHubError as error:
        remembered = _read_tables(last)
        get_dagster_logger("pgdatahub").warning(
            f"Cannot read the tables of the warehouse {redact_url(url)} ({error}); declaring the "
            f"{len(remembered)} tables it held at the last load that could read it"
            + (f" ({last})" if last else " (none kept: DAGSTER_HOME is not set)")
            + ". Reload the definitions once it answers."
        )
        return remembered
    if last is not None and _read_tables(last) != tables:
        try:
            _write_tables(last, tables)
        except OSError as error:  # a read-only DAGSTER_HOME must not stop the load
            get_dagster_logger("pgdatahub").warning(f"Cannot keep the tables read in {last}: {error}")
    return tables


def _read_tables(path: Path | None) -> TableSources:
    try:
        read = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return read if isinstance(read, dict) else {}


def _write_tables(path: Path, tables: TableSources) -> None:
    """Whole or not at all: two code servers may load at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as written:
        json.dump(tables, written)
    os.replace(name, path)


def import_asset_keys(plugin: SourcePlugin) -> list[AssetKey]:
    """The assets that import a source's files into the tables: one per file, and the full sync."""
    keys = [AssetKey(plugin.asset_name)]
    if plugin.full_sync is not None:
        keys.append(AssetKey(plugin.full_sync.asset_name))
    return keys


def table_specs(
    sources: Mapping[str, Collection[str]],
    folders: Mapping[str, Sequence[str]],
    kind: str,
    plugins: Sequence[SourcePlugin],
) -> list[AssetSpec]:
    """One external asset per table (``sources``: each table's sources), downstream of the
    import assets of the sources that write it, in the group of the first of them (in the order
    of ``plugins``); its description names its local folders (``folders``), if any."""
    specs = []
    for table, writers in sorted(sources.items()):
        writing = [plugin for plugin in plugins if plugin.name in writers]
        held = folders.get(table, ())
        files = f"{', '.join(held[:5])}{' …' if len(held) > 5 else ''}" if held else ""
        specs.append(
            AssetSpec(
                table_key(table),
                deps=[key for plugin in writing for key in import_asset_keys(plugin)],
                group_name=writing[0].group_name if writing else TABLE_KEY_PREFIX,
                kinds={kind, "table"},
                description=f"The warehouse table {table}: the rows of the spreadsheets in "
                f"{files or ' and '.join(plugin.label for plugin in writing)}.",
            )
        )
    return specs


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
