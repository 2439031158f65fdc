"""The Dagster code location: ``dagster dev -m pgdatahub_dagster.definitions``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from dagster import Definitions

from pgdatahub_dagster.defs.checks import ledger_matches_tables, unique_keys_hold, warehouse_status_asset
from pgdatahub_dagster.defs.executor import executor_from_env
from pgdatahub_dagster.defs.maintenance import compact_warehouse_nightly
from pgdatahub_dagster.defs.operations import revert_imports
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.drive import GOOGLE_DRIVE
from pgdatahub_dagster.defs.sources.factory import source_definitions
from pgdatahub_dagster.defs.sources.gmail import GMAIL
from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.defs.table_checks import TableDefinitions
from pgdatahub_dagster.engine.errors import ConfigError

#: The sources: each one's partitions, import asset, job and sensor come from its plugin.
SOURCES = [LOCAL_FOLDER, GOOGLE_DRIVE, GMAIL]


class CodeLocationConfigError(click.ClickException):
    """A broken configuration, found while the code location loads. Dagster's commands are
    click's, and click prints such an error as ``Error: <message>`` alone, without the
    traceback of the import machinery, and exits with 1; the UI shows it as the code
    location's load error."""


def build_defs(resources: Mapping[str, Any]) -> Definitions:
    """The code location's definitions with the given resources (tests point them elsewhere);
    a source whose resource is not given reads its configuration from the environment."""
    sources = source_definitions(SOURCES)
    resources = {**sources.default_resources, **resources}
    imports = Definitions(
        assets=[*sources.assets, warehouse_status_asset(sources.assets)],
        asset_checks=[unique_keys_hold, ledger_matches_tables],
        jobs=[*sources.jobs, revert_imports],
        sensors=sources.sensors,
        schedules=[compact_warehouse_nightly],
        resources=resources,
        executor=executor_from_env(),
    )
    return Definitions.merge(imports, TableDefinitions(resources, SOURCES).build_defs())


# A broken folder mapping stops the code location from loading, naming the key and line,
# instead of failing every run later.
try:
    FolderMappingResource().mapping()
except ConfigError as error:
    raise CodeLocationConfigError(str(error)) from None

defs = build_defs({"warehouse": WarehouseResource(), "folder_mapping": FolderMappingResource()})
