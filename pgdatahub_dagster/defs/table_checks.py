"""Asset checks on each table asset, the schedule that runs them, and the definitions of the
table assets for the code location (``TableDefinitions``, state-backed: see ``tables.py``).

Each table has three checks, so a failing table is red on its own:
``unique_keys_hold`` (no business key occurs twice), ``ledger_matches_tables`` (the table
holds exactly the rows its imports account for) and ``schema_drift`` (a warning when the
table's last import added or widened columns). An op evaluates the selected checks of up to 50
tables over one warehouse connection.
"""

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    MetadataValue,
    PreviewWarning,
    ScheduleDefinition,
    define_asset_job,
    multi_asset_check,
)
from dagster._core.definitions.definitions_load_context import StateBackedDefinitionsLoader

from pgdatahub_dagster.defs.assets import WAREHOUSE_POOL
from pgdatahub_dagster.defs.resources import WarehouseResource
from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.defs.sources.plugin import SourcePlugin
from pgdatahub_dagster.defs.tables import TableSources, local_tables, table_specs, warehouse_tables
from pgdatahub_dagster.engine.report import duplicate_keys, ledger_mismatches, schema_drift
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import warehouse_kind

UNIQUE_KEYS = "unique_keys_hold"
LEDGER_MATCHES = "ledger_matches_tables"
SCHEMA_DRIFT = "schema_drift"
_DESCRIPTIONS = {
    UNIQUE_KEYS: "No business key (_row_key) occurs twice in the table.",
    LEDGER_MATCHES: "Each import that holds rows of the table accounts for exactly its rows_held keys, "
    "and no row names an import that holds nothing.",
    SCHEMA_DRIFT: "Warns when the table's last import added or widened columns (a dashboard may not "
    "expect them); passes again after an import that changes no column.",
}
#: Tables per checks op. Dagster wires each op's inputs against its checks (a cost of inputs
#: × checks per op when it builds a job), so one op for 5,000 tables took minutes to load;
#: ops of 50 load in a fraction of a second and run the checks of 50 tables per connection.
TABLES_PER_CHECKS_OP = 50
#: warehouse_status and every check, hourly: the figures and the checks never go stale.
CHECK_SCHEDULE = "0 * * * *"


def table_checks(keys: Sequence[AssetKey]) -> list[AssetChecksDefinition]:
    """The checks of the tables, in ops of ``TABLES_PER_CHECKS_OP`` tables."""
    size = TABLES_PER_CHECKS_OP
    return [
        _checks_op(keys[at : at + size], f"table_checks_{at // size + 1}") for at in range(0, len(keys), size)
    ]


def _checks_op(keys: Sequence[AssetKey], name: str) -> AssetChecksDefinition:
    specs = [
        AssetCheckSpec(name, asset=key, description=description)
        for key in keys
        for name, description in _DESCRIPTIONS.items()
    ]

    # In the imports' pool: on DuckDB (one writer, a limit of 1) the checks wait for the imports.
    @multi_asset_check(specs=specs, can_subset=True, name=name, pool=WAREHOUSE_POOL)
    def checks(
        context: AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[AssetCheckResult]:
        selected = sorted(context.selected_asset_check_keys, key=lambda key: (key.asset_key.path, key.name))
        tables = {
            name: [key.asset_key.path[-1] for key in selected if key.name == name] for name in _DESCRIPTIONS
        }
        with warehouse.open() as opened:
            repeated = duplicate_keys(opened, tables[UNIQUE_KEYS])
            mismatches = ledger_mismatches(opened, tables[LEDGER_MATCHES])
            drift = {table: schema_drift(opened, table) for table in tables[SCHEMA_DRIFT]}
        for key in selected:
            yield _result(key, repeated, mismatches, drift)

    return checks


def _result(
    key: AssetCheckKey,
    repeated: Mapping[str, int],
    mismatches: Mapping[str, Mapping[str, int]],
    drift: Mapping[str, Sequence[Any]],
) -> AssetCheckResult:
    table = key.asset_key.path[-1]
    if key.name == UNIQUE_KEYS:
        return AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=table not in repeated,
            metadata={"repeated_keys": repeated.get(table, 0)},
        )
    if key.name == LEDGER_MATCHES:
        return AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=table not in mismatches,
            metadata={"mismatch": MetadataValue.json(dict(mismatches.get(table, {})))},
        )
    changes = drift[table]
    return AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=not changes,
        severity=AssetCheckSeverity.WARN,
        description=(
            "the last import changed columns: "
            + ", ".join(
                f"{c.column_name} added as {c.new_type}"
                if c.change_type == "add_column"
                else f"{c.column_name} widened from {c.old_type} to {c.new_type}"
                for c in changes
            )
            + f" (by {changes[0].source_file})"
            if changes
            else "the last import changed no column"
        ),
        metadata={
            "changes": MetadataValue.json(
                [
                    {
                        "change": c.change_type,
                        "column": c.column_name,
                        "old_type": c.old_type,
                        "new_type": c.new_type,
                        "source_file": c.source_file,
                    }
                    for c in changes
                ]
            )
        },
    )


def check_schedule() -> ScheduleDefinition:
    job = define_asset_job(
        "check_warehouse",
        selection=AssetSelection.assets("warehouse_status") | AssetSelection.all_asset_checks(),
        description="Refresh warehouse_status and run every asset check (each table's and the warehouse's).",
    )
    return ScheduleDefinition(
        name="check_warehouse_hourly",
        job=job,
        cron_schedule=CHECK_SCHEDULE,
        default_status=DefaultScheduleStatus.RUNNING,
    )


class TableDefinitions(StateBackedDefinitionsLoader[TableSources]):
    """The table assets, their checks and the schedule of the checks.

    Dagster's state-backed definitions: the state is the tables the warehouse's ledger holds
    rows of, with their sources, read when the code location initialises (a start, *Reload
    definitions*) and kept in the code location's reconstruction metadata, from which the runs
    rebuild the same assets without reading the warehouse. The tables of the local tree come
    from its folders at every load, so a new folder's table needs no import to be declared."""

    def __init__(self, resources: Mapping[str, Any], plugins: Sequence[SourcePlugin]) -> None:
        self._resources = resources
        self._plugins = plugins

    def build_defs(self) -> Definitions:
        # Dagster marks the reconstruction metadata that state-backed definitions keep their
        # state in as a preview; it would warn at every load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreviewWarning)
            return super().build_defs()

    @property
    def defs_key(self) -> str:
        return "pgdatahub/warehouse_tables"

    def fetch_state(self) -> TableSources:
        return warehouse_tables(self._resources["warehouse"].url())

    def defs_from_state(self, state: TableSources) -> Definitions:
        folders = local_tables(
            LocalFolderSource(self._resources[LOCAL_FOLDER.resource_key].root()),
            self._resources["folder_mapping"].mapping(),
        )
        sources: dict[str, set[str]] = {table: set(held_by) for table, held_by in state.items()}
        for table in folders:
            sources.setdefault(table, set()).add(LOCAL_FOLDER.name)
        kind = warehouse_kind(self._resources["warehouse"].url())
        specs = table_specs(sources, folders, kind, self._plugins)
        checks = table_checks([spec.key for spec in specs])
        return Definitions(assets=specs, asset_checks=checks, schedules=[check_schedule()])
