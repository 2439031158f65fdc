"""PROTOTYPE: measure timings."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from pgdatahub_dagster.definitions import defs
from pgdatahub_dagster.defs.assets import local_spreadsheets
from pgdatahub_dagster.defs.partitions import local_files
from pgdatahub_dagster_tests.deploy.conftest import BIN, Processes, base_env, wait_for
from pgdatahub_dagster_tests.files import write_csv, write_xlsx

ROOT = Path(__file__).resolve().parents[2]
BACKFILL_TAG = "dagster/backfill"
T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}] {message}", flush=True)


def _write_files(root: Path) -> list[str]:
    keys = []
    for n in range(4):
        write_xlsx(
            root / "leads" / f"batch_{n}.xlsx",
            {"Sheet1": [["Business Name", "Zip", "Signed"], [f"Shop {n}a", f"0{n}234", dt.date(2026, 3, n + 1)]]},
        )
        keys.append(f"leads/batch_{n}.xlsx")
    for n in range(4):
        write_csv(root / "orders" / f"day_{n}.csv", f"order_id,qty\n{n}01,{n + 1}\n{n}02,{n + 2}.5\n")
        keys.append(f"orders/day_{n}.csv")
    for n in range(4):
        write_csv(root / "stock" / f"s_{n}.csv", f"sku,count\nS{n}1,{n}\nS{n}2,{n * 2}\n")
        keys.append(f"stock/s_{n}.csv")
    return sorted(keys)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def test_proto(tmp_path: Path, postgres_url: str, processes: Processes) -> None:
    global T0
    T0 = time.monotonic()
    source = tmp_path / "inbox"
    keys = _write_files(source)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = base_env(
        DAGSTER_HOME=str(home),
        PGDATAHUB_DATABASE_URL=postgres_url,
        PGDATAHUB_SOURCE_DIR=str(source),
        PGDATAHUB_FILES_PER_RUN="2",
        PGDATAHUB_SENSOR_MAX_RUNS="0",
        PGDATAHUB_SENSOR_INTERVAL="3600",
    )
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(local_files.name, keys)
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=defs.resolve_asset_graph(),
            partition_names=keys,
            asset_selection=[local_spreadsheets.key],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="bulk import",
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        log("backfill added")
        processes.start(
            "dagster-daemon",
            [str(BIN / "dagster-daemon"), "run", "-m", "pgdatahub_dagster.definitions"],
            env,
            tmp_path,
        )
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            runs = instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill.backfill_id}))
            for run in runs:
                state = run.status.value
                if seen.get(run.run_id) != state:
                    seen[run.run_id] = state
                    log(f"run {run.run_id[:8]} {state} {run.tags.get('dagster/asset_partition_range_start')}..{run.tags.get('dagster/asset_partition_range_end')}")
            b = instance.get_backfill(backfill.backfill_id)
            assert b
            if seen.get("backfill") != b.status.value:
                seen["backfill"] = b.status.value
                log(f"backfill {b.status.value}")
            if b.status == BulkActionStatus.COMPLETED_SUCCESS:
                break
            time.sleep(0.3)
        print(processes.logs(6000))
