"""``LocalFolderSource.changes``: change detection of local folders, in the engine alone (the
Dagster sensor over it is tested in defs/test_sensors.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import (
    Budget,
    FileRefusedError,
    LocalFolderSource,
    SourceState,
    SourceUnavailableError,
)
from pgdatahub_dagster.engine.warehouse import Warehouse

BUDGET = Budget(max_files=100, seconds=30.0)


class FilesReported(SourceState):
    """What the caller keeps: the files reported so far, as a sensor's partitions would."""

    def __init__(self, mapping: FolderMapping) -> None:
        self.known: set[str] = set()
        self.folder_mapping = mapping

    def known_file_ids(self) -> set[str]:
        return set(self.known)

    def warehouse(self) -> Warehouse:
        raise AssertionError("a local folder keeps nothing in the warehouse")

    def mapping(self) -> FolderMapping:
        return self.folder_mapping


def _tick(
    source: LocalFolderSource, state: FilesReported, cursor: str | None
) -> tuple[list[str], list[str], str]:
    """One tick, with the caller keeping what it reported; the found and removed file ids."""
    changes = source.changes(cursor, BUDGET)
    found = [file.file_id for file in changes.found]
    state.known = (state.known | set(found)) - set(changes.removed)
    return found, sorted(changes.removed), changes.cursor


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_changes_report_new_changed_and_removed_files_from_a_small_cursor(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "one.csv", "x\n1\n")
    _write(tmp_path / "two.csv", "x\n2\n")
    _write(tmp_path / ".hidden" / "three.csv", "x\n3\n")
    state = FilesReported(FolderMapping())
    source = LocalFolderSource(tmp_path, state, settle_seconds=0)

    found, removed, cursor = _tick(source, state, None)
    assert sorted(found) == ["a/one.csv", "two.csv"] and removed == []
    assert len(cursor) < 200 and json.loads(cursor)["changed_ns"] > 0
    assert _tick(source, state, cursor)[:2] == ([], [])

    _write(tmp_path / "two.csv", "x\n22\n")
    (tmp_path / "a" / "one.csv").unlink()
    found, removed, cursor = _tick(source, state, cursor)
    assert (found, removed) == (["two.csv"], ["a/one.csv"])
    assert _tick(source, state, cursor)[:2] == ([], [])


def test_a_tick_reports_at_most_its_budget_and_the_rest_on_the_next(tmp_path: Path) -> None:
    for index in range(5):
        _write(tmp_path / f"f{index}.csv", f"x\n{index}\n")
    state = FilesReported(FolderMapping())
    source = LocalFolderSource(tmp_path, state, settle_seconds=0)
    changes = source.changes(None, Budget(max_files=2, seconds=30.0))
    assert len(changes.found) == 2
    assert any("over 2 runs this tick" in line for line in changes.log)
    rest = source.changes(changes.cursor, BUDGET)
    assert sorted(file.file_id for file in [*changes.found, *rest.found]) == [f"f{i}.csv" for i in range(5)]


def test_a_file_still_being_written_waits_for_a_later_tick(tmp_path: Path) -> None:
    _write(tmp_path / "new.csv", "x\n1\n")
    state = FilesReported(FolderMapping())
    waiting = LocalFolderSource(tmp_path, state, settle_seconds=3600).changes(None, BUDGET)
    assert waiting.found == [] and any("still being written" in line for line in waiting.log)
    settled = LocalFolderSource(tmp_path, state, settle_seconds=0).changes(waiting.cursor, BUDGET)
    assert [file.file_id for file in settled.found] == ["new.csv"]


def test_an_edited_mapping_asks_for_one_full_sync(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "x\n1\n")
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text("a:\n  table: first\n")
    state = FilesReported(FolderMapping.load(mapping_file))
    source = LocalFolderSource(tmp_path, state, settle_seconds=0)
    first = source.changes(None, BUDGET)
    assert not first.full_sync  # every file is new on the first tick anyway
    assert not source.changes(first.cursor, BUDGET).full_sync
    mapping_file.write_text("a:\n  table: second\n")
    state.folder_mapping = FolderMapping.load(mapping_file)
    edited = source.changes(first.cursor, BUDGET)
    assert edited.full_sync and edited.found == []
    assert not source.changes(edited.cursor, BUDGET).full_sync


def test_a_missing_folder_is_unavailable_not_every_file_deleted(tmp_path: Path) -> None:
    _write(tmp_path / "inbox" / "a.csv", "x\n1\n")
    state = FilesReported(FolderMapping())
    source = LocalFolderSource(tmp_path / "inbox", state, settle_seconds=0)
    _, _, cursor = _tick(source, state, None)
    os.rename(tmp_path / "inbox", tmp_path / "elsewhere")
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        source.changes(cursor, BUDGET)


def test_the_walk_lists_the_folders_with_spreadsheets_in_order_skipping_hidden_and_linked_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "shared"
    _write(root / "top.csv", "x\n1\n")
    _write(root / "b" / "deep" / "one.xlsx.csv", "x\n1\n")
    _write(root / "b" / "two.csv", "x\n2\n")
    _write(root / "a" / "notes.pdf", "not a spreadsheet")
    _write(root / "a" / "inner" / "three.csv", "x\n3\n")
    _write(root / ".cache" / "four.csv", "x\n4\n")
    _write(tmp_path / "elsewhere" / "five.csv", "x\n5\n")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    source = LocalFolderSource(root)

    assert list(source.folders()) == [
        ("shared", ()),
        ("shared", ("a", "inner")),
        ("shared", ("b",)),
        ("shared", ("b", "deep")),
    ]
    assert sorted(file.file_id for file in source.list_files()) == [
        "a/inner/three.csv",
        "b/deep/one.xlsx.csv",
        "b/two.csv",
        "top.csv",
    ]


def test_get_file_gives_what_the_listing_reports_links_included_and_refuses_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _write(tmp_path / "elsewhere" / "a.csv", "x\n1\n")
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "a.csv").symlink_to(tmp_path / "elsewhere" / "a.csv")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _write(root / ".hidden" / "h.csv", "x\n1\n")
    source = LocalFolderSource(root)
    assert [file.file_id for file in source.list_files()] == ["shop/a.csv"]
    assert source.get_file("shop/a.csv").file_id == "shop/a.csv"
    for refused in (
        "../elsewhere/a.csv",
        "linked/a.csv",
        ".hidden/h.csv",
        "/etc/passwd",
        "shop/../shop/a.csv",
    ):
        with pytest.raises(FileRefusedError):
            source.get_file(refused)
    with pytest.raises(FileNotFoundError):
        source.get_file("shop/gone.csv")
