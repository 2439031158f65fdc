"""Building on the warehouse's tables: a downstream asset of ``["warehouse", "leads"]``, and a
freshness policy on that table. A code location of its own, beside or instead of the
product's (``dagster dev -m pgdatahub_dagster.examples.downstream``)::

    from pgdatahub_dagster.definitions import defs as pgdatahub
    from pgdatahub_dagster.examples.downstream import with_downstream

    defs = with_downstream(pgdatahub)

``leads_per_file`` updates itself whenever an import reports the leads table changed (its
automation condition is eager; the daemon's automation sensor launches it). The freshness
policy marks the table stale in the UI when no import changed it for a day; Dagster evaluates
freshness policies when ``freshness: {enabled: true}`` is in dagster.yaml.
"""

from datetime import timedelta

from dagster import (
    AssetKey,
    AssetSpec,
    AutomationCondition,
    Definitions,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pgdatahub_dagster.defs.resources import WarehouseResource

LEADS = AssetKey(["warehouse", "leads"])


@asset(deps=[LEADS], group_name="examples", kinds={"sql"}, automation_condition=AutomationCondition.eager())
def leads_per_file(warehouse: WarehouseResource) -> MaterializeResult[None]:
    """How many leads each file supplies (the lineage column ``source_file``)."""
    with warehouse.open() as opened:
        rows = opened.fetchall(
            "SELECT source_file, count(*) FROM leads GROUP BY source_file ORDER BY source_file"
        )
    return MaterializeResult(
        metadata={
            "files": len(rows),
            "leads": sum(int(count) for _, count in rows),
            "per_file": MetadataValue.json({str(file): int(count) for file, count in rows}),
        }
    )


def updated_daily(spec: AssetSpec) -> AssetSpec:
    """A table that no import changed for 24 hours fails its freshness (a warning after 12)."""
    return spec.replace_attributes(
        freshness_policy=FreshnessPolicy.time_window(
            fail_window=timedelta(hours=24), warn_window=timedelta(hours=12)
        )
    )


def with_downstream(pgdatahub: Definitions) -> Definitions:
    """The product's definitions, the leads table held to be updated daily, and the example."""
    fresh = pgdatahub.map_resolved_asset_specs(func=updated_daily, selection=[LEADS])
    return Definitions.merge(fresh, Definitions(assets=[leads_per_file]))


def __getattr__(name: str) -> Definitions:
    # ``dagster dev -m`` looks for ``defs``; built on first use, so that importing this module
    # (as the tests do, with their own warehouse) does not load the product's code location.
    if name == "defs":
        from pgdatahub_dagster.definitions import defs

        return with_downstream(defs)
    raise AttributeError(name)
