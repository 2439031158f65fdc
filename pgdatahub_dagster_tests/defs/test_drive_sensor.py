"""Google Drive end to end: the real client over HTTP to the Drive test server, the sensor,
runs of the import job, and rows in the warehouse."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions

from pgdatahub_dagster.defs.sources.drive import GOOGLE_DRIVE
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.testing.drive_server import DriveTestServer
from pgdatahub_dagster_tests.exact_sync import SensorDaemon
from pgdatahub_dagster_tests.files import write_xlsx


@pytest.fixture
def drive_tree(
    drive_server: DriveTestServer, drive_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    ids: dict[str, str] = {}
    ids["root"] = drive_server.add_folder("Sales Inbox")
    ids["leads"] = drive_server.add_folder("Leads", ids["root"])
    ids["eu"] = drive_server.add_folder("EU", ids["leads"])
    ids["elsewhere"] = drive_server.add_folder("Someone else's folder")
    ids["a"] = drive_server.add_file("a.csv", ids["leads"], b"name,city\nAcme,Oslo\nBlue,Rome\n")
    xlsx = write_xlsx(
        tmp_path / "eu.xlsx", {"Sheet1": [["name", "city"], ["Café Zürich", "Zürich"]]}
    ).read_bytes()
    ids["eu_file"] = drive_server.add_file("eu.xlsx", ids["eu"], xlsx)
    sheet = write_xlsx(
        tmp_path / "sheet.xlsx", {"Sheet1": [["name", "city"], ["Delta", "Lyon"]]}
    ).read_bytes()
    ids["sheet"] = drive_server.add_google_sheet("Team sheet", ids["leads"], sheet)
    ids["target"] = drive_server.add_file("shared.csv", ids["elsewhere"], b"name,city\nEcho,Bern\n")
    ids["shortcut"] = drive_server.add_shortcut("shared.csv", ids["leads"], ids["target"])
    monkeypatch.setenv("PGDATAHUB_DRIVE_FOLDER_ID", ids["root"])
    monkeypatch.setenv("PGDATAHUB_DRIVE_CREDENTIALS", str(drive_credentials))
    monkeypatch.setenv("PGDATAHUB_DRIVE_API_ENDPOINT", drive_server.api_endpoint)
    return ids


@pytest.fixture
def synced_retracting(
    test_defs: Definitions, instance: DagsterInstance, drive_tree: dict[str, str], source_dir: Path
) -> SensorDaemon:
    """A sensor daemon that has synced the tree once, with Leads under ``on_delete: retract``."""
    (source_dir / "pgdatahub.yaml").write_text("Leads:\n  on_delete: retract\n")
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    daemon.sync()
    return daemon


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with connect(url) as warehouse:
        return warehouse.fetchall(sql)


def _batch_folders(drive_server: DriveTestServer, root: str) -> tuple[list[str], set[str]]:
    """45 folders under ``root``, a CSV in each (a walk of several listings): the folders and
    the files."""
    folders = [drive_server.add_folder(f"batch {i:02d}", root) for i in range(45)]
    files = {drive_server.add_file("x.csv", folder, f"n\n{i}\n".encode()) for i, folder in enumerate(folders)}
    return folders, files


def _tree_files(drive_tree: dict[str, str]) -> set[str]:
    return {drive_tree[k] for k in ("a", "eu_file", "sheet", "shortcut")}


def _walk_to_its_end(daemon: SensorDaemon, requested: list[str | None], expected: set[str]) -> None:
    """Ticks until the walk ends; then every file must have been requested once."""
    while '"walking":false' not in (daemon.cursor or ""):
        requested += [r.partition_key for r in daemon.tick()[0]]
        assert len(requested) <= len(expected)
    assert sorted(str(key) for key in requested) == sorted(expected)


def test_initial_import_of_a_nested_tree(
    test_defs: Definitions, instance: DagsterInstance, drive_tree: dict[str, str], warehouse_url: str
) -> None:
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    ran = daemon.sync()
    assert sorted(ran) == sorted(
        [drive_tree["a"], drive_tree["eu_file"], drive_tree["sheet"], drive_tree["shortcut"]]
    )
    assert set(instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name)) == set(ran)
    assert _rows(warehouse_url, "SELECT name, source_file FROM leads ORDER BY name") == [
        ("Acme", "Leads/a.csv"),
        ("Blue", "Leads/a.csv"),
        ("Delta", "Leads/Team sheet"),
        ("Echo", "Leads/shared.csv"),
    ]
    assert _rows(warehouse_url, "SELECT name, source_file_id FROM leads_eu") == [
        ("Café Zürich", drive_tree["eu_file"])
    ]
    assert daemon.tick() == ([], [])  # idle


def test_add_rename_move_modify_and_trash(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
) -> None:
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    daemon.sync()
    imported = _rows(warehouse_url, "SELECT count(*) FROM etl_imports WHERE status = 'success'")

    drive_server.rename(drive_tree["a"], "a-renamed.csv")
    drive_server.move(drive_tree["eu_file"], drive_tree["leads"])
    # Each is a new revision: a fresh import would name the new path, and put eu.xlsx,
    # now in Leads, into leads. The renamed file is not read again (same content).
    assert sorted(daemon.sync()) == sorted([drive_tree["a"], drive_tree["eu_file"]])
    assert _rows(warehouse_url, "SELECT count(*) FROM etl_imports WHERE status = 'success'") == imported
    assert _rows(warehouse_url, "SELECT DISTINCT source_file FROM leads WHERE name IN ('Acme', 'Blue')") == [
        ("Leads/a-renamed.csv",)
    ]
    assert _rows(warehouse_url, "SELECT source_file FROM leads WHERE name = 'Café Zürich'") == [
        ("Leads/eu.xlsx",)
    ]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads_eu") == [(0,)]

    drive_server.update_content(drive_tree["a"], b"name,city\nAcme,Oslo\nBlue,Rome\nCorner,Oslo\n")
    new = drive_server.add_file("new.csv", drive_tree["eu"], b"name,city\nFoxtrot,Wien\n")
    assert sorted(daemon.sync()) == sorted([drive_tree["a"], new])
    assert _rows(warehouse_url, "SELECT count(*) FROM leads WHERE name = 'Corner'") == [(1,)]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads WHERE name = 'Acme'") == [(1,)]
    assert _rows(warehouse_url, "SELECT name FROM leads_eu ORDER BY name") == [("Foxtrot",)]

    drive_server.trash(drive_tree["a"])
    [deletion], _ = daemon.tick()
    assert deletion.job_name == "handle_deleted_files"
    assert daemon.launch(deletion)
    # on_delete defaults to keep: the rows stay and the ledger notes the deletion.
    assert _rows(warehouse_url, f"SELECT count(*) FROM leads WHERE source_file_id = '{drive_tree['a']}'") == [
        (3,)
    ]
    assert _rows(
        warehouse_url,
        f"SELECT status FROM etl_imports WHERE source_file_id = '{drive_tree['a']}' ORDER BY id",
    )[-1] == ("deleted",)
    assert drive_tree["a"] not in instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name)
    assert daemon.tick() == ([], [])


def test_on_delete_retract_removes_a_trashed_files_rows(
    synced_retracting: SensorDaemon,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
) -> None:
    daemon = synced_retracting
    drive_server.trash(drive_tree["a"])
    drive_server.move(drive_tree["shortcut"], drive_tree["elsewhere"])  # moved out of the tree
    daemon.sync()
    assert _rows(warehouse_url, "SELECT name FROM leads ORDER BY name") == [("Delta",)]
    statuses = _rows(
        warehouse_url,
        "SELECT status, rows_deleted FROM etl_imports "
        f"WHERE source_file_id = '{drive_tree['a']}' ORDER BY id",
    )
    assert statuses == [("retracted", 0), ("retracted", 2)]


def test_a_restart_in_the_middle_of_the_walk_resumes_from_the_stored_cursor(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, extra = _batch_folders(drive_server, drive_tree["root"])
    monkeypatch.setenv("PGDATAHUB_DRIVE_TICK_SECONDS", "0")
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_RUNS", "100")  # a run a file, to count them
    first = SensorDaemon(test_defs, instance, "drive_sensor")
    requested = {r.partition_key for r in first.tick()[0]}
    # The process restarts: a new daemon with only the cursor Dagster stored.
    second = SensorDaemon(test_defs, instance, "drive_sensor")
    second.cursor = first.cursor
    ticks = 1
    while True:
        kept, _ = second.tick()
        ticks += 1
        requested |= {r.partition_key for r in kept}
        if '"walking":false' in (second.cursor or ""):
            break
        assert ticks < 10
    assert ticks >= 3
    assert extra | _tree_files(drive_tree) == requested


def test_a_failed_tick_keeps_the_walk_done_so_far(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk over several ticks, one listing a tick. A tick whose result Dagster could not
    keep is evaluated again from the same cursor and reports the same files; a tick whose
    listing fails (Drive failing after every retry) skips, and leaves the folder registry as
    the tick before it left it: the walk goes on from there, and every file is requested once."""
    _, extra = _batch_folders(drive_server, drive_tree["root"])
    monkeypatch.setenv("PGDATAHUB_DRIVE_TICK_SECONDS", "0")
    monkeypatch.setenv("PGDATAHUB_DRIVE_RETRIES", "0")
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_RUNS", "100")  # a run a file, to count them
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    requested = [r.partition_key for r in daemon.tick()[0]]

    cursor = daemon.cursor
    lost = daemon.evaluate()
    daemon.cursor = cursor
    kept, _ = daemon.tick()
    assert kept and sorted(str(r.run_key) for r in kept) == sorted(
        str(r.run_key) for r in lost.run_requests or []
    )
    requested += [r.partition_key for r in kept]

    listed = _rows(warehouse_url, "SELECT folder_id, listed FROM drive_folders ORDER BY folder_id")
    cursor = daemon.cursor
    drive_server.inject_fault("503", path_contains="parents")
    failed = daemon.evaluate()
    assert failed.skip_reason is not None and not failed.run_requests
    assert daemon.cursor == cursor
    assert _rows(warehouse_url, "SELECT folder_id, listed FROM drive_folders ORDER BY folder_id") == listed

    _walk_to_its_end(daemon, requested, extra | _tree_files(drive_tree))


