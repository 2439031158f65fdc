"""Exact sync, model-based: after any sequence of file operations in the source folder and
syncs, every warehouse table equals what a from-scratch import of the files as they are now
gives into an empty warehouse.

A Hypothesis state machine adds, edits, deletes, renames, moves, copies, restores, touches,
breaks and fixes small CSV files in a folder tree, and syncs in the ways the product offers:
a sensor tick whose runs the test launches the way the daemon would (run-key rule included,
runs in any order), the documented ``local_folder_sync`` asset, and a retried run (at-least-
once delivery). After every sync the warehouse is compared with a fresh import of the
current tree by the engine alone (``pgdatahub_dagster_tests/exact_sync.py``).

What the model must know of the product (README, "What happens to a file" and "Changed and
deleted files"), and how the oracle follows it:

- the value rule (``prefer: newest``) is applied by a fresh import too, so the oracle is the
  fresh import of the files with their modification times kept;
- a file whose current version fails keeps its last imported version's rows: the oracle tree
  holds that version, with its modification time, instead;
- rows of files deleted from an ``on_delete: keep`` folder stay where no live file holds
  their key: a second fresh import, of those files at their last imported version, supplies
  them (``exact_sync.merge_kept``).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import pytest
from dagster import DagsterInstance, DagsterUnknownPartitionError, Definitions
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pgdatahub_dagster.definitions import build_defs
from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
from pgdatahub_dagster.defs.sources.drive import DriveResource
from pgdatahub_dagster.defs.sources.local import LocalFolderResource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.exact_sync import (
    SensorDaemon,
    Table,
    assert_ledger_consistent,
    assert_tables_equal,
    column_types,
    compare_tables,
    describe_request,
    failure_report,
    fresh_tables,
    import_tree,
    machine_settings,
    materialize,
    merge_kept,
    place_file,
)
from pgdatahub_dagster_tests.files import write_csv

# -- the folder tree -------------------------------------------------------------------------


#: crm keys rows by id only, so files can disagree on the other columns; crm/eu inherits that
#: (table crm_eu by default); shop keys by every column (the default); archive keeps the rows
#: of deleted files. Folders that share a table must agree on settings, so archive has its own.
def mapping_text(crm_prefer: str = "newest") -> str:
    """The folder mapping, with crm's ``prefer`` (the model may change it)."""
    return f"""\
crm:
  unique_key: [id]
  on_delete: retract
  prefer: {crm_prefer}
shop:
  on_delete: retract
archive:
  table: crm_archive
  unique_key: [id]
  on_delete: keep
"""


FOLDERS = ("crm", "crm/eu", "shop", "archive")
KEYED_BY_ID = frozenset({"crm", "crm/eu", "archive"})
KEEP_FOLDERS = frozenset({"archive"})
#: Few names, so paths are often reused after a delete, rename or move.
FILE_NAMES = ("a.csv", "b.csv", "c.csv")
#: Every example starts from a file in each folder and two that share a table, synced once,
#: so even short examples change a tree whose files overlap.
SEED_PATHS = ("crm/a.csv", "crm/b.csv", "crm/eu/a.csv", "shop/a.csv", "archive/a.csv")
#: Modification times come from a model clock, one second per operation, so the value rule's
#: ranking is deterministic. It starts in the past: the sensor waits for files "still being
#: written", judged by the later of change and modification time.
CLOCK_START_NS = 1_700_000_000 * 10**9
SENSOR = "local_folder_sensor"
FOLDER_SYNC = "local_folder_sync"


def folder_of(path: str) -> str:
    return str(PurePosixPath(path).parent)


