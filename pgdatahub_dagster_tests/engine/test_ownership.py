"""Rows that several files hold belong to all of them: editing, deleting, reverting or
touching one file changes only what a fresh import of the files would change. Against a
real DuckDB file and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from pgdatahub_dagster.engine.dedup.keys import LEGACY_ROW_KEY_VERSION, ROW_KEY_VERSION
from pgdatahub_dagster.engine.importer import Importer, ImportResult
from pgdatahub_dagster.engine.lifecycle import record_deletion
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.report import duplicate_keys, ledger_mismatches
from pgdatahub_dagster.engine.revert import revert
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import base as warehouse_base
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.engine.warehouse.base import ROW_KEY_VERSIONS_TABLE
from pgdatahub_dagster_tests.files import write_csv

# A file's modification time ranks it (prefer: newest); tests set it explicitly.
_T0 = 1_700_000_000


def _write(root: Path, name: str, ids: range | list[int], when: int, label: str = "v") -> None:
    path = write_csv(root / name, "id,label\n" + "".join(f"{i},{label}{i}\n" for i in ids))
    os.utime(path, (_T0 + when, _T0 + when))


class Sync:
    """Imports the tree with the engine, as the documented full sync does."""

    def __init__(self, url: str, root: Path, mapping: str) -> None:
        self.url, self.root, self.mapping = url, root, FolderMapping.parse(mapping)

    def run(self) -> dict[str, ImportResult]:
        with connect(self.url) as warehouse:
            importer = Importer(warehouse, LocalFolderSource(self.root), self.mapping)
            return {r.record.source_file: r for r in importer.import_all()}

    def delete(self, name: str) -> None:
        (self.root / name).unlink()
        with connect(self.url) as warehouse:
            record_deletion(warehouse, self.mapping, name, run_id=None)

    def rows(self, table: str = "crm") -> list[tuple[Any, ...]]:
        with connect(self.url) as warehouse:
            assert ledger_mismatches(warehouse) == {}
            assert duplicate_keys(warehouse) == {}
            return warehouse.fetchall(f"SELECT id, label, source_file FROM {table} ORDER BY id")


def _expected(*parts: tuple[range | list[int], str, str]) -> list[tuple[Any, ...]]:
    rows = {i: (i, f"{label}{i}", source) for ids, label, source in parts for i in ids}
    return [rows[i] for i in sorted(rows)]


KEYED = "crm:\n  unique_key: [id]\n  on_delete: retract\n"


def test_editing_one_file_keeps_the_rows_another_file_holds(warehouse_url: str, tmp_path: Path) -> None:
    """The issue's case: a holds 0-39, b 30-69; a is cut to 0-29; 30-39 stay (b holds them)."""
    sync = Sync(warehouse_url, tmp_path, "crm:\n  on_delete: retract\n")  # every column is the key
    _write(tmp_path, "crm/a.csv", range(40), 1)
    _write(tmp_path, "crm/b.csv", range(30, 70), 2)
    sync.run()
    _write(tmp_path, "crm/a.csv", range(30), 3)
    results = sync.run()
    assert results["crm/a.csv"].record.rows_deleted == 0  # b supplies 30-39
    assert sync.rows() == _expected((range(30), "v", "crm/a.csv"), (range(30, 70), "v", "crm/b.csv"))
    sync.delete("crm/b.csv")
    assert sync.rows() == _expected((range(30), "v", "crm/a.csv"))


def test_the_next_holder_takes_over_with_its_own_values(warehouse_url: str, tmp_path: Path) -> None:
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/old.csv", range(10), 1, "old")
    _write(tmp_path, "crm/new.csv", range(5, 15), 2, "new")
    sync.run()
    # prefer: newest: new.csv's values where both hold a key.
    assert sync.rows() == _expected((range(10), "old", "crm/old.csv"), (range(5, 15), "new", "crm/new.csv"))
    sync.delete("crm/new.csv")
    # old.csv's own values come back for 5-9, and its name in the lineage.
    assert sync.rows() == _expected((range(10), "old", "crm/old.csv"))


def test_a_newer_version_of_the_older_file_wins_its_keys_back(warehouse_url: str, tmp_path: Path) -> None:
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/a.csv", range(10), 1, "a")
    _write(tmp_path, "crm/b.csv", range(10), 2, "b")
    sync.run()
    assert sync.rows() == _expected((range(10), "b", "crm/b.csv"))
    _write(tmp_path, "crm/a.csv", range(8), 3, "a2-")  # now the newest
    sync.run()
    assert sync.rows() == _expected((range(10), "b", "crm/b.csv"), (range(8), "a2-", "crm/a.csv"))