def test_a_tick_whose_listing_fails_part_way_keeps_what_it_listed(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drive fails (after every retry) at a listing late in a tick's walk: the tick ends there
    as at its deadline, requests the files it listed, and the next tick goes on from there;
    every file is requested once."""
    folders, extra = _batch_folders(drive_server, drive_tree["root"])
    # Met only once its parent is listed, so listed in a later query than the root's children.
    deep = drive_server.add_folder("deep", folders[-1])
    extra.add(drive_server.add_file("deep.csv", deep, b"n\n99\n"))
    monkeypatch.setenv("PGDATAHUB_DRIVE_TICK_SECONDS", "600")
    monkeypatch.setenv("PGDATAHUB_DRIVE_RETRIES", "0")
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_RUNS", "100")  # a run a file, to count them
    drive_server.inject_fault("503", path_contains=deep)
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    first = daemon.evaluate()
    assert first.skip_reason is None and '"walking":true' in (daemon.cursor or "")
    requested = [r.partition_key for r in first.run_requests or []]
    assert len(requested) == len(extra) - 1 + 4
    _walk_to_its_end(daemon, requested, extra | _tree_files(drive_tree))


# About 45 s per warehouse: PostgreSQL in every run, DuckDB with -m long.
@pytest.mark.parametrize(
    "warehouse_url", [pytest.param("duckdb", marks=pytest.mark.long), "postgres"], indirect=True
)
def test_a_folder_of_many_files_trashed_is_deleted_in_bulk_over_ticks_and_survives_a_failed_tick(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    source_dir: Path,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder of many files trashed: a tick removes the partitions of at most
    PGDATAHUB_SENSOR_MAX_FILES of them itself and asks for one deletion run; the rest follow
    on the next ticks, although Drive reported them once. The first tick, evaluated again from
    its old cursor (Dagster could not keep its result) when its partitions are gone, asks for
    the same run with the same files. The runs retract every row."""
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_RUNS", "100")  # a run a file, to launch them
    (source_dir / "pgdatahub.yaml").write_text("Bulk:\n  on_delete: retract\n")
    bulk = drive_server.add_folder("Bulk", drive_tree["root"])
    files = sorted(drive_server.add_file(f"f{i:02d}.csv", bulk, f"n\n{i}\n".encode()) for i in range(30))
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    daemon.sync()
    assert _rows(warehouse_url, "SELECT count(*) FROM bulk") == [(30,)]

    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_FILES", "12")
    drive_server.trash(bulk)
    cursor = daemon.cursor
    lost = daemon.evaluate()
    assert not lost.dynamic_partitions_requests
    assert not set(files[:12]) & set(instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name))
    daemon.cursor = cursor
    deletions = []
    while kept := daemon.tick()[0]:
        deletions += kept
        assert len(deletions) <= 3
    assert [r.run_key for r in lost.run_requests or []] == [deletions[0].run_key]
    assert [d.run_config["ops"]["handle_deleted_files_op"]["config"]["file_ids"] for d in deletions] == [
        files[:12],
        files[12:24],
        files[24:],
    ]
    assert not set(files) & set(instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name))
    for deletion in deletions:
        assert daemon.launch(deletion)
    assert _rows(warehouse_url, "SELECT count(*) FROM bulk") == [(0,)]
    assert daemon.tick() == ([], [])


