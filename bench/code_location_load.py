"""``python -m bench.code_location_load``: how long the code location takes to load with
many folders, each of them a table asset (with its three checks).

    python -m bench.code_location_load --folders 5000

It builds a source tree of that many folders (one small CSV each, the default mapping: one
table per folder), then, in a fresh interpreter, times what Dagster's code server does:
import ``pgdatahub_dagster.definitions`` (which walks the tree and declares the table
assets), resolve the repository, and take the snapshot the webserver reads. It prints the
figures as JSON; the table assets' part is the load minus that of an empty tree.

Two more figures put it in context. ``validate_s``: the wall time of
``dagster definitions validate`` (a whole command as a user runs it: starting Python,
importing Dagster, loading the code location in process, building every job and snapshot).
``dagster_floor_s``: the same load for bare Dagster, no project code, with as many external
assets and as many checks (three per asset, in ``multi_asset_check`` ops of 50, and a job
selecting them all, as the code location has); ``dagster_floor_no_checks_s`` the assets
alone. Each figure is the fastest of ``--repeat`` runs: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MEASURE = """
import json, time
start = time.perf_counter()
import dagster
from dagster._core.remote_representation.external_data import RepositorySnap
dagster_imported = time.perf_counter()
from pgdatahub_dagster.definitions import defs
defined = time.perf_counter()
repository = defs.get_repository_def()
resolved = time.perf_counter()
RepositorySnap.from_def(repository)
snapshotted = time.perf_counter()
print(json.dumps({
    "table_assets": sum(key.path[0] == "warehouse" for key in repository.asset_graph.get_all_asset_keys()),
    "checks": len(repository.asset_graph.asset_check_keys),
    "import_dagster_s": round(dagster_imported - start, 2),
    "import_definitions_s": round(defined - dagster_imported, 2),
    "resolve_repository_s": round(resolved - defined, 2),
    "snapshot_s": round(snapshotted - resolved, 2),
    "load_s": round(snapshotted - dagster_imported, 2),
}))
"""


_DAGSTER_FLOOR = """
import json, sys, time
from dagster import AssetCheckSpec, AssetSelection, AssetSpec, Definitions
from dagster import define_asset_job, multi_asset_check
from dagster._core.remote_representation.external_data import RepositorySnap
tables, checks_per_table = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
specs = [AssetSpec(["warehouse", f"table_{number}"]) for number in range(tables)]
ops = []
for at in range(0, tables if checks_per_table else 0, 50):
    @multi_asset_check(
        specs=[
            AssetCheckSpec(f"check_{c}", asset=spec.key)
            for spec in specs[at : at + 50]
            for c in range(checks_per_table)
        ],
        can_subset=True,
        name=f"checks_{at}",
    )
    def checks(context):
        yield from ()
    ops.append(checks)
jobs = [define_asset_job("all_checks", selection=AssetSelection.all_asset_checks())] if ops else []
RepositorySnap.from_def(Definitions(assets=specs, asset_checks=ops, jobs=jobs).get_repository_def())
print(json.dumps({"load_s": round(time.perf_counter() - start, 2)}))
"""


def build_tree(root: Path, folders: int) -> None:
    for number in range(folders):
        folder = root / f"client_{number:05d}"
        folder.mkdir(parents=True)
        (folder / "leads.csv").write_text("name,phone\nAcme,555-0100\n")


def _environment(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PGDATAHUB_SOURCE_DIR": str(root),
        "PGDATAHUB_DATABASE_URL": "duckdb:///unused.duckdb",
    }
    env.pop("PGDATAHUB_CONFIG", None)
    return env


def _run_for_figures(arguments: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, *arguments], env=env, capture_output=True, text=True, check=True, timeout=600
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def measure(root: Path) -> dict[str, float]:
    return _run_for_figures(["-c", _MEASURE], _environment(root))


def measure_validate(root: Path) -> float:
    """Seconds of ``dagster definitions validate`` on the code location, start to exit."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "pgdatahub_dagster.definitions"],
        env=_environment(root),
        capture_output=True,
        check=True,
        timeout=600,
    )
    return round(time.perf_counter() - start, 2)


def measure_dagster_floor(tables: int, checks_per_table: int) -> float:
    return _run_for_figures(["-c", _DAGSTER_FLOOR, str(tables), str(checks_per_table)], dict(os.environ))[
        "load_s"
    ]


def _fastest(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: min(run[name] for run in runs) for name in runs[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.code_location_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--folders", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure; the fastest counts")
    arguments = parser.parse_args(argv)
    repeat = range(arguments.repeat)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder, "empty")
        empty.mkdir()
        tree = Path(folder, "tree")
        build_tree(tree, arguments.folders)
        baseline = _fastest([measure(empty) for _ in repeat])
        loaded = _fastest([measure(tree) for _ in repeat])
        validate = min(measure_validate(tree) for _ in repeat)
        validate_empty = min(measure_validate(empty) for _ in repeat)
    loaded["folders"] = arguments.folders
    loaded["table_assets_s"] = round(loaded["load_s"] - baseline["load_s"], 2)
    loaded["load_with_no_folders_s"] = baseline["load_s"]
    loaded["validate_s"] = validate
    loaded["validate_with_no_folders_s"] = validate_empty
    loaded["dagster_floor_s"] = min(measure_dagster_floor(arguments.folders, 3) for _ in repeat)
    loaded["dagster_floor_no_checks_s"] = min(measure_dagster_floor(arguments.folders, 0) for _ in repeat)
    loaded["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(loaded, indent=2))


if __name__ == "__main__":
    main()
