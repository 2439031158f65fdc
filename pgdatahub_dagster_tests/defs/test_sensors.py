"""The local-folder sensor against a real instance, with its runs really executed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, SensorResult, build_sensor_context

from pgdatahub_dagster.defs.partitions import partition_key_for
from pgdatahub_dagster.defs.sources.local import LOCAL_FOLDER
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.defs.conftest import apply_partition_requests, launch
from pgdatahub_dagster_tests.exact_sync import SensorDaemon, assert_tables_equal, import_tree
from pgdatahub_dagster_tests.files import write_csv


@pytest.fixture(autouse=True)
def _no_settle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGDATAHUB_SENSOR_SETTLE_SECONDS", "0")


def tick(defs: Definitions, instance: DagsterInstance, cursor: str | None) -> SensorResult:
    sensor = defs.resolve_sensor_def("local_folder_sensor")
    with build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        result = sensor(context)
    assert isinstance(result, SensorResult)
    apply_partition_requests(instance, result)
    return result


def run_requests(defs: Definitions, instance: DagsterInstance, result: SensorResult) -> None:
    for request in result.run_requests or []:
        assert launch(defs, instance, request)


def test_first_tick_requests_every_file_then_goes_idle(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "leads" / "a.csv", "name\nAcme\n")
    write_csv(source_dir / "leads" / "b.csv", "name\nBlue\n")
    (source_dir / "notes.pdf").write_text("not a spreadsheet")

    first = tick(test_defs, instance, None)
    requests = first.run_requests or []
    assert [r.partition_key for r in requests] == ["leads/a.csv", "leads/b.csv"]
    for request in requests:
        stat = (source_dir / request.partition_key).stat()
        assert request.run_key == f"{request.partition_key}:{stat.st_ctime_ns}"
    assert set(instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name)) == {
        "leads/a.csv",
        "leads/b.csv",
    }
    assert first.cursor is not None and len(first.cursor) < 200
    assert json.loads(first.cursor)["handled_at_changed_ns"]

    run_requests(test_defs, instance, first)
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT name FROM leads ORDER BY name") == [("Acme",), ("Blue",)]

    idle = tick(test_defs, instance, first.cursor)
    assert not idle.run_requests
    assert idle.skip_reason is not None and "idle" in str(idle.skip_reason)


def test_a_tick_registers_its_new_files_itself_and_a_failed_tick_reports_them_again(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    """New files' partitions are added by the evaluation itself, in one statement, not left
    to the daemon (which checks each key of a partition request in a query of its own). A
    tick whose result Dagster could not keep is evaluated again from the same cursor: the
    same runs, and the partitions, already there, are not added twice."""
    for name in "abc":
        write_csv(source_dir / "leads" / f"{name}.csv", f"name\n{name}\n")
    sensor = test_defs.resolve_sensor_def("local_folder_sensor")
    results = []
    for _ in range(2):  # the first evaluation's result is lost: no cursor kept, no request applied
        with build_sensor_context(instance=instance, cursor=None, resources=test_defs.resources) as context:
            result = sensor(context)
        assert isinstance(result, SensorResult)
        assert not result.dynamic_partitions_requests
        assert sorted(instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name)) == [
            f"leads/{name}.csv" for name in "abc"
        ]
        results.append(result)
    first, again = ([(r.partition_key, r.run_key) for r in result.run_requests or []] for result in results)
    assert len(first) == 3 and again == first


def test_changed_added_and_renamed_files_are_found(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    write_csv(source_dir / "leads" / "a.csv", "name\nAcme\n")
    write_csv(source_dir / "leads" / "b.csv", "name\nBlue\n")
    first = tick(test_defs, instance, None)
    run_requests(test_defs, instance, first)

    write_csv(source_dir / "leads" / "a.csv", "name\nAcme\nCorner\n")
    os.utime(source_dir / "leads" / "a.csv", ns=(1, 1_000_000_000))  # an old mtime must not hide it
    shutil.move(source_dir / "leads" / "b.csv", source_dir / "leads" / "renamed.csv")
    write_csv(source_dir / "leads" / "c.csv", "name\nDelta\n")
    second = tick(test_defs, instance, first.cursor)
    imports = [r for r in second.run_requests or [] if r.job_name == "import_local_files"]
    keys = sorted(str(r.partition_key) for r in imports)
    assert keys == ["leads/a.csv", "leads/c.csv", "leads/renamed.csv"]
    [gone] = [r for r in second.run_requests or [] if r.job_name == "handle_deleted_files"]
    assert gone.run_config["ops"]["handle_deleted_files_op"]["config"]["file_ids"] == ["leads/b.csv"]
    assert "leads/a.csv:" in next(
        r.run_key for r in second.run_requests or [] if r.partition_key == "leads/a.csv"
    )

    run_requests(test_defs, instance, second)
    with connect(warehouse_url) as warehouse:
        names = warehouse.fetchall("SELECT name FROM leads ORDER BY name")
        assert names == [("Acme",), ("Blue",), ("Corner",), ("Delta",)]
        # A renamed file is a new file holding the same rows: they now show its name, as a
        # fresh import would, and b.csv (deleted under on_delete: keep) is ranked below it.
        renamed = warehouse.fetchall(
            "SELECT status, rows_inserted FROM etl_imports WHERE source_file = 'leads/renamed.csv'"
        )
        assert renamed == [("success", 1)]
        assert warehouse.fetchall("SELECT source_file FROM leads WHERE name = 'Blue'") == [
            ("leads/renamed.csv",)
        ]
        assert warehouse.fetchall(
            "SELECT status FROM etl_imports WHERE source_file = 'leads/b.csv' ORDER BY id"
        ) == [("kept",), ("deleted",)]


def test_long_listings_are_spread_over_ticks(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_FILES", "2")
    for name in "abcde":
        write_csv(source_dir / "t" / f"{name}.csv", f"v\n{name}\n")
    cursor, seen = None, []
    for _ in range(3):
        result = tick(test_defs, instance, cursor)
        seen += [r.partition_key for r in result.run_requests or []]
        cursor = result.cursor
    assert seen == [f"t/{name}.csv" for name in "abcde"]
    assert not tick(test_defs, instance, cursor).run_requests


def test_files_still_being_written_wait(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGDATAHUB_SENSOR_SETTLE_SECONDS", "3600")
    write_csv(source_dir / "t" / "new.csv", "v\n1\n")
    result = tick(test_defs, instance, None)
    assert not result.run_requests
    monkeypatch.setenv("PGDATAHUB_SENSOR_SETTLE_SECONDS", "0")
    later = tick(test_defs, instance, result.cursor)
    assert [r.partition_key for r in later.run_requests or []] == [partition_key_for("t/new.csv")]


@pytest.mark.parametrize("on_delete", ["keep", "retract"])
def test_deleted_files_lose_their_partition_and_follow_on_delete(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str, on_delete: str
) -> None:
    (source_dir / "pgdatahub.yaml").write_text(f"leads:\n  on_delete: {on_delete}\n")
    write_csv(source_dir / "leads" / "a.csv", "name\nAcme\nBlue\n")
    write_csv(source_dir / "leads" / "b.csv", "name\nCorner\n")
    first = tick(test_defs, instance, None)
    run_requests(test_defs, instance, first)

    (source_dir / "leads" / "a.csv").unlink()
    second = tick(test_defs, instance, first.cursor)
    [deletion] = second.run_requests or []
    assert deletion.job_name == "handle_deleted_files"
    assert instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name) == ["leads/b.csv"]
    run_requests(test_defs, instance, second)
    with connect(warehouse_url) as warehouse:
        names = warehouse.fetchall("SELECT name FROM leads ORDER BY name")
        ledger = warehouse.fetchall(
            "SELECT status FROM etl_imports WHERE source_file = 'leads/a.csv' ORDER BY id"
        )
    if on_delete == "keep":
        # The import is kept (it still holds its rows, ranked below live files).
        assert names == [("Acme",), ("Blue",), ("Corner",)]
        assert ledger == [("kept",), ("deleted",)]
    else:
        assert names == [("Corner",)]
        assert ledger == [("retracted",), ("retracted",)]
    assert not tick(test_defs, instance, second.cursor).run_requests


def test_a_missing_source_folder_is_not_a_mass_deletion(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path
) -> None:
    write_csv(source_dir / "t" / "a.csv", "v\n1\n")
    first = tick(test_defs, instance, None)
    shutil.rmtree(source_dir)
    second = tick(test_defs, instance, first.cursor)
    assert not second.run_requests and "does not exist" in str(second.skip_reason)
    assert instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name) == ["t/a.csv"]


def test_content_restored_to_an_earlier_version_is_imported_again(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    path = source_dir / "t" / "a.csv"
    daemon = SensorDaemon(test_defs, instance, "local_folder_sensor")
    # The last step restores the first version from a backup that keeps modification times
    # (rsync -a, cp -p): same bytes, same size and mtime as before, and still imported.
    for text, expected in [("v\n1\n", [(1,)]), ("v\n2\n", [(2,)]), ("v\n1\n", [(1,)])]:
        write_csv(path, text)
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
        assert daemon.sync() == ["t/a.csv"]
        with connect(warehouse_url) as warehouse:
            assert warehouse.fetchall("SELECT v FROM t") == expected


def test_a_file_deleted_restored_and_deleted_again_is_retracted_each_time(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    (source_dir / "pgdatahub.yaml").write_text("t:\n  on_delete: retract\n")
    path = source_dir / "t" / "a.csv"
    daemon = SensorDaemon(test_defs, instance, "local_folder_sensor")
    for _ in range(2):
        write_csv(path, "v\n1\n")
        assert daemon.sync() == ["t/a.csv"]
        path.unlink()
        assert daemon.sync() == ["handle_deleted_files"]
        with connect(warehouse_url) as warehouse:
            assert warehouse.count("t") == 0


def test_a_deletion_run_that_executes_after_the_file_came_back_deletes_nothing(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    """Runs may execute in any order: the deletion run of a file restored meanwhile is moot."""
    (source_dir / "pgdatahub.yaml").write_text("t:\n  on_delete: retract\n")
    path = source_dir / "t" / "a.csv"
    write_csv(path, "v\n1\n")
    first = tick(test_defs, instance, None)
    run_requests(test_defs, instance, first)
    moved = path.rename(source_dir / "a.csv.bak")
    second = tick(test_defs, instance, first.cursor)
    [deletion] = second.run_requests or []
    moved.rename(path)  # back before the deletion run starts
    assert launch(test_defs, instance, deletion)
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT v FROM t") == [(1,)]


def test_an_edited_mapping_gets_one_full_sync_each_time(
    test_defs: Definitions, instance: DagsterInstance, source_dir: Path, warehouse_url: str
) -> None:
    mapping = source_dir / "pgdatahub.yaml"
    mapping.write_text("t:\n  unique_key: [id]\n  prefer: newest\n")
    for name, label, second in (("a.csv", "old", 1), ("b.csv", "new", 2)):
        write_csv(source_dir / "t" / name, f"id,label\n1,{label}\n")
        os.utime(source_dir / "t" / name, (1_700_000_000 + second, 1_700_000_000 + second))
    daemon = SensorDaemon(test_defs, instance, "local_folder_sensor")
    assert daemon.sync() == ["t/a.csv", "t/b.csv"]

    def shown() -> list[tuple[object, ...]]:
        with connect(warehouse_url) as warehouse:
            return warehouse.fetchall("SELECT label, source_file FROM t")

    assert shown() == [("new", "t/b.csv")]
    mapping.write_text("t:\n  unique_key: [id]\n  prefer: oldest\n")
    assert daemon.sync() == ["sync_local_folder"]
    assert shown() == [("old", "t/a.csv")]
    assert daemon.tick() == ([], [])
    # Back to the first text: a new full sync, not a run key used before.
    mapping.write_text("t:\n  unique_key: [id]\n  prefer: newest\n")
    assert daemon.sync() == ["sync_local_folder"]
    assert shown() == [("new", "t/b.csv")]


# Each case 13-18 s: every run takes keep on DuckDB and retract on PostgreSQL, -m long the other two.
@pytest.mark.parametrize(
    ("warehouse_url", "on_delete"),
    [
        ("duckdb", "keep"),
        pytest.param("duckdb", "retract", marks=pytest.mark.long),
        pytest.param("postgres", "keep", marks=pytest.mark.long),
        ("postgres", "retract"),
    ],
    indirect=["warehouse_url"],
)
def test_a_mass_deletion_is_one_run_and_survives_a_failed_tick(
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    on_delete: str,
) -> None:
    """Many files gone at once: the tick removes their partitions itself (no partition request
    for the daemon, which would take two queries a key) and asks for one deletion run. A tick
    whose result Dagster could not keep is evaluated again from its old cursor, when the files
    have no partition any more: it asks for the same run, with every file. The tick after a
    kept one asks for nothing; a restored file imports again; the warehouse then equals a
    fresh import."""
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_RUNS", "100")
    (source_dir / "pgdatahub.yaml").write_text(f"t:\n  on_delete: {on_delete}\n")
    # More than the ten a log line names; each file's first import is a run of its own.
    paths = [source_dir / "t" / f"f{index:02d}.csv" for index in range(12)]
    for index, path in enumerate(paths):
        write_csv(path, f"code,v\nc{index},{index}\n")
    daemon = SensorDaemon(test_defs, instance, "local_folder_sensor")
    assert len(daemon.sync()) == 12

    kept_dir = source_dir.parent / "kept"  # the deleted files, for what keep leaves
    shutil.copytree(source_dir, kept_dir)
    (kept_dir / "t" / "f07.csv").unlink()
    for path in paths:
        path.unlink()
    cursor = daemon.cursor
    lost = daemon.evaluate()
    assert not lost.dynamic_partitions_requests
    assert instance.get_dynamic_partitions(LOCAL_FOLDER.partitions_name) == []
    daemon.cursor = cursor
    [deletion], _ = daemon.tick()
    assert [r.run_key for r in lost.run_requests or []] == [deletion.run_key]
    assert deletion.run_config["ops"]["handle_deleted_files_op"]["config"]["file_ids"] == [
        f"t/f{index:02d}.csv" for index in range(12)
    ]
    assert daemon.launch(deletion)
    assert daemon.sync() == []

    write_csv(paths[7], "code,v\nc7,7\n")
    assert daemon.sync() == ["t/f07.csv"]
    assert daemon.sync() == []
    expected = new_warehouse("expected")
    import_tree(expected, source_dir)
    kept = None
    if on_delete == "keep":
        kept = new_warehouse("kept")
        import_tree(kept, kept_dir)
    assert_tables_equal(warehouse_url, expected, kept_url=kept)
