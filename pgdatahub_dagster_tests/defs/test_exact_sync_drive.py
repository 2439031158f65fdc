"""Exact sync on Google Drive, model-based: after any sequence of file operations in the
watched Drive folders and syncs, every warehouse table equals what a from-scratch import of
the Drive tree as it is now gives into an empty warehouse.

The Google Drive variant of ``test_exact_sync.py``. A Hypothesis state machine adds, edits,
trashes, deletes, renames, moves (to a folder that maps to another table), copies, restores
(earlier bytes uploaded again), breaks and fixes small CSV files on the project's Drive test
server; renames sub-folders and moves them to another folder (another table, other settings),
out of the tree and back in (Drive reports the folder alone, never the files inside); and
syncs only as the product does: ``drive_sensor`` ticks whose runs the test
launches the way the daemon would (run-key rule included, runs in any order), and retried
runs (at-least-once delivery). After every sync the warehouse is compared with a fresh import
(``pgdatahub_dagster_tests/exact_sync.py``).

The oracle is a second Drive test server holding the tree as it is now, with the same file
ids, names, paths, contents and ``modifiedTime`` (lineage names the file id, and
the value rule ranks by the time), walked by ``DriveScanner`` into a fresh warehouse's
folder registry and imported by ``Importer`` over ``DriveSource``: the real Drive code path,
without Dagster. A file whose current content fails to import holds there its last good
version instead (name, folder, content and time, as the last sync saw it): the product keeps
that version's rows (README, "The promise").

Out of scope: ``on_delete: keep`` folders (every folder retracts; the two top-level folders,
which carry the settings, stay where they are).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import pytest
from dagster import DagsterInstance, DagsterUnknownPartitionError, RunRequest
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
from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources.drive import (
    DriveClient,
    DriveScanner,
    DriveSource,
    FolderRegistry,
    ScanState,
)
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster.testing.drive_server import DriveTestServer
from pgdatahub_dagster_tests.defs.test_exact_sync import BAD_HEADER, Content, contents
from pgdatahub_dagster_tests.exact_sync import (
    SensorDaemon,
    assert_ledger_consistent,
    assert_tables_equal,
    describe_request,
    failure_report,
    machine_settings,
)

# -- the Drive tree --------------------------------------------------------------------------

#: crm keys rows by id only (a file without an id column fails there), crm/eu inherits that
#: (table crm_eu); shop keys by every column (the default). Every folder retracts the rows of
#: files that leave it.
MAPPING = """\
crm:
  unique_key: [id]
  on_delete: retract
shop:
  on_delete: retract
