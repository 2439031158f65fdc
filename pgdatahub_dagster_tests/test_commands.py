"""The README's commands, run as a user runs them, against both warehouses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance

from pgdatahub_dagster.engine.settings import redact_url
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.conftest import SAMPLE_DATA
from pgdatahub_dagster_tests.defs.conftest import assert_table_asset_shows_the_warehouse

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_materialize_command_imports_the_sample_folder_once(tmp_path: Path, warehouse_url: str) -> None:
    source = shutil.copytree(SAMPLE_DATA, tmp_path / "inbox")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PGDATAHUB_SOURCE_DIR": str(source),
        "PGDATAHUB_DATABASE_URL": warehouse_url,
    }
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "pgdatahub_dagster.definitions"]
    command += ["--select", "local_folder_sync"]

    first = _run(command, env)
    assert first.returncode == 0, first.stderr[-3000:]
    with connect(warehouse_url) as warehouse:
        # The sample holds 9 lead rows of which 7 distinct businesses, and 3 orders.
        assert warehouse.fetchall("SELECT count(*) FROM leads") == [(7,)]
        assert warehouse.fetchall("SELECT count(*) FROM reports") == [(3,)]
        successes = warehouse.fetchall("SELECT count(*) FROM etl_imports WHERE status = 'success'")
    # With no daemon, the run alone reported each table asset as the warehouse holds it.
    with DagsterInstance.from_config(str(home)) as instance:
        for table in ("leads", "reports"):
            assert_table_asset_shows_the_warehouse(instance, warehouse_url, table)

    second = _run(command, env)
    assert second.returncode == 0, second.stderr[-3000:]
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*) FROM leads") == [(7,)]
        assert warehouse.fetchall("SELECT count(*) FROM etl_imports WHERE status = 'success'") == successes
        assert warehouse.fetchall("SELECT count(*) FROM etl_imports WHERE status = 'skipped'") == successes

    status = _run([str(BIN / "pgdatahub"), "status"], env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    leads = next(line.split() for line in lines if line.startswith("leads "))
    assert leads[:5] == ["leads", "7", "3", "3", "0"]
    # The URL as redact_url shows it: test_secrets.py checks that no form shows the password.
    assert lines[0] == f"Warehouse: {redact_url(warehouse_url)}"
