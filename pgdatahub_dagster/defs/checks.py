"""The warehouse's state in the UI: per-table figures as metadata, and asset checks that
the business keys hold and that the ledger accounts for every row."""

from collections.abc import Sequence

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from pgdatahub_dagster.defs.resources import WarehouseResource
from pgdatahub_dagster.defs.tables import observe_tables
from pgdatahub_dagster.engine.report import duplicate_keys, ledger_mismatches, recent_imports, table_status

WAREHOUSE_STATUS = AssetKey("warehouse_status")


def warehouse_status_asset(imports: Sequence[AssetsDefinition]) -> AssetsDefinition:
    """The status asset, downstream of the assets that ``imports`` into the warehouse."""

    @asset(
        key=WAREHOUSE_STATUS,
        deps=[key for definition in imports for key in definition.keys],
        group_name="warehouse",
        kinds={"sql"},
    )
    def warehouse_status(
        context: AssetExecutionContext, warehouse: WarehouseResource
    ) -> MaterializeResult[None]:
        """Per table: files imported, skipped, failed, reverted and deleted, rows, the last
        import and the last error; and the latest failures. The same figures as
        ``pgdatahub status``. Each table asset gets an observation of the table as it is."""
        return _status(context, warehouse)

    return warehouse_status


def _status(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult[None]:
    with warehouse.open() as opened:
        statuses = table_status(opened)
        failures = recent_imports(opened, 10, status="failed")
        observe_tables(context, opened, [s.table_name for s in statuses])
    lines = ["| table | rows | imported | skipped | failed | reverted | deleted | last import | last error |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for s in statuses:
        last = s.last_import.strftime("%Y-%m-%d %H:%M:%S") if s.last_import else ""
        error = (s.last_error or "").replace("|", "\\|")[:120]
        lines.append(
            f"| {s.table_name} | {s.rows if s.rows is not None else ''} | {s.imported} | {s.skipped} "
            f"| {s.failed} | {s.reverted} | {s.deleted} | {last} | {error} |"
        )
    return MaterializeResult(
        metadata={
            "tables": MetadataValue.md("\n".join(lines)),
            "total_rows": sum(s.rows or 0 for s in statuses),
            "files_imported": sum(s.imported for s in statuses),
            "files_failed": sum(s.failed for s in statuses),
            "recent_failures": MetadataValue.md("\n".join(f"- {f['error']}" for f in failures) or "none"),
        }
    )


@asset_check(asset=WAREHOUSE_STATUS, description="No business key occurs twice in any table.")
def unique_keys_hold(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.open() as opened:
        repeated = duplicate_keys(opened)
    return AssetCheckResult(
        passed=not repeated, metadata={"tables_with_repeated_keys": MetadataValue.json(repeated)}
    )


@asset_check(
    asset=WAREHOUSE_STATUS,
    description="Each import that holds rows accounts for exactly its rows_held keys (rows it supplies "
    "plus its rows in the holders table), and no row names an import that holds nothing.",
)
def ledger_matches_tables(warehouse: WarehouseResource) -> AssetCheckResult:
    with warehouse.open() as opened:
        mismatches = ledger_mismatches(opened)
    return AssetCheckResult(
        passed=not mismatches,
        metadata={"mismatches": MetadataValue.json(mismatches)},
    )