"""
ROOT = "Inbox"
#: Parents before children, so a tree can be built in this order. The top-level folders carry
#: the settings and stay; the sub-folders are renamed and moved.
FOLDERS = ("crm", "crm/eu", "shop", "shop/old")
TOP_FOLDERS = ("crm", "shop")
#: Names a renamed sub-folder takes (so sub-folders of one name meet, as Drive allows).
SUB_FOLDER_NAMES = ("eu", "europe", "old")
#: Where sub-folders go when they leave the tree: a folder nobody watches.
OUTSIDE = "Elsewhere"
#: Few names, so names repeat: Drive allows several files of one name in one folder.
FILE_NAMES = ("a.csv", "b.csv", "c.csv")
#: Every example starts from a file in each folder and two that share a table, synced once.
SEED = (("crm", "a.csv"), ("crm", "b.csv"), ("crm/eu", "a.csv"), ("shop", "a.csv"))
CSV = "text/csv"
SENSOR = "drive_sensor"


def keyed_by_id(folder: str) -> bool:
    return folder.split("/")[0] == "crm"


def good_in(content: Content, folder: str) -> bool:
    """Whether it imports: folders keyed by id fail a file without an id column."""
    return not keyed_by_id(folder) or "id" in content.header


@dataclass(frozen=True)
class Version:
    """One state of a Drive file: where it is (its folder's path at the time), what it
    holds, its ``modifiedTime``."""

    folder: str
    name: str
    content: Content
    modified: datetime

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}"

    @property
    def good(self) -> bool:
        return good_in(self.content, self.folder)


# -- the state machine -----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What the machine gets from the test: fresh warehouses, credentials for the client,
    and the folder mapping (the file ``FolderMappingResource`` finds by itself)."""

    new_warehouse: Callable[[str], str]
    credentials: Path
    mapping_file: Path


class DriveExactSyncMachine(RuleBasedStateMachine):
    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        self.server = DriveTestServer().start()
        self.root_id = self.server.add_folder(ROOT)
        self.clock_start = self.server.modified_time(self.root_id)
        self.outside_id = self.server.add_folder(OUTSIDE)
        #: Every folder but the roots: folder id → (parent id, name), as on the server now.
        self.folders: dict[str, tuple[str, str]] = {}
        initial: dict[str, str] = {}
        for folder in FOLDERS:
            parent, _, name = folder.rpartition("/")
            parent_id = initial[parent] if parent else self.root_id
            initial[folder] = self.server.add_folder(name, parent_id)
            self.folders[initial[folder]] = (parent_id, name)
        self.seed_folders = initial
        self.url = self.world.new_warehouse("synced")
        # In memory, as in test_exact_sync.py: a real instance, a third of a SQLite one's cost.
        self.instance = DagsterInstance.ephemeral()
        self.defs = build_defs(
            {
                "warehouse": WarehouseResource(database_url=self.url),
                "folder_mapping": FolderMappingResource(),
                "local_folder": LocalFolderResource(),
                "drive": DriveResource(
                    folder_ids=self.root_id,
                    credentials_file=str(self.world.credentials),
                    api_endpoint=self.server.api_endpoint,
                ),
            }
        )
        self.daemon = SensorDaemon(self.defs, self.instance, SENSOR)
        #: Every file not trashed nor deleted, in the tree or in a folder moved out of it:
        #: file id → (folder id, name, content, modifiedTime).
        self.placed: dict[str, tuple[str, str, Content, datetime]] = {}
        #: Every content a file has had, for restores.
        self.history: dict[str, list[Content]] = {}
        #: Per file, the last version a sync saw that imports: what the warehouse must show.
        self.imported: dict[str, Version] = {}
        self.labels: dict[str, str] = {}
        self.steps: list[str] = []
        self.check_due = False
        self.tree_changed = False
        self.last_expected: tuple[object, str] | None = None

    def teardown(self) -> None:
        self.instance.dispose()
        self.server.stop()

    # -- helpers -----------------------------------------------------------------------------

    def _t(self, moment: datetime) -> str:
        return f"t{int((moment - self.clock_start).total_seconds())}"

    def _folder_path(self, folder_id: str) -> str | None:
        """The folder's path below the root; None when it is outside the tree."""
        names: list[str] = []
        while folder_id in self.folders:
            folder_id, name = self.folders[folder_id][0], self.folders[folder_id][1]
            names.insert(0, name)
        return "/".join(names) if folder_id == self.root_id else None

    def _tree_folders(self) -> list[str]:
        """The folder ids inside the tree, by path."""
        inside = [(path, folder_id) for folder_id in self.folders if (path := self._folder_path(folder_id))]
        return [folder_id for _, folder_id in sorted(inside)]

    def _sub_folders(self) -> list[str]:
        """The folders that are renamed and moved: every folder but the top-level ones."""
        return sorted(folder_id for folder_id, (parent, _) in self.folders.items() if parent != self.root_id)

    @property
    def files(self) -> dict[str, Version]:
        """The files in the watched tree now (not trashed, not deleted), by file id."""
        files = {}
        for file_id, (folder_id, name, content, modified) in self.placed.items():
            path = self._folder_path(folder_id)
            if path is not None:
                files[file_id] = Version(path, name, content, modified)
        return files

    def _show(self, file_id: str) -> str:
        return f"{self.labels[file_id]} ({self.files[file_id].path})"

    def _note(self, step: str) -> None:
        self.steps.append(step)
        self.tree_changed = True

    def _record(self, file_id: str, folder_id: str, name: str, content: Content) -> Version:
        """The model's side of an operation on ``file_id``: its new state, time included."""
        self.placed[file_id] = (folder_id, name, content, self.server.modified_time(file_id))
        version = self.files[file_id]
        seen = self.history.setdefault(file_id, [])
        if content not in seen:
            seen.append(content)
        return version

    def _add(self, folder_id: str, name: str, content: Content, verb: str = "add") -> str:
        """A new file, labelled ``F<n>`` in the steps (with its Drive id, which the tables show
        as ``source_file_id``)."""
        file_id = self.server.add_file(name, folder_id, content.render(), CSV)
        self.labels[file_id] = f"F{len(self.labels) + 1}"
        version = self._record(file_id, folder_id, name, content)
        self._note(
            f"{verb} {self._show(file_id)} {content.summary()} at {self._t(version.modified)} (id {file_id})"
        )
        return file_id

    def _moved(self, verb: str, file_id: str, new: Version, old: Version) -> None:
        self._note(f"{verb} {self.labels[file_id]} {old.path} → {new.path} at {self._t(new.modified)}")

    def _ids(self) -> list[str]:
        return sorted(self.files, key=lambda file_id: int(self.labels[file_id][1:]))

    def _bad_ids(self) -> list[str]:
        return [file_id for file_id in self._ids() if not self.files[file_id].good]

    def _restorable(self) -> list[str]:
        return [
            file_id
            for file_id in self._ids()
            if any(content != self.files[file_id].content for content in self.history[file_id])
        ]

    def _overlap_rows(self) -> list[dict[str, str]]:
        return [
            record
            for file_id in self._ids()
            if "id" in self.files[file_id].content.header
            for record in self.files[file_id].content.records()
        ]

    def _pick(self, data: st.DataObject, choices: list[str], label: str = "file") -> str:
        return data.draw(st.sampled_from(choices), label=label)

    def _pick_folder(self, data: st.DataObject, choices: list[str], label: str = "folder") -> str:
        """A folder id, drawn by its path (shown in the steps)."""
        shown = {f"{self._folder_path(f) or OUTSIDE}#{i}": f for i, f in enumerate(choices)}
        return shown[data.draw(st.sampled_from(sorted(shown)), label=label)]

    def _folder_of(self, file_id: str) -> str:
        return self.placed[file_id][0]

    # -- file operations ---------------------------------------------------------------------

    @initialize(seed=st.lists(contents(), min_size=len(SEED), max_size=len(SEED)), data=st.data())
    def seed_tree(self, seed: list[Content], data: st.DataObject) -> None:
        for (folder, name), content in zip(SEED, seed, strict=True):
            self._add(self.seed_folders[folder], name, content)
        self._synced(self._sensor_sync(data))

    @rule(data=st.data(), name=st.sampled_from(FILE_NAMES), content=contents())
    def add_file(self, data: st.DataObject, name: str, content: Content) -> None:
        self._add(self._pick_folder(data, self._tree_folders()), name, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=contents())
    def edit_file(self, data: st.DataObject, content: Content) -> None:
        file_id = self._pick(data, self._ids())
        self.server.update_content(file_id, content.render())
        old = self.files[file_id]
        version = self._record(file_id, self._folder_of(file_id), old.name, content)
        self._note(f"edit {self._show(file_id)} → {content.summary()} at {self._t(version.modified)}")

    @precondition(lambda self: self.files)
    @rule(data=st.data(), permanently=st.booleans())
    def remove_file(self, data: st.DataObject, permanently: bool) -> None:
        """Into the trash, or deleted for good (the change then carries no file)."""
        file_id = self._pick(data, self._ids())
        shown = self._show(file_id)
        if permanently:
            self.server.delete(file_id)
        else:
            self.server.trash(file_id)
        del self.placed[file_id]
        self._note(f"{'delete permanently' if permanently else 'trash'} {shown}")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def rename_file(self, data: st.DataObject) -> None:
        file_id = self._pick(data, self._ids())
        old = self.files[file_id]
        name = self._pick(data, [name for name in FILE_NAMES if name != old.name], "new name")
        self.server.rename(file_id, name)
        self._moved(
            "rename", file_id, self._record(file_id, self._folder_of(file_id), name, old.content), old
        )

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def move_file(self, data: st.DataObject) -> None:
        """To another watched folder: another table, maybe other settings."""
        file_id = self._pick(data, self._ids())
        old = self.files[file_id]
        targets = [folder for folder in self._tree_folders() if folder != self._folder_of(file_id)]
        folder = self._pick_folder(data, targets, "target folder")
        self.server.move(file_id, folder)
        self._moved("move", file_id, self._record(file_id, folder, old.name, old.content), old)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), name=st.sampled_from(FILE_NAMES))
    def copy_file(self, data: st.DataObject, name: str) -> None:
        """Drive's "make a copy", or the same file uploaded again: a new file, the same bytes."""
        source = self._pick(data, self._ids(), "source")
        folder = self._pick_folder(data, self._tree_folders())
        self._add(folder, name, self.files[source].content, verb=f"copy {self._show(source)} →")

    @precondition(lambda self: self._restorable())
    @rule(data=st.data())
    def restore_file(self, data: st.DataObject) -> None:
        """Earlier bytes uploaded again as a new revision (a backup, "manage versions")."""
        file_id = self._pick(data, self._restorable())
        current = self.files[file_id]
        earlier = [content for content in self.history[file_id] if content != current.content]
        content = data.draw(st.sampled_from(earlier), label="earlier content")
        self.server.update_content(file_id, content.render())
        version = self._record(file_id, self._folder_of(file_id), current.name, content)
        self._note(f"restore {self._show(file_id)} to {content.summary()} at {self._t(version.modified)}")

    @rule(data=st.data(), content=contents(header=BAD_HEADER))
    def write_bad_file(self, data: st.DataObject, content: Content) -> None:
        """A file without the key column in a folder keyed by id: it fails alone (a new file,
        or a new version of an existing one, whose last good version's rows must then stay)."""
        breakable = [file_id for file_id in self._ids() if keyed_by_id(self.files[file_id].folder)]
        if breakable and bool(data.draw(st.booleans(), label="break an existing file")):
            file_id = self._pick(data, breakable)
            old = self.files[file_id]
            self.server.update_content(file_id, content.render())
            version = self._record(file_id, self._folder_of(file_id), old.name, content)
            self._note(f"break {self._show(file_id)} {content.summary()} at {self._t(version.modified)}")
            return
        keyed = [folder for folder in self._tree_folders() if keyed_by_id(self._folder_path(folder) or "")]
        folder = self._pick_folder(data, keyed)
        name = data.draw(st.sampled_from(FILE_NAMES), label="name")
        self._add(folder, name, content, verb="add bad")

    @precondition(lambda self: self._bad_ids())
    @rule(data=st.data(), content=contents())
    def fix_bad_file(self, data: st.DataObject, content: Content) -> None:
        file_id = self._pick(data, self._bad_ids())
        old = self.files[file_id]
        self.server.update_content(file_id, content.render())
        version = self._record(file_id, self._folder_of(file_id), old.name, content)
        self._note(f"fix {self._show(file_id)} → {content.summary()} at {self._t(version.modified)}")

    @precondition(lambda self: self._overlap_rows())
    @rule(
        data=st.data(),
        name=st.sampled_from(FILE_NAMES),
        variant=st.sampled_from(("same", "upper", "amount")),
    )
    def add_overlapping_file(self, data: st.DataObject, name: str, variant: str) -> None:
        """A file that holds the rows of all others (same keys; the same values, or other
        values for the same keys)."""
        header = ("id", "name", "amount")
        rows = []
        for record in self._overlap_rows()[:40]:
            row = {column: record.get(column, "") for column in header}
            if variant == "upper":
                row["name"] = row["name"].upper()
            elif variant == "amount":
                row["amount"] = "9"
            rows.append(tuple(row[column] for column in header))
        folder = self._pick_folder(data, self._tree_folders())
        self._add(folder, name, Content(header, tuple(rows)), verb=f"add overlapping ({variant})")

    # -- folder operations: Drive reports the folder, never the files inside --------------------

    def _folder_moved(self, verb: str, folder_id: str, old_path: str | None) -> None:
        new_path = self._folder_path(folder_id)
        inside = ", ".join(
            sorted(self.labels[f] for f, placed in self.placed.items() if placed[0] == folder_id)
        )
        self._note(
            f"{verb} folder {old_path or OUTSIDE} → {new_path or OUTSIDE} (holding {inside or 'no files'})"
        )

    @precondition(lambda self: any(self._folder_path(folder) for folder in self._sub_folders()))
    @rule(data=st.data(), name=st.sampled_from(SUB_FOLDER_NAMES))
    def rename_folder(self, data: st.DataObject, name: str) -> None:
        folder_id = self._pick_folder(data, [f for f in self._sub_folders() if self._folder_path(f)])
        old_path = self._folder_path(folder_id)
        self.server.rename(folder_id, name)
        self.folders[folder_id] = (self.folders[folder_id][0], name)
        self._folder_moved("rename", folder_id, old_path)

    @precondition(lambda self: self._sub_folders())
    @rule(data=st.data())
    def move_folder(self, data: st.DataObject) -> None:
        """Under the other top-level folder (another table, maybe other settings), out of the
        tree, or back into it."""
        folder_id = self._pick_folder(data, self._sub_folders())
        old_path = self._folder_path(folder_id)
        targets = [self.seed_folders[top] for top in TOP_FOLDERS] + ([self.outside_id] if old_path else [])
        parent = self._pick_folder(data, [t for t in targets if t != self.folders[folder_id][0]], "to")
        self.server.move(folder_id, parent)
        self.folders[folder_id] = (parent, self.folders[folder_id][1])
        self._folder_moved("move", folder_id, old_path)

    @precondition(lambda self: any(self._folder_path(folder) for folder in self._sub_folders()))
    @rule(data=st.data(), how=st.sampled_from(("trash", "trash, reported alone", "unshare")))
    def remove_folder(self, data: st.DataObject, how: str) -> None:
        """Trashed (Drive may report the folder alone) or no longer shared with the service
        account: every file below it leaves."""
        folder_id = self._pick_folder(data, [f for f in self._sub_folders() if self._folder_path(f)])
        old_path = self._folder_path(folder_id)
        inside = ", ".join(
            sorted(self.labels[f] for f, placed in self.placed.items() if placed[0] == folder_id)
        )
        if how == "unshare":
            self.server.unshare(folder_id)
        else:
            self.server.trash(folder_id, descendants_reported=how == "trash")
        del self.folders[folder_id]
        for file_id in [f for f, placed in self.placed.items() if placed[0] == folder_id]:
            del self.placed[file_id]
        self._note(f"{how} folder {old_path} (holding {inside or 'no files'})")

    # -- syncs -------------------------------------------------------------------------------

    def _sensor_sync(self, data: st.DataObject) -> str:
        return self.daemon.sync_in_any_order(data, self._request)

    def _request(self, request: RunRequest) -> str:
        """``describe_request`` with the model's file labels in place of Drive ids."""
        text = describe_request(request)
        for file_id, label in self.labels.items():
            text = text.replace(file_id, label)
        return text

    def _synced(self, step: str) -> None:
        """After a sync the warehouse must show every file as it is now, or its last version
        that imports when the current one fails; files gone show nothing (every folder
        retracts)."""
        self._note(f"SYNC: {step}")
        for file_id, version in self.files.items():
            if version.good:
                self.imported[file_id] = version
        for file_id in [file_id for file_id in self.imported if file_id not in self.files]:
            del self.imported[file_id]
        self.check_due = True
        self.tree_changed = False

    @rule(data=st.data())
    def sync_by_sensor(self, data: st.DataObject) -> None:
        self._synced(self._sensor_sync(data))

    @rule(data=st.data())
    def sync_by_sensor_twice(self, data: st.DataObject) -> None:
        """Two ticks in a row (the second has nothing new to see, and must change nothing);
        also makes syncs as likely as the file operations they follow."""
        self._synced(f"{self._sensor_sync(data)}\n       then {self._sensor_sync(data)}")

    @precondition(lambda self: self.daemon.launched)
    @rule(data=st.data())
    def retry_a_run_then_sync(self, data: st.DataObject) -> None:
        """A run delivered again, maybe long after it first ran (a run retry, a re-execution
        from the UI): at-least-once delivery must do no harm."""
        index = data.draw(st.integers(0, len(self.daemon.launched) - 1), label="retried run")
        request = self.daemon.launched[index]
        try:
            outcome = "success" if self.daemon.launch(request, retry=True) else "run failed"
        except DagsterUnknownPartitionError:
            outcome = "not started: its partition is gone"
        retried = f"retry {self._request(request)}: {outcome}"
        if not self.tree_changed:
            # Nothing changed since the last sync, so the retry alone must leave the
            # warehouse exact (the sync that follows could repair harm done).
            self._synced(retried)
            self.warehouse_matches_a_fresh_import()
            retried = ""
        follow = self._sensor_sync(data)
        self._synced(f"{retried}; then {follow}" if retried else follow)

    # -- the invariant -----------------------------------------------------------------------

    @invariant()
    def warehouse_matches_a_fresh_import(self) -> None:
        # Only syncs change the warehouse; file operations leave it lagging until the next.
        if self.check_due:
            self.check_due = False
            assert_ledger_consistent(self.url, self.steps)
            assert_tables_equal(self.url, self._expected(), history=self.steps)

    def _expected(self) -> str:
        """A fresh import of the tree as the warehouse must show it now: every live file,
        at its last version that imports. Reused while the model has not changed."""
        expected = {
            file_id: version if version.good else self.imported[file_id]
            for file_id, version in self.files.items()
            if version.good or file_id in self.imported
        }
        state = tuple(sorted(expected.items(), key=lambda item: item[0]))
        if self.last_expected is not None and self.last_expected[0] == state:
            return self.last_expected[1]
        url = self.world.new_warehouse("fresh")
        with DriveTestServer() as oracle:
            oracle.add_folder(ROOT, item_id=self.root_id)
            # Folders by path: the tables name paths, never folder ids.
            folder_ids = {"": self.root_id}

            def folder_at(path: str) -> str:
                if path not in folder_ids:
                    parent, _, name = path.rpartition("/")
                    folder_ids[path] = oracle.add_folder(name, folder_at(parent))
                return folder_ids[path]

            for file_id, version in state:
                oracle.add_file(
                    version.name,
                    folder_at(version.folder),
                    version.content.render(),
                    CSV,
                    item_id=file_id,
                    modified_time=version.modified,
                )
            client = DriveClient.connect(self.world.credentials, api_endpoint=oracle.api_endpoint)
            with connect(url) as warehouse:
                registry = FolderRegistry(warehouse)
                scan = DriveScanner(client, registry, [self.root_id]).scan(ScanState())
                assert not scan.state.walking, scan.log
                importer = Importer(
                    warehouse, DriveSource(client, registry), FolderMapping.load(self.world.mapping_file)
                )
                results = list(importer.import_all())
        # The oracle holds only versions that import; a failure here is the engine's (or the
        # model's), and would silently drop rows from the expected side.
        failed = [str(result.record.error) for result in results if result.failed]
        assert not failed, failure_report("a fresh import of the Drive tree failed", failed, self.steps, {})
        met = sorted(result.record.source_file_id for result in results)
        assert met == sorted(expected), f"a fresh import met {met}, the tree holds {sorted(expected)}"
        assert_ledger_consistent(url, self.steps, label="a fresh import")
        self.last_expected = (state, url)
        return url


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture
def mapping_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pgdatahub.yaml in PGDATAHUB_SOURCE_DIR, where the Drive code finds it too; the Drive
    settings come from each example's resources, none from the environment."""
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "pgdatahub.yaml").write_text(MAPPING)
    monkeypatch.setenv("PGDATAHUB_SOURCE_DIR", str(root))
    for name in (
        "PGDATAHUB_CONFIG",
        "PGDATAHUB_DRIVE_FOLDER_ID",
        "PGDATAHUB_DRIVE_CREDENTIALS",
        "PGDATAHUB_DRIVE_API_ENDPOINT",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(name, raising=False)
    return root / "pgdatahub.yaml"


def _run(
    new_warehouse: Callable[[str], str], drive_credentials: Path, mapping_file: Path, run_settings: settings
) -> None:
    world = World(new_warehouse, drive_credentials, mapping_file)
    machine = type("DriveExactSync", (DriveExactSyncMachine,), {"world": world})
    run_state_machine_as_test(machine, settings=run_settings)


# ``drive_server`` for the environment it sets up (no proxies for 127.0.0.1); every example
# starts Drive test servers of its own.
@pytest.mark.long
@pytest.mark.usefixtures("drive_server")
def test_exact_sync_drive(
    new_warehouse: Callable[[str], str], drive_credentials: Path, mapping_file: Path
) -> None:
    """The CI size: about 40 s on DuckDB and 30 s on PostgreSQL on 2 cores (6 examples took
    54 s on DuckDB on a busy machine). No shrinking: each example takes seconds; the failing
    steps are listed in the message anyway."""
    _run(new_warehouse, drive_credentials, mapping_file, machine_settings(5, 12, shrink=False))


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.usefixtures("drive_server")
def test_exact_sync_drive_long(
    new_warehouse: Callable[[str], str], drive_credentials: Path, mapping_file: Path
) -> None:
    """More and longer examples, failures shrunk to a minimal sequence of steps:
    ``pytest -m long pgdatahub_dagster_tests/defs/test_exact_sync_drive.py``."""
    _run(new_warehouse, drive_credentials, mapping_file, machine_settings(25, 25, shrink=True))