def test_a_sheet_over_the_export_limit_fails_alone(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
) -> None:
    drive_server.export_limit_bytes = 100
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    daemon.sync(runs_succeed=False)
    failed = _rows(warehouse_url, "SELECT source_file, error FROM etl_imports WHERE status = 'failed'")
    assert failed == [
        (
            "Leads/Team sheet",
            "Leads/Team sheet: this Google Sheet is over Drive's 10 MB export limit, so it cannot be "
            "exported as xlsx; download it as .xlsx and upload that file instead, or split the sheet",
        )
    ]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads") == [(3,)]


def test_an_unconfigured_drive_sensor_says_so(test_defs: Definitions, instance: DagsterInstance) -> None:
    result = SensorDaemon(test_defs, instance, "drive_sensor").evaluate()
    assert not result.run_requests
    assert "PGDATAHUB_DRIVE_FOLDER_ID" in str(result.skip_reason)


def test_folders_carry_their_files_renamed_moved_out_and_in(
    synced_retracting: SensorDaemon,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
) -> None:
    """Drive reports a folder's rename or move, never the files inside: the sensor makes
    them follow, as a fresh import of the tree would."""
    daemon = synced_retracting

    # Renamed: the rows take the new path (leads_eu becomes leads_europe), nothing is read.
    drive_server.rename(drive_tree["eu"], "Europe")
    assert daemon.sync() == [drive_tree["eu_file"]]
    assert _rows(warehouse_url, "SELECT name, source_file FROM leads_europe") == [
        ("Café Zürich", "Leads/Europe/eu.xlsx")
    ]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads_eu") == [(0,)]

    # Moved out: every file below leaves (on_delete: retract).
    drive_server.move(drive_tree["eu"], drive_tree["elsewhere"])
    daemon.sync()
    assert _rows(warehouse_url, "SELECT count(*) FROM leads_europe") == [(0,)]
    assert drive_tree["eu_file"] not in instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name)

    # Moved back in: its files come back, although none of them changed; the run the log
    # announces is one the daemon launches (its run key is new), never one it drops.
    drive_server.move(drive_tree["eu"], drive_tree["leads"])
    kept, dropped = daemon.tick()
    assert ([request.partition_key for request in kept], dropped) == ([drive_tree["eu_file"]], [])
    assert all(daemon.launch(request) for request in kept)
    assert _rows(warehouse_url, "SELECT name, source_file FROM leads_europe") == [
        ("Café Zürich", "Leads/Europe/eu.xlsx")
    ]


