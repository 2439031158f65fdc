"""The Dagster code location: ``dagster dev -m pgdatahub_dagster.definitions``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from dagster import Definitions

from pgdatahub_dagster.defs.assets import drive_spreadsheets, local_folder_sync, local_spreadsheets
from pgdatahub_dagster.defs.checks import ledger_matches_tables, unique_keys_hold, warehouse_status
from pgdatahub_dagster.defs.executor import executor_from_env
from pgdatahub_dagster.defs.jobs import import_drive_files, import_local_files, sync_local_folder
from pgdatahub_dagster.defs.operations import handle_deleted_files, revert_imports
from pgdatahub_dagster.defs.resources import (
    DriveResource,
    FolderMappingResource,
    LocalFolderResource,
    WarehouseResource,
)
from pgdatahub_dagster.defs.sensors import drive_sensor, local_folder_sensor
from pgdatahub_dagster.defs.table_checks import table_definitions
from pgdatahub_dagster.engine.errors import ConfigError


class CodeLocationConfigError(click.ClickException):
    """A broken configuration, found while the code location loads. Dagster's commands are
    click's, and click prints such an error as ``Error: <message>`` alone, without the
    traceback of the import machinery, and exits with 1; the UI shows it as the code
    location's load error."""


def build_defs(resources: Mapping[str, Any]) -> Definitions:
    """The code location's definitions with the given resources (tests point them elsewhere)."""
    imports = Definitions(
        assets=[local_spreadsheets, local_folder_sync, drive_spreadsheets, warehouse_status],
        asset_checks=[unique_keys_hold, ledger_matches_tables],
        jobs=[
            import_local_files,
            sync_local_folder,
            import_drive_files,
            revert_imports,
            handle_deleted_files,
        ],
        sensors=[local_folder_sensor, drive_sensor],
        resources=dict(resources),
        executor=executor_from_env(),
    )
    return Definitions.merge(imports, table_definitions(resources))


# A broken folder mapping stops the code location from loading, naming the key and line,
# instead of failing every run later.
try:
    FolderMappingResource().mapping()
except ConfigError as error:
    raise CodeLocationConfigError(str(error)) from None

defs = build_defs(
    {
        "warehouse": WarehouseResource(),
        "folder_mapping": FolderMappingResource(),
        "local_folder": LocalFolderResource(),
        "drive": DriveResource(),
    }
)