@dataclass(frozen=True)
class Content:
    """A small CSV file: a header and rows of cells ("" is a blank cell)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def render(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue().encode()

    def good_in(self, folder: str) -> bool:
        """Whether it imports: folders keyed by id fail a file without an id column."""
        return folder not in KEYED_BY_ID or "id" in self.header

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.header, row, strict=True)) for row in self.rows]

    def summary(self) -> str:
        return f"[{','.join(self.header)}: {'; '.join(','.join(row) for row in self.rows)}]"


@dataclass(frozen=True)
class Version:
    """One version of a file: its content and modification time."""

    content: Content
    mtime_ns: int


IDS = st.integers(0, 7).map(str)
#: Case and whitespace variants: one business in the key (trimmed, case-folded), different
#: stored values, and different bytes (so different file versions).
NAMES = st.sampled_from(("Acme", "acme ", "ACME", "Blue", " blue", "Corner"))
#: Most files hold whole numbers; some force widening (to DOUBLE, to TEXT) or leave blanks.
AMOUNTS = {
    "whole": ("1", "2", "3"),
    "blanks": ("1", "2", ""),
    "decimal": ("1", "2.5"),
    "text": ("1", "n/a"),
}
GOOD_HEADERS = (("id", "name", "amount"), ("amount", "id", "name"), ("id", "name"))
BAD_HEADER = ("name", "amount")  # no id: fails in the folders keyed by id


@st.composite
def contents(draw: st.DrawFn, header: tuple[str, ...] | None = None) -> Content:
    chosen = header or draw(st.sampled_from(GOOD_HEADERS))
    amounts = AMOUNTS[draw(st.sampled_from(("whole", "whole", "blanks", "decimal", "text")))]
    rows = draw(st.lists(st.tuples(IDS, NAMES, st.sampled_from(amounts)), min_size=1, max_size=5))
    cells = [{"id": id_, "name": name, "amount": amount} for id_, name, amount in rows]
    return Content(chosen, tuple(tuple(cell[column] for column in chosen) for cell in cells))


# -- the state machine -----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What the machine gets from the test: fresh warehouses, and a scratch folder."""

    new_warehouse: Callable[[str], str]
    scratch: Path
    #: Also check that a fresh import does not depend on the order files are listed in:
    #: the synced warehouse met them in another order, so exact sync needs it.
    check_order: bool = True


@dataclass
class Expected:
    """Fresh imports of what the synced warehouse must hold (see ``exact_sync.merge_kept``)."""

    live_root: Path
    live_url: str
    kept_url: str | None
    #: Set when importing the live files in reverse order gives other tables.
    order_problem: str | None = None


def _defs(root: Path, url: str) -> Definitions:
    # Fixtures are per test, not per example: every example configures its own resources.
    return build_defs(
        {
            "warehouse": WarehouseResource(database_url=url),
            "folder_mapping": FolderMappingResource(config_path=str(root / "pgdatahub.yaml")),
            "local_folder": LocalFolderResource(source_dir=str(root)),
            "drive": DriveResource(),
        }
    )


