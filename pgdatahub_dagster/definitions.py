"""The Dagster code location: ``dagster dev -m pgdatahub_dagster.definitions``."""

from __future__ import annotations

from dagster import Definitions

from pgdatahub_dagster.defs.assets import local_folder_sync, local_spreadsheets
from pgdatahub_dagster.defs.jobs import import_local_files
from pgdatahub_dagster.defs.resources import LocalFolderResource, WarehouseResource
from pgdatahub_dagster.defs.sensors import local_folder_sensor

# A broken folder mapping stops the code location from loading, naming the key and line,
# instead of failing every run later.
LocalFolderResource().mapping()

defs = Definitions(
    assets=[local_spreadsheets, local_folder_sync],
    jobs=[import_local_files],
    sensors=[local_folder_sensor],
    resources={"warehouse": WarehouseResource(), "local_folder": LocalFolderResource()},
)
