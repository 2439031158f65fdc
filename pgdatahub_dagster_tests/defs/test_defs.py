import subprocess
import sys
from pathlib import Path

from dagster import Definitions, DynamicPartitionsDefinition

ROOT = Path(__file__).resolve().parents[2]


def test_code_location_loads_with_its_asset_partitions_and_sensor() -> None:
    from pgdatahub_dagster.definitions import defs

    assert isinstance(defs, Definitions)
    repository = defs.get_repository_def()
    asset_keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert asset_keys == {
        "local_spreadsheets",
        "local_folder_sync",
        "drive_spreadsheets",
        "gmail_spreadsheets",
        "warehouse_status",
    }
    local_jobs = {target.job_name for target in repository.get_sensor_def("local_folder_sensor").targets}
    assert local_jobs == {"import_local_files", "sync_local_folder", "handle_deleted_files"}
    drive_jobs = {target.job_name for target in repository.get_sensor_def("drive_sensor").targets}
    assert drive_jobs == {"import_drive_files", "handle_deleted_files"}
    gmail_jobs = {target.job_name for target in repository.get_sensor_def("gmail_sensor").targets}
    assert gmail_jobs == {"import_gmail_files", "handle_deleted_files"}
    assert {job.name for job in repository.get_all_jobs()} >= {"revert_imports", "handle_deleted_files"}
    assert repository.get_schedule_def("compact_warehouse_nightly").job_name == "compact_warehouse"
    checks = {key.name for key in repository.asset_graph.asset_check_keys}
    assert checks == {"unique_keys_hold", "ledger_matches_tables"}
    spreadsheets = repository.asset_graph.get(
        next(
            k
            for k in repository.asset_graph.get_all_asset_keys()
            if k.to_user_string() == "local_spreadsheets"
        )
    )
    assert spreadsheets.partitions_def == DynamicPartitionsDefinition(name="local_files")
    assert (
        spreadsheets.backfill_policy is not None and spreadsheets.backfill_policy.max_partitions_per_run > 1
    )


def test_workspace_file_loads_through_the_dagster_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "pgdatahub" in completed.stdout + completed.stderr


def test_a_broken_mapping_stops_the_code_location(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("leads:\n  tabel: leads\n")
    completed = subprocess.run(
        [sys.executable, "-c", "import pgdatahub_dagster.definitions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PGDATAHUB_CONFIG": str(bad), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode != 0
    assert f"{bad} line 2: unknown key 'tabel'" in completed.stderr