class ExactSyncMachine(RuleBasedStateMachine):
    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=self.world.scratch))
        self.root = self.dir / "inbox"
        self.root.mkdir()
        self.mapping = mapping_text()
        (self.root / "pgdatahub.yaml").write_text(self.mapping)
        self.url = self.world.new_warehouse("synced")
        # An in-memory instance: a real DagsterInstance (runs, event log, dynamic partitions)
        # whose runs cost a third of a SQLite one's, which decides how many examples fit.
        self.instance = DagsterInstance.ephemeral()
        self.defs = _defs(self.root, self.url)
        self.daemon = SensorDaemon(self.defs, self.instance, SENSOR)
        #: The files as they are now.
        self.files: dict[str, Version] = {}
        #: Every version a path has had, for restores.
        self.versions: dict[str, list[Version]] = {}
        #: Per path, the last version a sync saw that imports: what the warehouse must show
        #: for it. A file gone from a keep folder stays here (its rows are kept).
        self.imported: dict[str, Version] = {}
        self.clock = CLOCK_START_NS
        self.steps: list[str] = []
        #: Whether a sync ran since the last check.
        self.check_due = False
        #: Whether a file changed since the last sync.
        self.tree_changed = False
        self.fresh_imports = itertools.count(1)
        #: The last fresh imports, and the state of the model they were built from.
        self.last_expected: tuple[object, Expected] | None = None

    def teardown(self) -> None:
        self.instance.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------

    def _now(self) -> int:
        self.clock += 10**9
        return self.clock

    def _t(self, mtime_ns: int) -> str:
        return f"t{(mtime_ns - CLOCK_START_NS) // 10**9}"

    def _set(self, path: str, version: Version) -> None:
        self.files[path] = version
        self.versions.setdefault(path, []).append(version)

    def _write(self, path: str, content: Content, mtime_ns: int) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.render())
        os.utime(target, ns=(mtime_ns, mtime_ns))
        self._set(path, Version(content, mtime_ns))

    def _paths(self) -> list[str]:
        return sorted(self.files)

    def _free_paths(self, folders: tuple[str, ...] = FOLDERS) -> list[str]:
        return [f"{f}/{n}" for f in folders for n in FILE_NAMES if f"{f}/{n}" not in self.files]

    def _bad_paths(self) -> list[str]:
        return [path for path in self._paths() if not self.files[path].content.good_in(folder_of(path))]

    def _restorable(self) -> list[str]:
        return [
            path
            for path, versions in sorted(self.versions.items())
            if any(path not in self.files or v.content != self.files[path].content for v in versions)
        ]

    def _overlap_rows(self) -> list[dict[str, str]]:
        return [
            record
            for path in self._paths()
            if "id" in self.files[path].content.header
            for record in self.files[path].content.records()
        ]

    def _note(self, step: str) -> None:
        self.steps.append(step)
        self.tree_changed = True

    # -- file operations ---------------------------------------------------------------------

    @initialize(
        seed=st.lists(contents(), min_size=len(SEED_PATHS), max_size=len(SEED_PATHS)),
        how=st.sampled_from((SENSOR, FOLDER_SYNC)),
        data=st.data(),
    )
    def seed_tree(self, seed: list[Content], how: str, data: st.DataObject) -> None:
        for path, content in zip(SEED_PATHS, seed, strict=True):
            mtime = self._now()
            self._write(path, content, mtime)
            self._note(f"add {path} {content.summary()} at {self._t(mtime)}")
        self._synced(self.daemon.sync_in_any_order(data) if how == SENSOR else self._folder_sync())

    @precondition(lambda self: self._free_paths())
    @rule(data=st.data(), content=contents())
    def add_file(self, data: st.DataObject, content: Content) -> None:
        path = data.draw(st.sampled_from(self._free_paths()), label="path")
        mtime = self._now()
        self._write(path, content, mtime)
        self._note(f"add {path} {content.summary()} at {self._t(mtime)}")

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=contents())
    def edit_file(self, data: st.DataObject, content: Content) -> None:
        path = data.draw(st.sampled_from(self._paths()), label="path")
        mtime = self._now()
        self._write(path, content, mtime)
        self._note(f"edit {path} → {content.summary()} at {self._t(mtime)}")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete_file(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(self._paths()), label="path")
        (self.root / path).unlink()
        del self.files[path]
        self._note(f"delete {path}")

    def _move(self, source: str, target: str, verb: str) -> None:
        (self.root / target).parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.root / source, self.root / target)  # like mv: the modification time stays
        self._set(target, self.files.pop(source))
        self._note(f"{verb} {source} → {target}")

    @precondition(lambda self: any(self._free_paths((folder_of(path),)) for path in self.files))
    @rule(data=st.data())
    def rename_file(self, data: st.DataObject) -> None:
        movable = [path for path in self._paths() if self._free_paths((folder_of(path),))]
        source = data.draw(st.sampled_from(movable), label="source")
        target = data.draw(st.sampled_from(self._free_paths((folder_of(source),))), label="target")
        self._move(source, target, "rename")

    def _free_elsewhere(self, path: str) -> list[str]:
        return self._free_paths(tuple(folder for folder in FOLDERS if folder != folder_of(path)))

    @precondition(lambda self: any(self._free_elsewhere(path) for path in self.files))
    @rule(data=st.data())
    def move_file(self, data: st.DataObject) -> None:
        """To another folder, so another table (and maybe other settings)."""
        movable = [path for path in self._paths() if self._free_elsewhere(path)]
        source = data.draw(st.sampled_from(movable), label="source")
        target = data.draw(st.sampled_from(self._free_elsewhere(source)), label="target")
        self._move(source, target, "move")

    @precondition(lambda self: self.files and self._free_paths())
    @rule(data=st.data(), keep_mtime=st.booleans())
    def copy_file(self, data: st.DataObject, keep_mtime: bool) -> None:
        source = data.draw(st.sampled_from(self._paths()), label="source")
        target = data.draw(st.sampled_from(self._free_paths()), label="target")
        version = self.files[source]
        # cp gives the copy a new modification time, cp -p keeps it.
        mtime = version.mtime_ns if keep_mtime else self._now()
        self._write(target, version.content, mtime)
        self._note(f"copy {source} → {target} at {self._t(mtime)}{' (cp -p)' if keep_mtime else ''}")

    @precondition(lambda self: self._restorable())
    @rule(data=st.data(), keep_mtime=st.booleans())
    def restore_file(self, data: st.DataObject, keep_mtime: bool) -> None:
        """Bring back an earlier version of a file (also of a deleted one), from a backup:
        with its old modification time (rsync -a, cp -p) or a new one."""
        path = data.draw(st.sampled_from(self._restorable()), label="path")
        current = self.files.get(path)
        earlier = [v for v in self.versions[path] if current is None or v.content != current.content]
        version = data.draw(st.sampled_from(earlier), label="version")
        mtime = version.mtime_ns if keep_mtime else self._now()
        self._write(path, version.content, mtime)
        how = "with its old modification time" if keep_mtime else "as a new write"
        self._note(f"restore {path} to {version.content.summary()} at {self._t(mtime)}, {how}")

    @rule(
        folder=st.sampled_from(sorted(KEYED_BY_ID)),
        name=st.sampled_from(FILE_NAMES),
        content=contents(header=BAD_HEADER),
    )
    def write_bad_file(self, folder: str, name: str, content: Content) -> None:
        """A file without the key column: it fails alone (a new file, or a new version of an
        existing one, whose earlier rows must then stay)."""
        path = f"{folder}/{name}"
        mtime = self._now()
        existed = path in self.files
        self._write(path, content, mtime)
        self._note(f"{'break' if existed else 'add bad'} {path} {content.summary()} at {self._t(mtime)}")

    @precondition(lambda self: self._bad_paths())
    @rule(data=st.data(), content=contents())
    def fix_bad_file(self, data: st.DataObject, content: Content) -> None:
        path = data.draw(st.sampled_from(self._bad_paths()), label="path")
        mtime = self._now()
        self._write(path, content, mtime)
        self._note(f"fix {path} → {content.summary()} at {self._t(mtime)}")

    @precondition(lambda self: self._overlap_rows() and self._free_paths())
    @rule(data=st.data(), variant=st.sampled_from(("same", "upper", "amount")))
    def add_overlapping_file(self, data: st.DataObject, variant: str) -> None:
        """A file that holds the rows of all others (same keys; the same values, or other
        values for the same keys)."""
        path = data.draw(st.sampled_from(self._free_paths()), label="path")
        header = ("id", "name", "amount")
        rows = []
        for record in self._overlap_rows()[:40]:
            row = {column: record.get(column, "") for column in header}
            if variant == "upper":
                row["name"] = row["name"].upper()
            elif variant == "amount":
                row["amount"] = "9"
            rows.append(tuple(row[column] for column in header))
        content = Content(header, tuple(rows))
        mtime = self._now()
        self._write(path, content, mtime)
        self._note(f"add overlapping ({variant}) {path} {content.summary()} at {self._t(mtime)}")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def touch_file(self, data: st.DataObject) -> None:
        """Same bytes, new modification time: it may now be the newest file of its rows."""
        path = data.draw(st.sampled_from(self._paths()), label="path")
        mtime = self._now()
        os.utime(self.root / path, ns=(mtime, mtime))
        self._set(path, Version(self.files[path].content, mtime))
        self._note(f"touch {path} at {self._t(mtime)}")

    @rule(prefer=st.sampled_from(("newest", "oldest")))
    def change_crm_prefer(self, prefer: str) -> None:
        """The mapping is edited: whose values the rows crm's files share show may change."""
        self.mapping = mapping_text(prefer)
        (self.root / "pgdatahub.yaml").write_text(self.mapping)
        self._note(f"mapping: crm prefer: {prefer}")

    # -- syncs -------------------------------------------------------------------------------

    def _folder_sync(self) -> str:
        ok = materialize(self.defs, self.instance, FOLDER_SYNC)
        return f"materialize {FOLDER_SYNC}: {'success' if ok else 'run failed'}"

    def _synced(self, step: str) -> None:
        """After a sync the warehouse must show every file as it is now (its last importable
        version, for a file whose current one fails); files gone from retract folders show
        nothing, files gone from keep folders their last imported version."""
        self._note(f"SYNC: {step}")
        for path, version in self.files.items():
            if version.content.good_in(folder_of(path)):
                self.imported[path] = version
        for path in list(self.imported):
            if path not in self.files and folder_of(path) not in KEEP_FOLDERS:
                del self.imported[path]
        self.check_due = True
        self.tree_changed = False

    @rule(data=st.data())
    def sync_by_sensor(self, data: st.DataObject) -> None:
        self._synced(self.daemon.sync_in_any_order(data))

    @rule(times=st.integers(1, 2))
    def sync_by_folder_sync(self, times: int) -> None:
        """The documented command, once or twice in a row (the second run must change nothing)."""
        self._synced("; then ".join(self._folder_sync() for _ in range(times)))

    @precondition(lambda self: self.daemon.launched)
    @rule(data=st.data(), then=st.sampled_from(("sensor", "folder_sync")))
    def retry_a_run_then_sync(self, data: st.DataObject, then: str) -> None:
        """A run delivered again, maybe long after it first ran (a run retry, a re-execution
        from the UI): at-least-once delivery must do no harm."""
        index = data.draw(st.integers(0, len(self.daemon.launched) - 1), label="retried run")
        request = self.daemon.launched[index]
        try:
            outcome = "success" if self.daemon.launch(request, retry=True) else "run failed"
        except DagsterUnknownPartitionError:
            outcome = "not started: its partition is gone"
        retried = f"retry {describe_request(request)}: {outcome}"
        if not self.tree_changed:
            # Nothing changed since the last sync, so the retry alone must leave the
            # warehouse exact (the sync that follows could repair harm done).
            self._synced(retried)
            self.warehouse_matches_a_fresh_import()
            retried = ""
        follow = self.daemon.sync_in_any_order(data) if then == "sensor" else self._folder_sync()
        self._synced(f"{retried}; then {follow}" if retried else follow)

    # -- the invariant -----------------------------------------------------------------------

    @invariant()
    def warehouse_matches_a_fresh_import(self) -> None:
        # Checked after every step that can change the warehouse: file operations cannot
        # (the warehouse lags them until a sync), so only syncs count.
        if self.check_due:
            self.check_due = False
            assert_ledger_consistent(self.url, self.steps)
            self._compare_with_fresh_import()

    def _fresh_import(self, label: str, root: Path, *, reverse: bool = False) -> str:
        url = self.world.new_warehouse(label)
        results = import_tree(url, root, reverse=reverse)
        # The oracle tree holds only versions that import; a failure here is the engine's
        # (or the model's), and would silently drop rows from the expected side.
        failed = [str(result.record.error) for result in results if result.failed]
        assert not failed, failure_report(
            f"a fresh import of {root} failed", failed, self.steps, {label: url}
        )
        if label == "fresh":  # the engine's own checks on a fresh import, once per tree
            assert_ledger_consistent(url, self.steps, label="a fresh import")
        return url

    def _expected(self) -> Expected:
        """Fresh imports of what the warehouse must show now: the live files (each at its
        last importable version), and the files gone from keep folders. A sync that followed
        no file operation reuses the previous ones."""
        state = (tuple(sorted(self.files.items())), tuple(sorted(self.imported.items())), self.mapping)
        if self.last_expected is not None and self.last_expected[0] == state:
            return self.last_expected[1]
        number = next(self.fresh_imports)
        live_root = self.dir / f"fresh-{number}" / "live"
        kept_root = self.dir / f"fresh-{number}" / "kept"
        for root in (live_root, kept_root):
            root.mkdir(parents=True)
            (root / "pgdatahub.yaml").write_text(self.mapping)
        for path, version in sorted(self.files.items()):
            if version.content.good_in(folder_of(path)):
                place_file(live_root, path, copy_of=self.root / path, mtime_ns=version.mtime_ns)
            elif path in self.imported:  # its current version fails: the last imported one stands
                last = self.imported[path]
                place_file(live_root, path, data=last.content.render(), mtime_ns=last.mtime_ns)
        kept = {path: version for path, version in self.imported.items() if path not in self.files}
        for path, version in sorted(kept.items()):
            place_file(kept_root, path, data=version.content.render(), mtime_ns=version.mtime_ns)
        expected = Expected(
            live_root,
            self._fresh_import("fresh", live_root),
            self._fresh_import("kept", kept_root) if kept else None,
        )
        if self.world.check_order:
            reverse_url = self._fresh_import("reverse", live_root, reverse=True)
            problems = compare_tables(fresh_tables(reverse_url), fresh_tables(expected.live_url))
            if problems:
                expected.order_problem = failure_report(
                    "a fresh import depends on the order files are listed in: importing them in reverse "
                    "order (below: 'the synced warehouse') differs from importing them in order "
                    "(below: 'a fresh import')",
                    problems,
                    self.steps,
                    {"the import in order": expected.live_url, "the import in reverse order": reverse_url},
                )
        self.last_expected = (state, expected)
        return expected

    def _compare_with_fresh_import(self) -> None:
        expected = self._expected()
        messages = []
        try:
            assert_tables_equal(self.url, expected.live_url, kept_url=expected.kept_url, history=self.steps)
        except AssertionError as error:
            messages.append(str(error))
        if expected.order_problem:
            messages.append(expected.order_problem)
        if messages:
            raise AssertionError("\n\n".join(messages))


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _sensor_does_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGDATAHUB_SENSOR_SETTLE_SECONDS", "0")
    # A tick of more than three files becomes a backfill of runs of two files, so the
    # examples take both paths: a run per file, and a backfill split into multi-file runs.
    monkeypatch.setenv("PGDATAHUB_SENSOR_MAX_RUNS", "3")
    monkeypatch.setenv("PGDATAHUB_FILES_PER_RUN", "2")


