"""Exact sync on Google Drive, model-based: after any sequence of file operations in the
watched Drive folders and syncs, every warehouse table equals what a from-scratch import of
the Drive tree as it is now gives into an empty warehouse.

The Google Drive variant of ``test_exact_sync.py``. A Hypothesis state machine adds, edits,
trashes, deletes, renames, moves (to a folder that maps to another table), copies, restores
(earlier bytes uploaded again), breaks and fixes small CSV files on the project's Drive test
server, and syncs only as the product does: ``drive_sensor`` ticks whose runs the test
launches the way the daemon would (run-key rule included, runs in any order), and retried
runs (at-least-once delivery). After every sync the warehouse is compared with a fresh import
(``pgdatahub_dagster_tests/exact_sync.py``).

The oracle is a second Drive test server holding the tree as it is now, with the same file
and folder ids, names, parents, contents and ``modifiedTime`` (lineage names the file id, and
the value rule ranks by the time), walked by ``DriveScanner`` into a fresh warehouse's
folder registry and imported by ``Importer`` over ``DriveSource``: the real Drive code path,
without Dagster. A file whose current content fails to import holds there its last good
version instead (name, folder, content and time, as the last sync saw it): the product keeps
that version's rows (README, "The promise").

Out of scope: folder renames and moves (Drive reports no change for the files inside, a
known gap the README names), and ``on_delete: keep`` folders (every folder retracts).
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
from pgdatahub_dagster.defs.resources import (
    DriveResource,
    FolderMappingResource,
    LocalFolderResource,
    WarehouseResource,
)
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
#: Parents before children, so a tree can be built in this order.
FOLDERS = ("crm", "crm/eu", "shop")
KEYED_BY_ID = frozenset({"crm", "crm/eu"})
#: Few names, so names repeat: Drive allows several files of one name in one folder.
FILE_NAMES = ("a.csv", "b.csv", "c.csv")
#: Every example starts from a file in each folder and two that share a table, synced once.
SEED = (("crm", "a.csv"), ("crm", "b.csv"), ("crm/eu", "a.csv"), ("shop", "a.csv"))
CSV = "text/csv"
SENSOR = "drive_sensor"


def good_in(content: Content, folder: str) -> bool:
    """Whether it imports: folders keyed by id fail a file without an id column."""
    return folder not in KEYED_BY_ID or "id" in content.header


@dataclass(frozen=True)
class Version:
    """One state of a Drive file: where it is, what it holds, its ``modifiedTime``."""

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
        self.folder_ids: dict[str, str] = {}
        for folder in FOLDERS:
            parent, _, name = folder.rpartition("/")
            self.folder_ids[folder] = self.server.add_folder(
                name, self.folder_ids[parent] if parent else self.root_id
            )
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
        #: The files in the watched tree now (not trashed, not deleted), by file id.
        self.files: dict[str, Version] = {}
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

    def _show(self, file_id: str) -> str:
        return f"{self.labels[file_id]} ({self.files[file_id].path})"

    def _note(self, step: str) -> None:
        self.steps.append(step)
        self.tree_changed = True

    def _record(self, file_id: str, folder: str, name: str, content: Content) -> Version:
        """The model's side of an operation on ``file_id``: its new state, time included."""
        version = Version(folder, name, content, self.server.modified_time(file_id))
        self.files[file_id] = version
        seen = self.history.setdefault(file_id, [])
        if content not in seen:
            seen.append(content)
        return version

    def _add(self, folder: str, name: str, content: Content, verb: str = "add") -> str:
        """A new file, labelled ``F<n>`` in the steps (with its Drive id, which the tables show
        as ``source_file_id``)."""
        file_id = self.server.add_file(name, self.folder_ids[folder], content.render(), CSV)
        self.labels[file_id] = f"F{len(self.labels) + 1}"
        version = self._record(file_id, folder, name, content)
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

    # -- file operations ---------------------------------------------------------------------

    @initialize(seed=st.lists(contents(), min_size=len(SEED), max_size=len(SEED)), data=st.data())
    def seed_tree(self, seed: list[Content], data: st.DataObject) -> None:
        for (folder, name), content in zip(SEED, seed, strict=True):
            self._add(folder, name, content)
        self._synced(self._sensor_sync(data))

    @rule(folder=st.sampled_from(FOLDERS), name=st.sampled_from(FILE_NAMES), content=contents())
    def add_file(self, folder: str, name: str, content: Content) -> None:
        self._add(folder, name, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=contents())
    def edit_file(self, data: st.DataObject, content: Content) -> None:
        file_id = self._pick(data, self._ids())
        self.server.update_content(file_id, content.render())
        old = self.files[file_id]
        version = self._record(file_id, old.folder, old.name, content)
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
        del self.files[file_id]
        self._note(f"{'delete permanently' if permanently else 'trash'} {shown}")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def rename_file(self, data: st.DataObject) -> None:
        file_id = self._pick(data, self._ids())
        old = self.files[file_id]
        name = self._pick(data, [name for name in FILE_NAMES if name != old.name], "new name")
        self.server.rename(file_id, name)
        self._moved("rename", file_id, self._record(file_id, old.folder, name, old.content), old)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def move_file(self, data: st.DataObject) -> None:
        """To another watched folder: another table, maybe other settings."""
        file_id = self._pick(data, self._ids())
        old = self.files[file_id]
        folder = self._pick(data, [folder for folder in FOLDERS if folder != old.folder], "target folder")
        self.server.move(file_id, self.folder_ids[folder])
        self._moved("move", file_id, self._record(file_id, folder, old.name, old.content), old)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), folder=st.sampled_from(FOLDERS), name=st.sampled_from(FILE_NAMES))
    def copy_file(self, data: st.DataObject, folder: str, name: str) -> None:
        """Drive's "make a copy", or the same file uploaded again: a new file, the same bytes."""
        source = self._pick(data, self._ids(), "source")
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
        version = self._record(file_id, current.folder, current.name, content)
        self._note(f"restore {self._show(file_id)} to {content.summary()} at {self._t(version.modified)}")

    @rule(data=st.data(), content=contents(header=BAD_HEADER))
    def write_bad_file(self, data: st.DataObject, content: Content) -> None:
        """A file without the key column in a folder keyed by id: it fails alone (a new file,
        or a new version of an existing one, whose last good version's rows must then stay)."""
        breakable = [file_id for file_id in self._ids() if self.files[file_id].folder in KEYED_BY_ID]
        if breakable and bool(data.draw(st.booleans(), label="break an existing file")):
            file_id = self._pick(data, breakable)
            old = self.files[file_id]
            self.server.update_content(file_id, content.render())
            version = self._record(file_id, old.folder, old.name, content)
            self._note(f"break {self._show(file_id)} {content.summary()} at {self._t(version.modified)}")
            return
        folder = data.draw(st.sampled_from(sorted(KEYED_BY_ID)), label="folder")
        name = data.draw(st.sampled_from(FILE_NAMES), label="name")
        self._add(folder, name, content, verb="add bad")

    @precondition(lambda self: self._bad_ids())
    @rule(data=st.data(), content=contents())
    def fix_bad_file(self, data: st.DataObject, content: Content) -> None:
        file_id = self._pick(data, self._bad_ids())
        old = self.files[file_id]
        self.server.update_content(file_id, content.render())
        version = self._record(file_id, old.folder, old.name, content)
        self._note(f"fix {self._show(file_id)} → {content.summary()} at {self._t(version.modified)}")

    @precondition(lambda self: self._overlap_rows())
    @rule(
        folder=st.sampled_from(FOLDERS),
        name=st.sampled_from(FILE_NAMES),
        variant=st.sampled_from(("same", "upper", "amount")),
    )
    def add_overlapping_file(self, folder: str, name: str, variant: str) -> None:
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
        self._add(folder, name, Content(header, tuple(rows)), verb=f"add overlapping ({variant})")

    # -- syncs -------------------------------------------------------------------------------

    def _sensor_sync(self, data: st.DataObject) -> str:
        requests, dropped = self.daemon.tick()
        order = list(range(len(requests)))
        if len(requests) > 1 and data.draw(st.booleans(), label="runs start in another order"):
            order = data.draw(st.permutations(order), label="run order")
        outcomes = []
        for index in order:
            ok = self.daemon.launch(requests[index])
            outcomes.append(f"{self._request(requests[index])}: {'success' if ok else 'run failed'}")
        outcomes += [f"DROPPED (run key used before) {self._request(request)}" for request in dropped]
        return "sensor tick" + "".join(f"\n         - {line}" for line in outcomes or ["no runs"])

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
            for folder in FOLDERS:
                parent, _, name = folder.rpartition("/")
                oracle.add_folder(
                    name,
                    self.folder_ids[parent] if parent else self.root_id,
                    item_id=self.folder_ids[folder],
                )
            for file_id, version in state:
                oracle.add_file(
                    version.name,
                    self.folder_ids[version.folder],
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
