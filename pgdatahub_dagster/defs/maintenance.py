"""Warehouse maintenance on a schedule: a DuckLake's small files merged, its old snapshots
expired (``Warehouse.compact``); the other warehouses have nothing to do."""

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op

from pgdatahub_dagster.defs.assets import WAREHOUSE_POOL
from pgdatahub_dagster.defs.resources import WarehouseResource
from pgdatahub_dagster.engine.settings import snapshot_retention


@op(pool=WAREHOUSE_POOL)
def compact_warehouse_op(context: OpExecutionContext, warehouse: WarehouseResource) -> None:
    with warehouse.open() as opened:
        context.log.info(opened.compact(snapshot_retention()))


@job(
    description="Merge a DuckLake's small data files and expire its snapshots older than "
    "PGDATAHUB_SNAPSHOT_RETENTION_DAYS (7); nothing to do on DuckDB and PostgreSQL."
)
def compact_warehouse() -> None:
    compact_warehouse_op()


#: Nightly, when imports are few: compaction commits like any writer, and a file imported
#: meanwhile into a table being merged runs again (a commit conflict).
compact_warehouse_nightly = ScheduleDefinition(
    name="compact_warehouse_nightly",
    job=compact_warehouse,
    cron_schedule="30 3 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
)