def _run(new_warehouse: Callable[[str], str], tmp_path: Path, run_settings: settings) -> None:
    world = World(new_warehouse, tmp_path)
    machine = type("ExactSync", (ExactSyncMachine,), {"world": world})
    run_state_machine_as_test(machine, settings=run_settings)


def test_exact_sync(new_warehouse: Callable[[str], str], tmp_path: Path) -> None:
    """The CI size: about 25 s per warehouse on 2 idle cores (up to three times that on a busy
    machine). No shrinking: each example takes seconds and shrinking could take minutes; the
    failing steps are listed in the message anyway."""
    _run(new_warehouse, tmp_path, machine_settings(6, 12, shrink=False))


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_exact_sync_long(new_warehouse: Callable[[str], str], tmp_path: Path) -> None:
    """More and longer examples, and failures shrunk to a minimal sequence of steps (at
    most 5 more minutes): ``pytest -m long pgdatahub_dagster_tests/defs/test_exact_sync.py``."""
    _run(new_warehouse, tmp_path, machine_settings(30, 25, shrink=True))


# -- fixed scenarios ---------------------------------------------------------------------------


def _rows(ids: range) -> str:
    return "id,name,amount\n" + "".join(f"{i},n{i},{i}\n" for i in ids)


def _at(path: Path, second: int) -> None:
    """Give ``path`` the model clock's time ``second``."""
    os.utime(path, ns=(CLOCK_START_NS + second * 10**9,) * 2)


