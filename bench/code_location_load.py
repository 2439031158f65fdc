"""``python -m bench.code_location_load``: how long the code location takes to load with
many folders, each of them a table asset (with its three checks).

    python -m bench.code_location_load --folders 5000

It builds a source tree of that many folders (one small CSV each, the default mapping: one
table per folder), then, in a fresh interpreter, times what Dagster's code server does:
import ``pgdatahub_dagster.definitions`` (which walks the tree and declares the table
assets), resolve the repository, and take the snapshot the webserver reads. It prints the
figures as JSON; the table assets' part is the load minus that of an empty tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def build_tree(root: Path, folders: int) -> None:
    for number in range(folders):
        folder = root / f"client_{number:05d}"
        folder.mkdir(parents=True)
        (folder / "leads.csv").write_text("name,phone\nAcme,555-0100\n")


def measure(root: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "PGDATAHUB_SOURCE_DIR": str(root),
        "PGDATAHUB_DATABASE_URL": "duckdb:///unused.duckdb",
    }
    env.pop("PGDATAHUB_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE], env=env, capture_output=True, text=True, check=True, timeout=600
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.code_location_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--folders", type=int, default=5000)
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder, "empty")
        empty.mkdir()
        tree = Path(folder, "tree")
        build_tree(tree, arguments.folders)
        baseline = measure(empty)
        loaded = measure(tree)
    loaded["folders"] = arguments.folders
    loaded["table_assets_s"] = round(loaded["load_s"] - baseline["load_s"], 2)
    loaded["load_with_no_folders_s"] = baseline["load_s"]
    loaded["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(loaded, indent=2))


if __name__ == "__main__":
    main()