def test_a_new_version_that_widens_a_column_brings_back_the_keys_it_gave_up(
    warehouse_url: str, tmp_path: Path
) -> None:
    """Found by the long model-based test on DuckDB: the old version's rows go first (key 5
    only it holds), a column widens (integer → decimal), then key 5 comes back. DuckDB
    counted the deleted row in an index rebuilt inside the transaction and refused it."""
    sync = Sync(warehouse_url, tmp_path, KEYED)
    write_csv(tmp_path / "crm/a.csv", "id,label\n0,a\n")
    write_csv(tmp_path / "crm/b.csv", "id,label,amount\n0,b,1\n5,b,1\n")
    os.utime(tmp_path / "crm/a.csv", (_T0 + 1, _T0 + 1))
    os.utime(tmp_path / "crm/b.csv", (_T0 + 2, _T0 + 2))
    sync.run()
    write_csv(tmp_path / "crm/b.csv", "id,label,amount\n3,b2,2.5\n0,b2,1\n5,b2,1\n")
    os.utime(tmp_path / "crm/b.csv", (_T0 + 3, _T0 + 3))
    assert sync.run()["crm/b.csv"].status == "success"
    assert sync.rows() == [(0, "b2", "crm/b.csv"), (3, "b2", "crm/b.csv"), (5, "b2", "crm/b.csv")]
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT id, amount FROM crm ORDER BY id") == [(0, 1.0), (3, 2.5), (5, 1.0)]


def test_a_new_version_that_adds_a_column_after_its_old_rows_left(warehouse_url: str, tmp_path: Path) -> None:
    """The old version's rows leave (a DELETE in the data table and in the holders table),
    then the new version adds a column to both: DuckDB 1.5 could not commit an ALTER TABLE
    of a table the same transaction had deleted rows from."""
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/a.csv", range(10), 1, "a")
    _write(tmp_path, "crm/b.csv", range(5, 15), 2, "b")
    sync.run()
    path = write_csv(
        tmp_path / "crm/a.csv", "id,label,extra\n" + "".join(f"{i},a2-{i},x\n" for i in range(3))
    )
    os.utime(path, (_T0 + 3, _T0 + 3))
    assert sync.run()["crm/a.csv"].status == "success"
    assert sync.rows() == _expected((range(3), "a2-", "crm/a.csv"), (range(5, 15), "b", "crm/b.csv"))
    with connect(warehouse_url) as warehouse:
        assert warehouse.fetchall("SELECT count(*), count(extra) FROM crm") == [(13, 3)]


def test_reverting_a_file_that_added_a_column_drops_it_from_the_holders_too(
    warehouse_url: str, tmp_path: Path
) -> None:
    """The revert releases the file's holders rows (a DELETE), then drops the column it
    added from the data table and the holders table."""
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/a.csv", range(6), 1, "a")
    path = write_csv(
        tmp_path / "crm/b.csv", "id,label,score\n" + "".join(f"{i},b{i},1.5\n" for i in range(4))
    )
    os.utime(path, (_T0 + 2, _T0 + 2))
    sync.run()
    with connect(warehouse_url) as warehouse:
        report = revert(warehouse, mapping=sync.mapping, selector="file", value="crm/b.csv", schema=True)
        assert [(undo.column_name, undo.done) for undo in report.schema] == [("score", True)]
        assert "score" not in warehouse.column_names("crm")
        assert "score" not in warehouse.column_names("crm", "pgdatahub_holders")
    assert sync.rows() == _expected((range(6), "a", "crm/a.csv"))


def test_touching_a_file_ranks_it_anew_without_reading_it(warehouse_url: str, tmp_path: Path) -> None:
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/a.csv", range(5), 1, "a")
    _write(tmp_path, "crm/b.csv", range(5), 2, "b")
    sync.run()
    os.utime(tmp_path / "crm/a.csv", (_T0 + 3, _T0 + 3))  # same bytes, newer
    results = sync.run()
    assert results["crm/a.csv"].status == "skipped"
    assert sync.rows() == _expected((range(5), "a", "crm/a.csv"))


def test_kept_rows_rank_below_every_live_file(warehouse_url: str, tmp_path: Path) -> None:
    sync = Sync(warehouse_url, tmp_path, "crm:\n  unique_key: [id]\n  on_delete: keep\n")
    _write(tmp_path, "crm/a.csv", range(6), 1, "a")
    _write(tmp_path, "crm/b.csv", range(3), 2, "b")
    sync.run()
    sync.delete("crm/b.csv")  # kept: but a is live and holds 0-2 too
    assert sync.rows() == _expected((range(6), "a", "crm/a.csv"))
    sync.delete("crm/a.csv")  # both kept: b is the newer of the two
    assert sync.rows() == _expected((range(6), "a", "crm/a.csv"), (range(3), "b", "crm/b.csv"))
    _write(tmp_path, "crm/b.csv", range(3), 2, "b")  # restored, same bytes and time
    assert sync.run()["crm/b.csv"].status == "skipped"
    assert sync.rows() == _expected((range(6), "a", "crm/a.csv"), (range(3), "b", "crm/b.csv"))


