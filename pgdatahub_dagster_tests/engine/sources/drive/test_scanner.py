"""The change scanner and folder registry: real client, real HTTP, real warehouse."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pgdatahub_dagster.engine.sources.drive import DriveClient, DriveScanner, FolderRegistry, ScanState
from pgdatahub_dagster.engine.sources.drive.scanner import ScanResult
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.testing.drive_server import DriveTestServer


def _tree(server: DriveTestServer) -> dict[str, str]:
    ids: dict[str, str] = {}
    ids["root"] = server.add_folder("Inbox")
    ids["leads"] = server.add_folder("Leads", ids["root"])
    ids["2024"] = server.add_folder("2024", ids["leads"])
    ids["other"] = server.add_folder("Elsewhere")  # not watched
    ids["a"] = server.add_file("a.csv", ids["leads"], b"name\nAcme\n")
    ids["b"] = server.add_file("b.xlsx", ids["2024"], b"not really xlsx, never opened here")
    ids["top"] = server.add_file("top.csv", ids["root"], b"x\n1\n")
    ids["notes"] = server.add_file("notes.pdf", ids["leads"], b"%PDF")
    ids["outside"] = server.add_file("o.csv", ids["other"], b"x\n1\n")
    return ids


def _scanner(client: DriveClient, registry: FolderRegistry, root: str, budget: float = 30.0) -> DriveScanner:
    return DriveScanner(client, registry, [root], budget_seconds=budget)


def _walked(
    server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> tuple[dict[str, str], DriveScanner, ScanState]:
    """The test tree, a scanner, and the state after its first walk."""
    ids = _tree(server)
    scanner = _scanner(client, registry, ids["root"])
    return ids, scanner, scanner.scan(ScanState()).state


def test_first_scan_takes_the_token_first_then_walks_the_tree(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids = _tree(drive_server)
    drive_server.reset_request_log()
    result = _scanner(client, registry, ids["root"]).scan(ScanState())
    paths = {file.path for file in result.found.values()}
    assert paths == {"Leads/a.csv", "Leads/2024/b.xlsx", "top.csv"}
    assert not result.state.walking and result.state.page_token is not None
    first_request = drive_server.request_log[0][1]
    assert first_request.endswith("changes/startPageToken")
    assert registry.folder(ids["2024"]) == (ids["root"], "Leads/2024")
    assert registry.folder(ids["other"]) is None


def test_a_walk_too_long_for_one_tick_continues_after_a_restart(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry, warehouse_url: str
) -> None:
    root = drive_server.add_folder("Inbox")
    expected = set()
    for folder_number in range(45):
        folder = drive_server.add_folder(f"f{folder_number:02d}", root)
        drive_server.add_file("data.csv", folder, f"n\n{folder_number}\n".encode())
        expected.add(f"f{folder_number:02d}/data.csv")
    state, found, ticks = ScanState(), set(), 0
    while True:
        ticks += 1
        # A fresh connection, registry and scanner per tick: what a restarted process has.
        with connect(warehouse_url) as warehouse:
            result = _scanner(client, FolderRegistry(warehouse), root, budget=0.0).scan(state)
        found |= {file.path for file in result.found.values()}
        state = result.state
        if not state.walking:
            break
        assert ticks < 20
    assert ticks >= 3  # 46 folders, 20 per query, one query per tick
    assert found == expected


def test_changes_add_modify_rename_move_and_trash(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)
    idle = scanner.scan(state)
    assert (idle.found, idle.removed) == ({}, {})  # nothing changed since the walk
    state = idle.state

    new = drive_server.add_file("new.csv", ids["2024"], b"n\n1\n")
    drive_server.update_content(ids["a"], b"name\nAcme\nBlue\n")
    drive_server.rename(ids["top"], "renamed.csv")
    drive_server.move(ids["b"], ids["leads"])
    drive_server.trash(ids["notes"])
    drive_server.add_file("o2.csv", ids["other"], b"x\n2\n")
    result = scanner.scan(state)
    assert {f.file_id: f.path for f in result.found.values()} == {
        new: "Leads/2024/new.csv",
        ids["a"]: "Leads/a.csv",
        ids["top"]: "renamed.csv",
        ids["b"]: "Leads/b.xlsx",
    }
    # Files outside the tree, and files that are no spreadsheets, are nothing to remove.
    assert result.removed == {}
    # A full walk agrees with the changes: nothing new, nothing gone.
    rewalk = scanner.scan(ScanState())
    assert (rewalk.found, rewalk.removed) == ({}, {})

    drive_server.trash(ids["a"])
    drive_server.delete(new)
    drive_server.move(ids["b"], ids["other"])
    gone = scanner.scan(rewalk.state)
    assert not gone.found
    assert gone.removed == {ids["a"]: "Leads/a.csv", new: "Leads/2024/new.csv", ids["b"]: "Leads/b.xlsx"}


def test_folders_renamed_moved_in_and_out(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)

    # Drive reports the folder alone; every file below it follows, at any depth.
    drive_server.rename(ids["leads"], "Prospects")
    result = scanner.scan(state)
    assert registry.folder(ids["2024"]) == (ids["root"], "Prospects/2024")
    assert {f.file_id: f.path for f in result.found.values()} == {
        ids["a"]: "Prospects/a.csv",
        ids["b"]: "Prospects/2024/b.xlsx",
    }
    later = drive_server.add_file("later.csv", ids["2024"], b"n\n2\n")
    result = scanner.scan(result.state)
    assert [f.path for f in result.found.values()] == ["Prospects/2024/later.csv"]

    # Moved in with a sub-folder: everything below comes in. Moved out: everything below
    # leaves, although Drive reports only the folder.
    archive = drive_server.add_folder("Archive", ids["other"])
    deep = drive_server.add_folder("deep", archive)
    drive_server.add_file("old.csv", archive, b"n\n3\n")
    drive_server.add_file("older.csv", deep, b"n\n4\n")
    drive_server.move(archive, ids["root"])
    drive_server.move(ids["2024"], ids["other"])
    result = scanner.scan(result.state)
    assert sorted(f.path for f in result.found.values()) == ["Archive/deep/older.csv", "Archive/old.csv"]
    assert registry.folder(ids["2024"]) is None
    assert result.removed == {ids["b"]: "Prospects/2024/b.xlsx", later: "Prospects/2024/later.csv"}


def test_a_file_moved_out_and_back_in_within_one_tick_is_no_change(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)
    # a.csv moves into a folder outside the tree, which then moves in: a.csv is in the
    # tree at the end of the tick, so it must not be removed.
    box = drive_server.add_folder("Box", ids["other"])
    drive_server.move(ids["a"], box)
    drive_server.move(box, ids["root"])
    result = scanner.scan(state)
    assert result.removed == {}
    assert [f.path for f in result.found.values()] == ["Box/a.csv"]
    # Out and back to the same place: still there (the test server moves modifiedTime on a
    # move, so it is reported again, for its new rank).
    drive_server.move(ids["top"], ids["other"])
    drive_server.move(ids["top"], ids["root"])
    again = scanner.scan(result.state)
    assert again.removed == {}
    assert [f.path for f in again.found.values()] == ["top.csv"]


@pytest.mark.parametrize("how", ["trashed", "deleted", "unshared"])
def test_every_file_below_a_folder_that_leaves_is_removed(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry, how: str
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)
    # Drive reports the folder alone.
    if how == "trashed":
        drive_server.trash(ids["leads"], descendants_reported=False)
    elif how == "deleted":
        drive_server.delete(ids["leads"], descendants_reported=False)
    else:
        drive_server.unshare(ids["leads"])
    result = scanner.scan(state)
    assert result.removed == {ids["a"]: "Leads/a.csv", ids["b"]: "Leads/2024/b.xlsx"}
    assert registry.folder(ids["2024"]) is None
    # A full walk agrees: those files are gone, top.csv stays.
    rewalk = scanner.scan(ScanState())
    assert (rewalk.found, rewalk.removed) == ({}, {})


def test_a_walk_after_a_rejected_token_reports_what_left_meanwhile(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)
    drive_server.move(ids["2024"], ids["other"])
    drive_server.expire_tokens_before(drive_server.current_page_token())
    result = scanner.scan(state)
    assert result.removed == {ids["b"]: "Leads/2024/b.xlsx"}
    assert result.found == {}


@pytest.mark.long
def test_thousands_of_changes_over_many_pages(
    drive_server: DriveTestServer, drive_credentials: Path, registry: FolderRegistry
) -> None:
    small_pages = DriveClient.connect(
        drive_credentials, api_endpoint=drive_server.api_endpoint, page_size=100
    )
    root = drive_server.add_folder("Inbox")
    scanner = _scanner(small_pages, registry, root)
    state = scanner.scan(ScanState()).state
    files = [drive_server.add_file(f"f{i}.csv", root, f"n\n{i}\n".encode()) for i in range(1000)]
    for file_id in files:
        drive_server.update_content(file_id, b"n\nchanged\n")
    drive_server.reset_request_log()
    result = scanner.scan(state)
    assert len(result.found) == 1000 and result.changes_read == 2000
    assert drive_server.request_count(path_contains="/changes") == 20
    assert all(f.version == next(iter(result.found.values())).version for f in result.found.values())
    assert scanner.scan(result.state).changes_read == 0


def test_fault_storms_are_survived(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids = _tree(drive_server)
    for kind in ("429", "503", "403_rate", "slow", "503"):
        drive_server.inject_fault(kind, count=1)
    result = _scanner(client, registry, ids["root"]).scan(ScanState())
    assert len(result.found) == 3
    drive_server.add_file("c.csv", ids["leads"], b"n\n1\n")
    drive_server.inject_fault("429", count=3, path_contains="/changes")
    later = _scanner(client, registry, ids["root"]).scan(result.state)
    assert [f.path for f in later.found.values()] == ["Leads/c.csv"]
    assert sum(drive_server.faults_served.values()) == 8


def test_a_rejected_token_falls_back_to_a_full_walk(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)
    drive_server.add_file("c.csv", ids["leads"], b"n\n1\n")
    drive_server.expire_tokens_before(drive_server.current_page_token())
    result = scanner.scan(state)
    assert any("walking the whole tree again" in line for line in result.log)
    # Only what changed since the last report: the walk is compared with the file index.
    assert {f.path for f in result.found.values()} == {"Leads/c.csv"}
    assert not result.state.walking and result.state.page_token != state.page_token


def test_tick_cost_grows_with_changes_not_with_the_tree(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    root = drive_server.add_folder("Inbox")
    folders = [drive_server.add_folder(f"d{i:03d}", root) for i in range(500)]
    files = [drive_server.add_file(f"f{i}.csv", folders[i % 500], b"n\n1\n") for i in range(10_000)]
    scanner = _scanner(client, registry, root, budget=600.0)
    state = scanner.scan(ScanState()).state
    for file_id in files[:10]:
        drive_server.update_content(file_id, b"n\n2\n")
    drive_server.reset_request_log()
    result = scanner.scan(state)
    calls = len(drive_server.request_log)
    pages = drive_server.request_count(path_contains="/changes")
    assert len(result.found) == 10
    assert calls <= 2 * 10 + pages
    assert calls == 1


def test_shortcuts_follow_their_targets_changes(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids, scanner, state = _walked(drive_server, client, registry)
    shortcut = drive_server.add_shortcut("link.csv", ids["leads"], ids["outside"])
    folder_link = drive_server.add_shortcut("folder link", ids["leads"], ids["other"])
    result = scanner.scan(state)
    assert [f.path for f in result.found.values()] == ["Leads/link.csv"]
    assert folder_link not in result.found  # folder shortcuts are not followed

    # The target, outside the tree, changes: the shortcut's content did.
    drive_server.update_content(ids["outside"], b"x\n2\n")
    result = scanner.scan(result.state)
    assert list(result.found) == [shortcut]
    # The target goes to the trash: nothing left to import, the shortcut counts as removed.
    drive_server.trash(ids["outside"])
    result = scanner.scan(result.state)
    assert (result.found, result.removed) == ({}, {shortcut: "Leads/link.csv"})


def test_spreadsheets_are_told_by_mime_type_first(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    ids = _tree(drive_server)
    drive_server.add_google_file("notes.csv", ids["leads"], "application/vnd.google-apps.document")
    drive_server.add_google_file("deck.txt", ids["leads"], "application/vnd.google-apps.presentation")
    result = _scanner(client, registry, ids["root"]).scan(ScanState())
    assert {f.path for f in result.found.values()} == {"Leads/a.csv", "Leads/2024/b.xlsx", "top.csv"}


@pytest.mark.parametrize("member", [True, False])
def test_shared_drives_are_followed_through_their_own_change_logs(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry, member: bool
) -> None:
    """A member's changes to a shared drive's files are in that drive's change log only; a
    service account that is no member (the folder shared with it) finds them in its own."""
    drive_server.shared_drive_members = member
    team = drive_server.add_folder("Team", drive_id="0ATeamDrive")
    leads = drive_server.add_folder("Leads", team)
    drive_server.add_file("a.csv", leads, b"n\n1\n")
    scanner = _scanner(client, registry, team)
    walked = scanner.scan(ScanState())
    assert [f.path for f in walked.found.values()] == ["Leads/a.csv"]

    new = drive_server.add_file("b.csv", leads, b"n\n2\n")
    drive_server.change_shared_drive("0ATeamDrive")  # changeType drive: no fileId
    drive_server.change_shared_drive("0AOtherDrive", removed=True)
    result = scanner.scan(walked.state)
    assert [f.file_id for f in result.found.values()] == [new]
    # One token per shared drive holding a root, where its log can be read.
    assert walked.state.drive_tokens == ({"0ATeamDrive": walked.state.page_token} if member else {})
    fields = {query["fields"] for _, path, query in drive_server.request_log if path.endswith("/changes")}
    assert all(
        "changeType" in selector and "driveId" in selector and "removed" in selector for selector in fields
    )


def test_an_incomplete_search_across_drives_is_done_again_within_the_drive(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    team = drive_server.add_folder("Team", drive_id="0ATeamDrive")
    drive_server.add_file("a.csv", team, b"n\n1\n")
    mine = drive_server.add_folder("Mine")
    drive_server.add_file("b.csv", mine, b"n\n2\n")
    drive_server.incomplete_all_drives_search = True
    result = DriveScanner(client, registry, [team, mine]).scan(ScanState())
    assert sorted(f.path for f in result.found.values()) == ["a.csv", "b.csv"]
    corpora = [query.get("corpora") for _, path, query in drive_server.request_log if path.endswith("/files")]
    assert "drive" in corpora


def test_a_sharing_change_is_no_change_for_sheets_and_stored_files(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    """Drive's version rises at every change, a sharing change included: the scanner
    follows content fingerprints (md5, a native Sheet's modifiedTime) instead."""
    ids, scanner, state = _walked(drive_server, client, registry)
    sheet = drive_server.add_google_sheet("Budget", ids["leads"], b"xlsx bytes")
    state = scanner.scan(state).state
    drive_server.share(sheet)
    drive_server.share(ids["a"])
    result = scanner.scan(state)
    assert (result.found, result.removed) == ({}, {})
    drive_server.update_content(sheet, b"other xlsx bytes")
    assert list(scanner.scan(result.state).found) == [sheet]


def test_a_tick_evaluated_again_reports_the_same(
    drive_server: DriveTestServer, client: DriveClient, registry: FolderRegistry
) -> None:
    """Dagster evaluates a tick again from the same cursor when it could not keep the first
    result: the changes are in the index by then, so the report must come from the registry."""
    ids, scanner, state = _walked(drive_server, client, registry)
    drive_server.rename(ids["leads"], "Prospects")
    drive_server.trash(ids["top"])
    first = scanner.scan(state)
    drive_server.reset_request_log()
    again = scanner.scan(state)
    assert (again.found, again.removed, again.state) == (first.found, first.removed, first.state)
    assert sorted(f.path for f in again.found.values()) == ["Prospects/2024/b.xlsx", "Prospects/a.csv"]
    assert drive_server.request_log == []
    # The next tick goes on from the new cursor.
    assert scanner.scan(first.state).found == {}


# PostgreSQL only: a DuckDB file has one writing process, so two scans at once cannot both write.
@pytest.mark.parametrize("warehouse_url", ["postgres"], indirect=True)
def test_a_tick_evaluated_again_while_the_first_still_scans_waits_and_reports_the_same(
    drive_server: DriveTestServer,
    client: DriveClient,
    registry: FolderRegistry,
    drive_credentials: Path,
    warehouse_url: str,
) -> None:
    """Dagster gives up on a tick at 60 s, but the code server evaluates it to its end; the
    next tick, from the same cursor, may start meanwhile. It waits for the first scan's
    transaction and reports what it reported, instead of walking beside it."""
    ids = _tree(drive_server)
    drive_server.slow_seconds = 2.0
    drive_server.inject_fault("slow", path_contains=ids["leads"])  # the walk's second listing
    first: list[ScanResult] = []

    def scan_first() -> None:
        other = DriveClient.connect(drive_credentials, api_endpoint=drive_server.api_endpoint, num_retries=4)
        with connect(warehouse_url) as warehouse:
            first.append(_scanner(other, FolderRegistry(warehouse), ids["root"]).scan(ScanState()))

    thread = threading.Thread(target=scan_first)
    thread.start()
    deadline = time.monotonic() + 30
    while not drive_server.faults_served["slow"]:
        assert time.monotonic() < deadline, "the first scan never reached its slow listing"
        time.sleep(0.02)
    again = _scanner(client, registry, ids["root"]).scan(ScanState())
    thread.join()
    assert "the same tick evaluated again: the same report" in again.log
    assert again.found == first[0].found and again.state == first[0].state