def test_a_file_moved_out_and_back_in_one_tick_keeps_its_rows(
    synced_retracting: SensorDaemon,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
) -> None:
    daemon = synced_retracting
    # Into a folder outside the tree, then that folder into the tree, in one tick.
    box = drive_server.add_folder("Box", drive_tree["elsewhere"])
    drive_server.move(drive_tree["a"], box)
    drive_server.move(box, drive_tree["leads"])
    daemon.sync()
    assert drive_tree["a"] in instance.get_dynamic_partitions(GOOGLE_DRIVE.partitions_name)
    assert _rows(warehouse_url, "SELECT name, source_file FROM leads_box ORDER BY name") == [
        ("Acme", "Leads/Box/a.csv"),
        ("Blue", "Leads/Box/a.csv"),
    ]
    assert _rows(warehouse_url, "SELECT count(*) FROM leads WHERE name = 'Acme'") == [(0,)]


def test_an_import_asks_for_the_file_once_and_removals_log_the_path(
    test_defs: Definitions,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    instance: DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    daemon.sync()
    drive_server.update_content(drive_tree["a"], b"name,city\nAcme,Oslo\n")
    drive_server.reset_request_log()
    assert daemon.sync() == [drive_tree["a"]]
    metadata_gets = [
        query for _, path, query in drive_server.request_log if path.endswith(f"/files/{drive_tree['a']}")
    ]
    assert [query.get("alt") for query in metadata_gets] == ["json", "media"]  # one files.get, one download

    drive_server.trash(drive_tree["a"])
    capfd.readouterr()
    daemon.tick()
    # The sensor's log goes to Dagster's handler on stderr.
    assert f"REMOVED Leads/a.csv ({drive_tree['a']})" in capfd.readouterr().err


def test_a_tick_evaluated_again_requests_the_same_runs(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
) -> None:
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    daemon.sync()
    drive_server.rename(drive_tree["leads"], "Prospects")
    cursor = daemon.cursor
    first = daemon.evaluate()
    daemon.cursor = cursor  # Dagster could not keep that tick's result: it evaluates it again
    again = daemon.evaluate()
    keys = sorted(str(request.run_key) for request in first.run_requests or [])
    assert len(keys) == 4  # every file below Leads follows, the shortcut included
    assert sorted(str(request.run_key) for request in again.run_requests or []) == keys


def test_refused_credentials_skip_the_tick_with_one_clear_line(
    test_defs: Definitions,
    instance: DagsterInstance,
    drive_tree: dict[str, str],
    refused_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGDATAHUB_DRIVE_CREDENTIALS", str(refused_credentials))
    daemon = SensorDaemon(test_defs, instance, "drive_sensor")
    result = daemon.evaluate()
    assert not result.run_requests and result.skip_reason is not None
    message = result.skip_reason.skip_message or ""
    assert message.startswith(f"{refused_credentials}: Google refused these credentials")
    assert "SECRET" not in message
    assert daemon.cursor is None  # the next tick starts over from the same place


def test_a_renamed_google_sheet_reads_nothing_new(
    synced_retracting: SensorDaemon,
    drive_server: DriveTestServer,
    drive_tree: dict[str, str],
    warehouse_url: str,
) -> None:
    """A rename moves a native Sheet's version, not its content: its run exports it again,
    finds the same sha256, and only renames the rows' source_file."""
    daemon = synced_retracting
    drive_server.rename(drive_tree["sheet"], "Team sheet 2024")
    assert daemon.sync() == [drive_tree["sheet"]]
    assert _rows(
        warehouse_url,
        f"SELECT status FROM etl_imports WHERE source_file_id = '{drive_tree['sheet']}' ORDER BY id",
    ) == [("success",), ("skipped",)]
    assert _rows(warehouse_url, "SELECT source_file FROM leads WHERE name = 'Delta'") == [
        ("Leads/Team sheet 2024",)
    ]
