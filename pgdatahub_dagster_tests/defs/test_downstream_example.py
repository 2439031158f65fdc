"""The example of building on the tables: a downstream asset of ["warehouse", "leads"] that
runs after an import, and a freshness policy on the table."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, FreshnessPolicy, evaluate_automation_conditions

from pgdatahub_dagster.examples.downstream import LEADS, leads_per_file, with_downstream
from pgdatahub_dagster_tests.defs.conftest import code_location, full_sync
from pgdatahub_dagster_tests.files import write_csv


@pytest.mark.usefixtures("test_defs")  # the environment: PGDATAHUB_SOURCE_DIR
def test_the_downstream_asset_follows_an_import_of_the_leads_table(
    source_dir: Path, warehouse_url: str, instance: DagsterInstance
) -> None:
    write_csv(source_dir / "leads" / "a.csv", "name\nAcme\nBlue\n")
    write_csv(source_dir / "leads" / "b.csv", "name\nCyan\n")
    defs = with_downstream(code_location(warehouse_url))
    graph = defs.resolve_asset_graph()
    assert graph.get(leads_per_file.key).parent_keys == {LEADS}
    assert graph.get(LEADS).freshness_policy == FreshnessPolicy.time_window(
        fail_window=timedelta(hours=24), warn_window=timedelta(hours=12)
    )

    # Nothing to do before the table exists.
    automation = evaluate_automation_conditions(defs=defs, instance=instance)
    assert automation.total_requested == 0
    assert full_sync(defs, instance).success
    # The import reported the table changed: the eager condition asks for the downstream asset.
    automation = evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
    assert automation.get_requested_partitions(leads_per_file.key) == {None}

    result = (
        defs.resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={leads_per_file.key})
        .execute_in_process(instance=instance)
    )
    [materialization] = result.asset_materializations_for_node("leads_per_file")
    assert materialization.metadata["leads"].value == 3
    assert materialization.metadata["per_file"].value == {"leads/a.csv": 2, "leads/b.csv": 1}