def _sync(how: str, defs: Definitions, instance: DagsterInstance, daemon: SensorDaemon) -> str:
    """One sync; what happened, for the history. Requests the daemon drops are part of the
    outcome (the comparison shows their effect), not an error here."""
    if how == FOLDER_SYNC:
        assert materialize(defs, instance, FOLDER_SYNC)
        return f"materialize {FOLDER_SYNC}"
    requests, dropped = daemon.tick()
    for request in requests:
        assert daemon.launch(request), describe_request(request)
    lines = [describe_request(request) for request in requests]
    lines += [f"DROPPED (run key used before) {describe_request(request)}" for request in dropped]
    return "sensor tick: " + ("; ".join(lines) or "no runs")


def _assert_matches_a_fresh_import(
    source_dir: Path, warehouse_url: str, new_warehouse: Callable[[str], str], history: list[str]
) -> None:
    """Every file of the tree as it is now (all import, none was deleted from a keep folder)."""
    fresh_root = source_dir.parent / f"fresh-{len(history)}" / source_dir.name
    for file in sorted(path for path in source_dir.rglob("*") if path.is_file()):
        relative = file.relative_to(source_dir).as_posix()
        place_file(fresh_root, relative, copy_of=file, mtime_ns=file.stat().st_mtime_ns)
    expected = new_warehouse("fresh")
    assert not [result.record.error for result in import_tree(expected, fresh_root) if result.failed]
    assert_tables_equal(warehouse_url, expected, history=history)
    assert_ledger_consistent(warehouse_url, history)