def test_revert_gives_up_only_the_rows_nobody_else_holds(warehouse_url: str, tmp_path: Path) -> None:
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/a.csv", range(6), 1, "a")
    _write(tmp_path, "crm/b.csv", range(4, 8), 2, "b")
    sync.run()
    with connect(warehouse_url) as warehouse:
        dry = revert(warehouse, mapping=sync.mapping, selector="file", value="crm/b.csv", dry_run=True)
        assert dry.rows_deleted == 2  # 6 and 7; a still holds 4 and 5
        assert warehouse.count("crm") == 8
        done = revert(warehouse, mapping=sync.mapping, selector="file", value="crm/b.csv")
        assert done.rows_deleted == 2
    assert sync.rows() == _expected((range(6), "a", "crm/a.csv"))


def test_a_file_moved_to_another_table_leaves_the_old_one(warehouse_url: str, tmp_path: Path) -> None:
    """A Drive file keeps its id when its folder changes; locally a re-mapped folder does it."""
    _write(tmp_path, "crm/a.csv", range(3), 1, "a")
    Sync(warehouse_url, tmp_path, KEYED).run()
    moved = Sync(warehouse_url, tmp_path, KEYED.replace("crm:", "crm:\n  table: clients"))
    assert moved.run()["crm/a.csv"].record.rows_deleted == 3
    with connect(warehouse_url) as warehouse:
        assert warehouse.count("crm") == 0
    assert moved.rows("clients") == _expected((range(3), "a", "crm/a.csv"))


def test_the_bytes_hashed_are_the_bytes_loaded(warehouse_url: str, tmp_path: Path) -> None:
    """A file saved every millisecond (as editors save: a new file renamed over the old),
    alternating between two versions of different shapes. After every import, the table
    holds exactly the version whose sha256 the ledger names; an import caught mid-save
    fails saying so, and the next one goes on."""
    texts = [
        "id,label\n" + "".join(f"{i},short{i}\n" for i in range(2_000)),
        "id,label,extra\n" + "".join(f"{i},long{i},x\n" for i in range(3_000)),
    ]
    by_sha = {hashlib.sha256(text.encode()).hexdigest(): text for text in texts}
    path = tmp_path / "crm" / "busy.csv"
    write_csv(path, texts[0])
    stop = threading.Event()

    def editor() -> None:
        while not stop.is_set():
            for number, text in enumerate(texts):
                staged = path.with_name(f".busy-{number}.tmp")
                staged.write_text(text)
                os.replace(staged, path)
                time.sleep(0.001)

    thread = threading.Thread(target=editor, daemon=True)
    thread.start()
    statuses = []
    try:
        with connect(warehouse_url) as warehouse:
            mapping = FolderMapping.parse("crm:\n  unique_key: none\n")
            importer = Importer(warehouse, LocalFolderSource(tmp_path), mapping)
            for _ in range(20):
                result = importer.import_file(importer.source.get_file("crm/busy.csv"))
                statuses.append(result.status)
                if result.failed:
                    assert result.record.error == (
                        "crm/busy.csv: the file changed while it was being read; "
                        "it is imported at its next change"
                    )
                live = warehouse.fetchall("SELECT file_sha256 FROM etl_imports WHERE status = 'success'")
                if not live:  # every import so far was caught mid-save: nothing is loaded
                    assert not warehouse.table_exists("crm") or warehouse.count("crm") == 0
                    continue
                [(sha,)] = live
                text = by_sha[sha]
                label = "long" if "extra" in text.split("\n", 1)[0] else "short"
                rows = text.count("\n") - 1
                assert warehouse.fetchall(
                    f"SELECT count(*), count(CASE WHEN label LIKE '{label}%' THEN 1 END) FROM crm"
                ) == [(rows, rows)]
    finally:
        stop.set()
        thread.join()
    assert "success" in statuses


def _fresh_rows(url: str, root: Path, mapping: str) -> list[tuple[Any, ...]]:
    """What a from-scratch import of ``root`` under ``mapping`` gives, into ``url``."""
    fresh = Sync(url, root, mapping)
    fresh.run()
    return fresh.rows()


