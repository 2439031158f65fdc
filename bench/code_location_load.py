"""``python -m bench.code_location_load``: how long the code location takes to load with
many folders, mapped to few tables or to one table each.

    python -m bench.code_location_load --folders 5000 --tables 50 5000

For each number of tables it builds a source tree of that many folders (one small CSV each).
With as many tables as folders, the default mapping makes each folder a table. With fewer,
the folders sit in that many group folders, and the mapping file names each group's table
(``group_07: {table: leads_07}``): its sub-folders inherit it, as 100,000 files in 5,000
client folders loading into 50 tables do. Then, in a fresh interpreter, it times what
Dagster's code server does:
import ``pgdatahub_dagster.definitions`` (which walks the tree and declares the table
assets), resolve the repository, and take the snapshot the webserver reads. It prints the
figures as JSON; the table assets' part is the load minus that of an empty tree.

Two more figures put it in context. ``validate_s``: the wall time of
``dagster definitions validate`` (a whole command as a user runs it: starting Python,
importing Dagster, loading the code location in process, building every job and snapshot).
``dagster_floor_s``: the same load for bare Dagster, no project code, with as many external
assets and as many checks per asset as the code location declares (in ``multi_asset_check``
ops of 50, and a job selecting them all, as the code location has), for three checks per
asset, one, and none (the assets alone). Each figure is the fastest of ``--repeat`` runs: the
machine is shared.
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

from pgdatahub_dagster.engine.warehouse import connect

_MEASURE = """
import json, time
start = time.perf_counter()
import dagster
cpu_start = time.process_time()
from dagster._core.remote_representation.external_data import RepositorySnap
dagster_imported = time.perf_counter()
from pgdatahub_dagster.definitions import defs
defined = time.perf_counter()
repository = defs.get_repository_def()
graph = repository.asset_graph
resolved = time.perf_counter()
RepositorySnap.from_def(repository)
snapshotted = time.perf_counter()
print(json.dumps({
    "table_assets": sum(key.path[0] == "warehouse" for key in graph.get_all_asset_keys()),
    "table_checks": sum(key.asset_key.path[0] == "warehouse" for key in graph.asset_check_keys),
    "import_dagster_s": round(dagster_imported - start, 2),
    "import_definitions_s": round(defined - dagster_imported, 2),
    "resolve_repository_s": round(resolved - defined, 2),
    "snapshot_s": round(snapshotted - resolved, 2),
    "load_s": round(snapshotted - dagster_imported, 2),
    "load_cpu_s": round(time.process_time() - cpu_start, 2),
}))
"""


_DAGSTER_FLOOR = """
import json, sys, time
from dagster import AssetCheckSpec, AssetSelection, AssetSpec, Definitions
from dagster import define_asset_job, multi_asset_check
from dagster._core.remote_representation.external_data import RepositorySnap
tables, checks_per_table = int(sys.argv[1]), int(sys.argv[2])
start, cpu_start = time.perf_counter(), time.process_time()
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
print(json.dumps({
    "load_s": round(time.perf_counter() - start, 2), "load_cpu_s": round(time.process_time() - cpu_start, 2)
}))
"""


def build_tree(root: Path, folders: int, tables: int) -> None:
    """``folders`` client folders of one CSV each, loading into ``tables`` tables."""
    root.mkdir(parents=True, exist_ok=True)
    grouped = tables < folders
    if grouped:
        (root / "pgdatahub.yaml").write_text(
            "".join(f"group_{group:03d}:\n  table: leads_{group:03d}\n" for group in range(tables))
        )
    for number in range(folders):
        client = f"client_{number:05d}"
        folder = root / f"group_{number % tables:03d}" / client if grouped else root / client
        folder.mkdir(parents=True)
        (folder / "leads.csv").write_text("name,phone\nAcme,555-0100\n")


def _environment(root: Path) -> dict[str, str]:
    """The tree, an empty DuckDB warehouse beside it (the load reads its ledger) and a
    DAGSTER_HOME of its own (where the load keeps the tables it read)."""
    home = root.parent / "dagster_home"
    home.mkdir(exist_ok=True)
    url = f"duckdb:///{root.parent / 'warehouse.duckdb'}"
    with connect(url):  # a load reads an existing warehouse only
        pass
    env = {
        **os.environ,
        "PGDATAHUB_SOURCE_DIR": str(root),
        "PGDATAHUB_DATABASE_URL": url,
        "DAGSTER_HOME": str(home),
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


def measure_dagster_floor(tables: int, checks_per_table: int) -> dict[str, float]:
    return _run_for_figures(["-c", _DAGSTER_FLOOR, str(tables), str(checks_per_table)], dict(os.environ))


def _fastest(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: min(run[name] for run in runs) for name in runs[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.code_location_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--folders", type=int, default=5000)
    parser.add_argument(
        "--tables", type=int, nargs="+", default=[50, 5000], help="tables the folders load into; a tree each"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure; the fastest counts")
    arguments = parser.parse_args(argv)
    repeat = range(arguments.repeat)
    load_before = os.getloadavg()[0]
    figures: dict[str, object] = {"folders": arguments.folders}
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder, "empty")
        empty.mkdir()
        baseline = _fastest([measure(empty) for _ in repeat])
        figures["load_with_no_folders_s"] = baseline["load_s"]
        figures["load_with_no_folders_cpu_s"] = baseline["load_cpu_s"]
        figures["validate_with_no_folders_s"] = min(measure_validate(empty) for _ in repeat)
        for tables in arguments.tables:
            tree = Path(folder, f"tree_{tables}")
            build_tree(tree, arguments.folders, min(tables, arguments.folders))
            loaded = _fastest([measure(tree) for _ in repeat])
            loaded["table_assets_s"] = round(loaded["load_s"] - baseline["load_s"], 2)
            loaded["validate_s"] = min(measure_validate(tree) for _ in repeat)
            checks_per_table = round(loaded["table_checks"] / max(loaded["table_assets"], 1))
            floor = _fastest(
                [measure_dagster_floor(int(loaded["table_assets"]), checks_per_table) for _ in repeat]
            )
            loaded[f"dagster_floor_{checks_per_table}_checks_s"] = floor["load_s"]
            loaded[f"dagster_floor_{checks_per_table}_checks_cpu_s"] = floor["load_cpu_s"]
            figures[f"{tables}_tables"] = loaded
    most = max(arguments.tables)
    figures["dagster_floor"] = {
        f"{most}_tables_{checks}_checks": _fastest([measure_dagster_floor(most, checks) for _ in repeat])
        for checks in (3, 1, 0)
    }
    figures["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