@pytest.mark.parametrize("how", [FOLDER_SYNC, SENSOR])
def test_a_shrunk_file_leaves_the_rows_another_file_holds(
    how: str,
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
) -> None:
    """The issue: crm/a.csv holds rows 0–39 and crm/b.csv rows 30–69 (one table, the default
    key). When a.csv shrinks to rows 0–29, rows 30–39 must stay: b.csv holds them."""
    a, b = source_dir / "crm" / "a.csv", source_dir / "crm" / "b.csv"
    write_csv(a, _rows(range(40)))
    write_csv(b, _rows(range(30, 70)))
    _at(a, 0)
    _at(b, 1)
    daemon = SensorDaemon(test_defs, instance, SENSOR)
    history = [f"add crm/a.csv rows 0–39, crm/b.csv rows 30–69; {_sync(how, test_defs, instance, daemon)}"]
    write_csv(a, _rows(range(30)))
    _at(a, 2)
    history.append(f"edit crm/a.csv to rows 0–29; {_sync(how, test_defs, instance, daemon)}")

    # The readable diff first; then the headline, in case a fresh import lost them too.
    _assert_matches_a_fresh_import(source_dir, warehouse_url, new_warehouse, history)
    with connect(warehouse_url) as warehouse:
        ids = {row[0] for row in warehouse.fetchall("SELECT id FROM crm")}
    assert set(range(30, 40)) <= ids, (
        f"rows {sorted(set(range(30, 40)) - ids)} are gone, yet crm/b.csv holds them"
    )


