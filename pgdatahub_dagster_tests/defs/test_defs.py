import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, Definitions, DynamicPartitionsDefinition

from pgdatahub_dagster_tests.defs.conftest import code_location

ROOT = Path(__file__).resolve().parents[2]


SNAPSHOT = Path(__file__).with_name("code_location.json")


def snapshot(defs: Definitions) -> dict[str, Any]:
    """What the code location declares, as plain data: every asset with its group, kinds,
    deps, partitions, backfill policy and checks; every job, sensor and schedule with what
    it runs."""
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        policy = node.backfill_policy
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "partitions": getattr(node.partitions_def, "name", None),
            "files_per_run": policy.max_partitions_per_run if policy else None,
            "executable": node.is_executable,
            "pools": sorted(node.pools or ()),
            "checks": sorted(check.name for check in graph.get_check_keys_for_assets({key})),
        }
    jobs = {
        job.name: {
            "assets": sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys),
            "checks": sorted(
                f"{check.asset_key.to_user_string()}:{check.name}"
                for check in job.asset_layer.asset_graph.asset_check_keys
            ),
        }
        for job in repository.get_all_jobs()
        if not job.name.startswith("__")
    }
    sensors = {
        sensor.name: {
            "jobs": sorted(target.job_name for target in sensor.targets),
            "status": sensor.default_status.value,
        }
        for sensor in repository.sensor_defs
    }
    schedules = {
        schedule.name: {
            "job": schedule.job_name,
            "cron": schedule.cron_schedule,
            "status": schedule.default_status.value,
        }
        for schedule in repository.schedule_defs
    }
    return {"assets": assets, "jobs": jobs, "sensors": sensors, "schedules": schedules}


def _sample_code_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Definitions:
    monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(ROOT / "sample_data"))
    monkeypatch.delenv("PGDATAHUB_CONFIG", raising=False)
    return code_location(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")


def test_the_code_location_matches_its_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fails when a definition changes by accident. After a change on purpose, write the new
    snapshot with ``python -m pgdatahub_dagster_tests.defs.test_defs`` and review its diff."""
    actual = snapshot(_sample_code_location(monkeypatch, tmp_path))
    expected = json.loads(SNAPSHOT.read_text())
    assert actual == expected


def test_the_code_location_module_loads_the_same_definitions() -> None:
    from pgdatahub_dagster.definitions import defs

    assert isinstance(defs, Definitions)
    repository = defs.get_repository_def()
    spreadsheets = repository.asset_graph.get(AssetKey("local_spreadsheets"))
    assert spreadsheets.partitions_def == DynamicPartitionsDefinition(name="local_files")
    assert {job.name for job in repository.get_all_jobs()} >= {"revert_imports", "handle_deleted_files"}


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


if __name__ == "__main__":
    with pytest.MonkeyPatch.context() as patch:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            taken = snapshot(_sample_code_location(patch, Path(folder)))
    SNAPSHOT.write_text(json.dumps(taken, indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
