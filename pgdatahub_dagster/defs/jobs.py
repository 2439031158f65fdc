"""Jobs: what sensors and the UI launch."""

from __future__ import annotations

from dagster import define_asset_job

from pgdatahub_dagster.defs.assets import drive_spreadsheets, local_folder_sync, local_spreadsheets

import_local_files = define_asset_job(
    "import_local_files",
    selection=[local_spreadsheets],
    description="Import files of the local folder tree, one partition per file.",
)

import_drive_files = define_asset_job(
    "import_drive_files",
    selection=[drive_spreadsheets],
    description="Import files of the watched Google Drive folders, one partition per Drive file.",
)

sync_local_folder = define_asset_job(
    "sync_local_folder",
    selection=[local_folder_sync],
    description="A full sync of the local folder tree: what the sensor asks for after the mapping changed.",
)