def test_a_file_restored_from_a_backup_is_imported(
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
) -> None:
    """rsync -a (or cp -p) brings back an earlier version with its old modification time:
    same size and time as a version already requested, yet it must be imported again."""
    a = source_dir / "crm" / "a.csv"
    daemon = SensorDaemon(test_defs, instance, SENSOR)
    write_csv(a, "id,name\n1,Acme\n")
    _at(a, 0)
    history = [f"add crm/a.csv (Acme); {_sync(SENSOR, test_defs, instance, daemon)}"]
    write_csv(a, "id,name\n1,Blue\n")
    _at(a, 1)
    history.append(f"edit crm/a.csv (Blue); {_sync(SENSOR, test_defs, instance, daemon)}")
    write_csv(a, "id,name\n1,Acme\n")
    _at(a, 0)
    history.append(f"restore crm/a.csv (Acme, old time); {_sync(SENSOR, test_defs, instance, daemon)}")
    _assert_matches_a_fresh_import(source_dir, warehouse_url, new_warehouse, history)


def test_a_file_deleted_twice_is_retracted_twice(
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
) -> None:
    """The same file deleted, brought back and deleted again: the second deletion must be
    handled like the first, whatever run key the first one's run had."""
    (source_dir / "pgdatahub.yaml").write_text(mapping_text())
    a = source_dir / "crm" / "a.csv"
    write_csv(source_dir / "crm" / "b.csv", "id,name\n2,Blue\n")
    daemon = SensorDaemon(test_defs, instance, SENSOR)
    history = []
    for content in ("id,name\n1,Acme\n", "id,name\n1,Corner\n"):
        write_csv(a, content)
        history.append(f"write crm/a.csv; {_sync(SENSOR, test_defs, instance, daemon)}")
        a.unlink()
        history.append(f"delete crm/a.csv; {_sync(SENSOR, test_defs, instance, daemon)}")
    _assert_matches_a_fresh_import(source_dir, warehouse_url, new_warehouse, history)


def test_a_late_retry_of_a_deletion_does_no_harm(
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
) -> None:
    """At-least-once delivery: the deletion run of crm/a.csv runs again after the file came
    back (a run retry, a re-execution from the UI). The file is there: its rows must stay."""
    (source_dir / "pgdatahub.yaml").write_text(mapping_text())
    a = source_dir / "crm" / "a.csv"
    write_csv(a, "id,name\n1,Acme\n")
    daemon = SensorDaemon(test_defs, instance, SENSOR)
    history = [f"add crm/a.csv; {_sync(SENSOR, test_defs, instance, daemon)}"]
    a.unlink()
    history.append(f"delete crm/a.csv; {_sync(SENSOR, test_defs, instance, daemon)}")
    [deletion] = [request for request in daemon.launched if request.job_name == "handle_deleted_files"]
    write_csv(a, "id,name\n1,Corner\n")
    history.append(f"write crm/a.csv again; {_sync(SENSOR, test_defs, instance, daemon)}")
    daemon.launch(deletion, retry=True)
    history.append(f"retry {describe_request(deletion)}; {_sync(SENSOR, test_defs, instance, daemon)}")
    _assert_matches_a_fresh_import(source_dir, warehouse_url, new_warehouse, history)


# -- the harness itself ----------------------------------------------------------------------


def _table(columns: dict[str, str], rows: list[tuple[object, ...]]) -> Table:
    return Table(columns, sorted(rows, key=str))


_LINEAGE = {"source_file": "TEXT", "source_file_id": "TEXT", "file_sha256": "TEXT", "_row_key": "UUID"}


