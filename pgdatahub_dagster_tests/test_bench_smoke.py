"""The benchmark runner, run as a developer runs it, at a tiny size.

It proves every scenario and every contender still runs end to end and that the results
file keeps its shape. It asserts nothing about speed: the figures live in
docs/benchmarks.md, taken with ``python -m bench`` on a quiet machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the contenders import; all of it comes with the `bench` extra, which `dev` includes.
BENCH_MODULES = (
    "dlt",
    "pandas",
    "openpyxl",
    "psutil",
    "sqlalchemy",
    "adbc_driver_postgresql",
    "pyinstrument",
)


def test_the_bench_extra_is_installed() -> None:
    missing = [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"the benchmark baselines are not installed ({', '.join(missing)} missing): "
            "pip install -e '.[dev]' (dev includes the bench extra) or pip install -e '.[bench]'"
        )


# Past the suite's 300 s: two scenarios start a sensor daemon's code server (many_files_large,
# tick_scale twice), 15-60 s each on a loaded machine.
@pytest.mark.long
@pytest.mark.timeout(600)
def test_every_scenario_runs_at_smoke_size(postgres_admin_url: str, tmp_path: Path) -> None:
    test_the_bench_extra_is_installed()
    from bench.scenarios import SCENARIOS

    output = tmp_path / "results.json"
    env = {**os.environ, "PGDATAHUB_BENCH_DATA_DIR": str(tmp_path / "data")}
    # One repetition (the default is three): the shape is the same, in a third of the time.
    command = [sys.executable, "-m", "bench", "--size", "smoke", "--repeat", "1", "--output", str(output)]
    command += ["--database-url", postgres_admin_url]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads(output.read_text())
    assert report["size"] == "smoke"
    assert report["command"].startswith("python -m bench")
    assert report["machine"]["cpus"] >= 1 and report["postgres"]["version"]
    assert set(report["scenarios"]) == set(SCENARIOS)
    for name, scenario in report["scenarios"].items():
        assert scenario["title"] and scenario["engine"] in scenario["contenders"], name
        for key, outcome in scenario["contenders"].items():
            assert "error" not in outcome, (name, key, outcome.get("error"))
            assert outcome["seconds"] >= 0 and outcome["peak_rss_mb"] > 0, (name, key)
            assert len(outcome["repetitions"]) == len(outcome["load_averages"]) == 1, (name, key)
            low, high = outcome["seconds_range"]
            assert low <= outcome["seconds"] <= high, (name, key)
            # A fixed cost is measured on no rows; hostile files must load none.
            if outcome["role"] != "fixed" and name != "hostile":
                assert outcome["rows_in"] > 0 and outcome["rows_per_s"] > 0, (name, key)
            assert outcome["role"] in report["roles"], (name, key)
        assert scenario["targets"], name
        for target in scenario["targets"]:
            assert target["kind"] in ("min", "max") and isinstance(target["passed"], bool), (name, target)
            assert target["value"] is not None, (name, target)
    # The same folder through Dagster and through the engine alone stores the same rows.
    many = report["scenarios"]["many_files"]["contenders"]
    assert many["dagster"]["rows_out"] == many["engine_alone"]["rows_out"] > 0
    assert "dagster_overhead_ms_per_file" in report["scenarios"]["many_files"]
    # A changed file: replaced in place, or deleted and imported whole, the table ends the same.
    for name in ("changed_file", "changed_file_duckdb"):
        changed = report["scenarios"][name]
        assert changed["same_table_after"] is True, name
        assert changed["contenders"]["engine_reimport"]["extra"]["rows_deleted"] > 0, name
        assert changed["contenders"]["delete_reinsert"]["extra"]["rows_deleted"] > 0, name
    # Each hostile file failed alone, naming the limit it is over.
    hostile = report["scenarios"]["hostile"]
    assert all(target["passed"] for target in hostile["targets"]), hostile["targets"]
    # The table a person reads is printed too.
    assert "engine ÷" in done.stdout