def test_a_changed_prefer_decides_the_shared_keys_again(
    warehouse_url: str, tmp_path: Path, new_warehouse: Any
) -> None:
    root = tmp_path / "tree"
    sync = Sync(warehouse_url, root, KEYED)
    _write(root, "crm/a.csv", range(6), 1, "a")
    _write(root, "crm/b.csv", range(3, 9), 2, "b")
    sync.run()
    assert sync.rows() == _expected((range(6), "a", "crm/a.csv"), (range(3, 9), "b", "crm/b.csv"))
    oldest = KEYED + "  prefer: oldest\n"
    sync.mapping = FolderMapping.parse(oldest)
    results = sync.run()  # nothing changed in the tree: both files are skipped
    assert {r.status for r in results.values()} == {"skipped"}
    assert sync.rows() == _expected((range(3, 9), "b", "crm/b.csv"), (range(6), "a", "crm/a.csv"))
    assert sync.rows() == _fresh_rows(new_warehouse("fresh"), root, oldest)


def test_a_changed_unique_key_reads_the_files_again(
    warehouse_url: str, tmp_path: Path, new_warehouse: Any
) -> None:
    root = tmp_path / "tree"
    sync = Sync(warehouse_url, root, "crm:\n  on_delete: retract\n")
    write_csv(root / "crm/a.csv", "id,label\n1,x\n1,y\n2,z\n")
    sync.run()
    assert len(sync.rows()) == 3  # every column is the key
    by_id = "crm:\n  unique_key: [id]\n  on_delete: retract\n"
    sync.mapping = FolderMapping.parse(by_id)
    [result] = sync.run().values()
    assert (result.status, result.record.rows_inserted, result.record.rows_duplicate) == ("success", 2, 1)
    assert sync.rows() == [(1, "x", "crm/a.csv"), (2, "z", "crm/a.csv")]
    assert sync.rows() == _fresh_rows(new_warehouse("fresh"), root, by_id)
    assert {r.status for r in sync.run().values()} == {"skipped"}  # and only once


def test_imports_recorded_before_the_settings_were_are_taken_as_read_under_todays(
    warehouse_url: str, tmp_path: Path
) -> None:
    sync = Sync(warehouse_url, tmp_path, KEYED)
    _write(tmp_path, "crm/a.csv", range(3), 1)
    sync.run()
    with connect(warehouse_url) as warehouse, warehouse.transaction():
        warehouse.execute("UPDATE etl_imports SET read_as = NULL")
    assert sync.run()["crm/a.csv"].status == "skipped"
    with connect(warehouse_url) as warehouse:
        stamped = warehouse.fetchall("SELECT read_as FROM etl_imports WHERE status = 'success'")
    assert stamped == [(FolderMapping.parse(KEYED).settings_for(("crm",), "root").read_as(),)]


def test_a_warehouse_with_keys_made_before_key_versions_syncs_like_a_fresh_import(
    warehouse_url: str, tmp_path: Path, new_warehouse: Any, monkeypatch: Any
) -> None:
    """A warehouse written by the engine before row keys were versioned (BLAKE2b keys, no
    record of their version) keeps making its tables' keys that way, so its old and new rows
    compare; a table created after the upgrade gets today's keys."""
    root = tmp_path / "tree"
    sync = Sync(warehouse_url, root, KEYED)
    _write(root, "crm/a.csv", range(6), 1, "a")
    _write(root, "crm/b.csv", range(3, 9), 2, "b")
    monkeypatch.setattr(warehouse_base, "ROW_KEY_VERSION", LEGACY_ROW_KEY_VERSION)
    sync.run()
    with connect(warehouse_url) as warehouse, warehouse.transaction():
        warehouse.execute(f"DROP TABLE {ROW_KEY_VERSIONS_TABLE}")  # the old engine had none
    monkeypatch.undo()

    # With today's engine: an edit, a newer file sharing keys, a deletion, and a new table.
    _write(root, "crm/b.csv", range(4, 12), 3, "b2")
    _write(root, "crm/c.csv", range(10, 14), 4, "c")
    sync.delete("crm/a.csv")
    write_csv(root / "leads/x.csv", "id,label\n1,v1\n1,V1\n")
    sync.run()
    expected = _expected((range(4, 12), "b2", "crm/b.csv"), (range(10, 14), "c", "crm/c.csv"))
    assert sync.rows() == expected
    assert sync.rows() == _fresh_rows(new_warehouse("fresh"), root, KEYED)
    by_id = {str(i): hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(14)}
    with connect(warehouse_url) as warehouse:
        crm = warehouse.fetchall("SELECT CAST(id AS TEXT), CAST(_row_key AS TEXT) FROM crm")
        leads = warehouse.fetchall("SELECT CAST(_row_key AS TEXT) FROM leads")
        versions = warehouse.fetchall(f"SELECT table_name, version FROM {ROW_KEY_VERSIONS_TABLE}")
    assert {str(key).replace("-", "") for _, key in crm} == {by_id[str(i)] for i, _ in crm}
    assert [str(key).replace("-", "") for (key,) in leads] == [
        hashlib.sha256(b"id=1\x1flabel=v1").hexdigest()[:32]
    ]
    assert versions == [("leads", ROW_KEY_VERSION)]