def test_the_comparison_rules() -> None:
    """What ``compare_tables`` allows (extra empty tables, extra all-NULL columns, the
    multiset of rows) and what it reports."""
    columns = {"id": "INTEGER", **_LINEAGE}
    row = (1, "t/a.csv", "t/a.csv", "aa", "k1")
    expected = {"t": _table(columns, [row, row])}
    wide = {"id": "INTEGER", "note": "TEXT", **_LINEAGE}
    assert (
        compare_tables({"t": _table(wide, [(1, None, *row[1:])] * 2), "gone": _table(columns, [])}, expected)
        == []
    )

    [extra_table] = compare_tables({"t": expected["t"], "gone": _table(columns, [row])}, expected)
    assert "gone" in extra_table and "must be empty" in extra_table
    [filled] = compare_tables({"t": _table(wide, [(1, "x", *row[1:]), (1, None, *row[1:])])}, expected)
    assert "must be NULL" in filled and "note='x'" in filled
    [once] = compare_tables({"t": _table(columns, [row])}, expected)  # a multiset: twice is not once
    assert "1 in the synced warehouse, 2 in a fresh import" in once
    [narrow] = compare_tables({"t": _table({**columns, "id": "TEXT"}, [("1", *row[1:])] * 2)}, expected)
    assert "column id: TEXT in the synced warehouse, INTEGER" in narrow
    [missing] = compare_tables({}, expected)
    assert "missing from the synced warehouse" in missing


def test_kept_rows_fill_only_keys_no_live_file_holds() -> None:
    live = {"t": _table({"id": "INTEGER", **_LINEAGE}, [(1, "t/new.csv", "t/new.csv", "bb", "k1")])}
    kept = {
        "t": _table(
            {"id": "INTEGER", "note": "TEXT", **_LINEAGE},
            [
                (1, "old", "t/old.csv", "t/old.csv", "aa", "k1"),
                (2, "old", "t/old.csv", "t/old.csv", "aa", "k2"),
            ],
        ),
        "u": _table({"id": "INTEGER", **_LINEAGE}, [(3, "u/old.csv", "u/old.csv", "cc", "k3")]),
    }
    merged = merge_kept(live, kept)
    assert list(merged["t"].columns) == ["id", "note", *_LINEAGE]
    assert sorted(merged["t"].rows, key=str) == [
        (1, None, "t/new.csv", "t/new.csv", "bb", "k1"),
        (2, "old", "t/old.csv", "t/old.csv", "aa", "k2"),
    ]
    assert merged["u"] == kept["u"]


def test_the_comparison_accepts_what_departed_files_leave_and_nothing_else(
    test_defs: Definitions,
    instance: DagsterInstance,
    source_dir: Path,
    warehouse_url: str,
    new_warehouse: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Retracted files leave a wider column (amount became TEXT), a column only they used
    (note), and an empty table (crm_eu): the comparison must accept all three, read through
    the real warehouses, and still see a changed value or a filled extra column."""
    (source_dir / "pgdatahub.yaml").write_text(mapping_text())
    write_csv(source_dir / "shop" / "a.csv", "id,name,amount,note\n1,Acme,n/a,x\n")
    write_csv(source_dir / "shop" / "b.csv", "id,name,amount\n2,Blue,3\n")
    write_csv(source_dir / "crm" / "eu" / "a.csv", "id,name\n1,Acme\n")
    daemon = SensorDaemon(test_defs, instance, SENSOR)
    _sync(SENSOR, test_defs, instance, daemon)
    (source_dir / "shop" / "a.csv").unlink()
    (source_dir / "crm" / "eu" / "a.csv").unlink()
    _sync(SENSOR, test_defs, instance, daemon)

    fresh_root = tmp_path / "fresh" / source_dir.name
    (fresh_root).mkdir(parents=True)
    (fresh_root / "pgdatahub.yaml").write_text(mapping_text())
    b = source_dir / "shop" / "b.csv"
    place_file(fresh_root, "shop/b.csv", copy_of=b, mtime_ns=b.stat().st_mtime_ns)
    expected = new_warehouse("fresh")
    assert not [result for result in import_tree(expected, fresh_root) if result.failed]
    synced = fresh_tables(warehouse_url)
    assert synced["shop"].columns["amount"] == "TEXT" and "note" in synced["shop"].columns
    assert synced["crm_eu"].rows == [] and "crm_eu" not in fresh_tables(expected)
    assert fresh_tables(expected, widen_to=column_types(synced))["shop"].rows[0][0] == "3"
    assert_tables_equal(warehouse_url, expected)

    with connect(warehouse_url) as warehouse:
        warehouse.execute("UPDATE shop SET name = 'Zed'")
    with pytest.raises(AssertionError, match=r"(?s)only in the synced warehouse.*name='Zed'"):
        assert_tables_equal(warehouse_url, expected)
    with connect(warehouse_url) as warehouse:
        warehouse.execute("UPDATE shop SET name = 'Blue', note = 'y'")
    with pytest.raises(AssertionError, match="extra columns note must be NULL"):
        assert_tables_equal(warehouse_url, expected)
