"""The warehouse interface, with the SQL that PostgreSQL and DuckDB share.

Subclasses supply the connection primitives (execute, quoting, transactions, bulk load);
everything else — the ledger, the audit of schema changes, DDL — is written once here in
SQL both databases accept.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

import polars as pl

from pgdatahub_dagster.engine.dedup.keys import (
    LEGACY_ROW_KEY_VERSION,
    ROW_KEY_COLUMN,
    ROW_KEY_VERSION,
    KeyFilter,
    SeenKeys,
)
from pgdatahub_dagster.engine.errors import CommitConflict, DataRefusedError, PgDataHubError, WarehouseError
from pgdatahub_dagster.engine.schema.evolve import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How often a transaction that lost a commit race runs (``Warehouse.run_transaction``), and
#: the mean pause before the second attempt (it grows with each attempt, with jitter so that
#: writers that collided do not collide again).
COMMIT_ATTEMPTS = 8
COMMIT_RETRY_SECONDS = 0.2

LEDGER_TABLE = "etl_imports"
SCHEMA_CHANGES_TABLE = "etl_schema_changes"
#: The Drive folder registry (``sources/drive/registry.py``).
REGISTRY_TABLE = "drive_folder_registry"
#: The Drive source's folder registry and file index (``sources/drive/registry.py``), which
#: replaced ``REGISTRY_TABLE`` (dropped when found; its name stays reserved).
DRIVE_FOLDERS_TABLE = "drive_folders"
DRIVE_FILES_TABLE = "drive_files"
DRIVE_REPLAY_TABLE = "drive_last_tick"
#: The engine's own tables. Their sequences and indexes are named after them
#: (``etl_imports_id_seq``, ``etl_imports_file``).
ENGINE_TABLES = (
    LEDGER_TABLE,
    SCHEMA_CHANGES_TABLE,
    REGISTRY_TABLE,
    DRIVE_FOLDERS_TABLE,
    DRIVE_FILES_TABLE,
    DRIVE_REPLAY_TABLE,
)
#: Every other name the engine gives a table, view or schema starts with this.
ENGINE_PREFIX = "pgdatahub_"
#: The ``prefer`` each data table's shared keys were last decided by.
TABLE_SETTINGS_TABLE = f"{ENGINE_PREFIX}table_settings"
#: The version of each data table's row keys (``dedup/keys.py``), recorded when the table is
#: created; a table without a record predates versions (``LEGACY_ROW_KEY_VERSION``).
ROW_KEY_VERSIONS_TABLE = f"{ENGINE_PREFIX}row_key_versions"
#: The tables ``ensure_ledger`` makes besides the ledger itself.
LEDGER_SIDE_TABLES = (SCHEMA_CHANGES_TABLE, TABLE_SETTINGS_TABLE, ROW_KEY_VERSIONS_TABLE)
#: Where each data table's holders table lives (see ``ownership.py``), under the table's name.
HOLDERS_SCHEMA = f"{ENGINE_PREFIX}holders"
#: The temporary table one batch of rows is staged in before it is merged.
STAGE_TABLE = f"{ENGINE_PREFIX}stage"


def is_engine_name(name: str) -> bool:
    """Whether ``name`` is one the engine names its own tables, sequences, indexes, temporary
    tables or schemas with, now or later: a data table of that name would shadow or break
    them (the mapping gives such folders another name)."""
    return name.startswith(ENGINE_PREFIX) or any(
        name == table or name.startswith(f"{table}_") for table in ENGINE_TABLES
    )


# Every data table carries these, after the user's columns.
LINEAGE_COLUMNS: dict[str, str] = {
    "source_file": "TEXT NOT NULL",
    "source_file_id": "TEXT NOT NULL",
    "file_sha256": "TEXT NOT NULL",
    "load_timestamp": "TIMESTAMP WITH TIME ZONE NOT NULL",
}
SYSTEM_COLUMNS = frozenset(LINEAGE_COLUMNS) | {ROW_KEY_COLUMN}

# information_schema type names of both databases, lower-cased. Columns a person added
# by hand with other types map to the closest lattice type, so widening stays correct.
_SQL_TYPE_BY_NAME: dict[str, SqlType] = {
    "boolean": SqlType.BOOLEAN,
    "smallint": SqlType.INTEGER,
    "tinyint": SqlType.INTEGER,
    "integer": SqlType.INTEGER,
    "bigint": SqlType.BIGINT,
    "hugeint": SqlType.TEXT,
    "real": SqlType.DOUBLE,
    "float": SqlType.DOUBLE,
    "double": SqlType.DOUBLE,
    "double precision": SqlType.DOUBLE,
    "numeric": SqlType.DOUBLE,
    "decimal": SqlType.DOUBLE,
    "date": SqlType.DATE,
    "timestamp": SqlType.TIMESTAMP,
    "timestamp without time zone": SqlType.TIMESTAMP,
    "timestamp with time zone": SqlType.TIMESTAMP,
}


def sql_type_named(name: str) -> SqlType:
    base = name.lower().split("(")[0].strip()
    return _SQL_TYPE_BY_NAME.get(base, SqlType.TEXT)


# A table created by the running transaction takes the fast path (no index until commit,
# keys remembered in memory, ``SeenKeys``) for this many keyed rows: a hash table of 2**21
# slots of 17 bytes (36 MB) at the bound.
# Past that, memory must stay flat however large the file: the file goes on with a filter of
# fixed size and the recent keys (``Warehouse._past_key_bound``), and the rows they cannot
# decide are settled against the index at the end (``settle_fresh``). Going on against the
# index instead cost more per row the larger the table grew (docs/benchmarks.md, *Issue 12,
# linear cost*).
FRESH_TABLE_MAX_KEYS = 1_000_000
#: The size of the ``KeyFilter`` of a new table past ``FRESH_TABLE_MAX_KEYS`` (16 MiB, less
#: than the exact keys took up to there): at 5,000,000 keys one in about 800 is undecided
#: by mistake, at 20,000,000 about one in 20; every undecided row costs a row in the temporary
#: table, never a wrong answer.
KEY_FILTER_BITS = 2**27
#: The keys of each of the ``KeyFilter``'s two generations of recent keys: two hash tables of
#: 2**19 slots each (9 MB), made at that size. On the bench's 5,000,000-row file, whose repeats come
#: within 450,000 rows of their first, they leave 1.8 % of the rows undecided against 7.6 %
#: with none (docs/benchmarks.md, *Issue 12, recent keys held exactly*).
RECENT_KEYS = 2**18
#: The column of the undecided rows' table giving each row's position among them.
UNDECIDED_POSITION = f"{ENGINE_PREFIX}position"


class BackgroundLoad:
    """At most one load running on a worker thread while the caller prepares the next
    batch (the two cores work at once); its error, if any, surfaces at the next ``wait``."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, work: Callable[[], object]) -> None:
        self.wait()

        def run() -> None:
            try:
                work()
            except BaseException as error:  # re-raised by wait() in the caller's thread
                self._error = error

        self._thread = threading.Thread(target=run, name="pgdatahub-load", daemon=True)
        self._thread.start()

    def wait(self, *, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


@dataclass(frozen=True)
class Lineage:
    source_file: str
    source_file_id: str
    file_sha256: str
    load_timestamp: datetime


@dataclass(frozen=True)
class HoldingImport:
    """An import that holds rows now (``success`` or ``kept``)."""

    id: int
    table_name: str
    source_file: str
    source_file_id: str
    file_sha256: str
    status: str
    modified_at: datetime | None
    read_as: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """One committed version of a warehouse that keeps them (DuckLake): a table reads as of
    it with ``AT (VERSION => id)``."""

    id: int
    committed_at: datetime
    #: What the commit said: the ledger rows it wrote (``import 42: success crm/a.csv``).
    message: str | None
    #: The ids of the ledger rows it wrote (none: the engine's own housekeeping).
    import_ids: tuple[int, ...]


@dataclass
class ImportRecord:
    """One row of the import ledger ``etl_imports``: an import attempt or a lifecycle event."""

    id: int
    table_name: str
    source_file: str
    source_file_id: str
    file_sha256: str
    status: str
    run_id: str | None
    started_at: datetime
    finished_at: datetime
    rows_read: int = 0
    rows_inserted: int = 0
    rows_duplicate: int = 0
    #: Rows this event removed: an earlier version's rows (a changed file), or a deleted
    #: file's rows (``on_delete: retract``).
    rows_deleted: int = 0
    error: str | None = None
    duplicate_of: str | None = None
    #: The import whose rows a changed file's new version replaced.
    replaced_import_id: int | None = None
    sheet_name: str | None = None
    #: The kind of source the file came from (``local``, ``drive``).
    source: str | None = None
    #: The file's modification time: it ranks files that hold the same row key.
    modified_at: datetime | None = None
    #: Distinct row keys (and key-less rows) this import holds, whoever supplies them.
    rows_held: int = 0
    #: The folder settings that decided which rows the file holds (``FolderSettings.read_as``):
    #: the same bytes under other settings are read again.
    read_as: str | None = None


#: Ledger statuses. ``success`` imports hold rows in the tables, and so do ``kept`` ones (their
#: file was deleted under ``on_delete: keep``), ranked below every live file; ``replaced``,
#: ``reverted`` and ``retracted`` imports gave their rows up later; ``deleted`` and
#: ``retracted`` rows record a file's disappearance.
LEDGER_STATUSES = ("success", "skipped", "failed", "replaced", "reverted", "deleted", "retracted", "kept")
HOLDING_STATUSES = ("success", "kept")
#: The same, as SQL: ``status IN HOLDING_SQL``.
HOLDING_SQL = "(" + ", ".join(f"'{status}'" for status in HOLDING_STATUSES) + ")"


def _ledger_ddl(indexed: bool) -> list[str]:
    """The ledger's tables, with their sequences and indexes where the database has them
    (``indexed``); without, ids come from ``Warehouse.next_id``."""
    key = "PRIMARY KEY" if indexed else "NOT NULL"
    tables = [
        f"""CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
        id BIGINT {key},
        table_name TEXT NOT NULL,
        source_file TEXT NOT NULL,
        source_file_id TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        status TEXT NOT NULL,
        rows_read BIGINT NOT NULL,
        rows_inserted BIGINT NOT NULL,
        rows_duplicate BIGINT NOT NULL,
        error TEXT,
        duplicate_of TEXT,
        sheet_name TEXT,
        run_id TEXT,
        started_at TIMESTAMP WITH TIME ZONE NOT NULL,
        finished_at TIMESTAMP WITH TIME ZONE NOT NULL,
        rows_deleted BIGINT NOT NULL,
        replaced_import_id BIGINT,
        source TEXT,
        modified_at TIMESTAMP WITH TIME ZONE,
        rows_held BIGINT NOT NULL DEFAULT 0,
        read_as TEXT
    )""",
        # Ledgers written before these columns existed get them.
        f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN IF NOT EXISTS source TEXT",
        f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN IF NOT EXISTS modified_at TIMESTAMP WITH TIME ZONE",
        f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN IF NOT EXISTS rows_held BIGINT DEFAULT 0",
        f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN IF NOT EXISTS read_as TEXT",
        f"CREATE TABLE IF NOT EXISTS {TABLE_SETTINGS_TABLE} (table_name TEXT {key}, prefer TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {ROW_KEY_VERSIONS_TABLE} "
        f"(table_name TEXT {key}, version INTEGER NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {SCHEMA_CHANGES_TABLE} (
        id BIGINT {key},
        import_id BIGINT NOT NULL,
        table_name TEXT NOT NULL,
        change_type TEXT NOT NULL,
        column_name TEXT,
        old_type TEXT,
        new_type TEXT,
        source_file TEXT NOT NULL,
        run_id TEXT,
        changed_at TIMESTAMP WITH TIME ZONE NOT NULL
    )""",
    ]
    if not indexed:
        return tables
    sequences = [
        f"CREATE SEQUENCE IF NOT EXISTS {name}_id_seq" for name in (LEDGER_TABLE, SCHEMA_CHANGES_TABLE)
    ]
    # One for every kind of look-up the import and status paths make, so that their cost does
    # not grow with the ledger's history. Ledgers made before an index get it on open.
    indexes = [
        # Every ownership decision: the import that supplies a row.
        f"CREATE INDEX IF NOT EXISTS {LEDGER_TABLE}_file ON {LEDGER_TABLE} (table_name, source_file_id)",
        # Every import: the file's earlier imports (``holding_imports``).
        f"CREATE INDEX IF NOT EXISTS {LEDGER_TABLE}_file_id ON {LEDGER_TABLE} (source_file_id)",
        # Whether others hold rows of a table; a table's last failure (``report``).
        f"CREATE INDEX IF NOT EXISTS {LEDGER_TABLE}_table_status ON {LEDGER_TABLE} (table_name, status)",
        # Every sync: the files of a source that are loaded (``live_file_ids``).
        f"CREATE INDEX IF NOT EXISTS {LEDGER_TABLE}_source "
        f"ON {LEDGER_TABLE} (source, status, source_file_id)",
    ]
    return sequences + tables + indexes


def _in_schema(schema: str | None, placeholder: str) -> str:
    """The information_schema condition for ``schema`` (a parameter) or the current schema, of
    the warehouse's own catalog: a DuckDB session also lists its temporary tables there."""
    named = f"table_schema = {placeholder}" if schema else "table_schema = current_schema()"
    return f"table_catalog = current_database() AND {named}"


def first_line(error: BaseException) -> str:
    """A driver's message without the context lines (hints, the statement) that follow it."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


class Warehouse(ABC):
    """A database the importer loads into. Use as a context manager to close it.

    Every primitive that talks to the driver raises the engine's typed errors, never the
    driver's own (``translated``): ``DataRefusedError`` when the database refused one file's
    data or DDL, ``WarehouseError`` for a system fault, which stops the run.
    """

    #: The database's name in messages.
    name: ClassVar[str]
    #: The parameter placeholder of the driver.
    placeholder: ClassVar[str]
    #: The base class of everything the driver raises.
    driver_error: ClassVar[type[Exception]]
    #: The most columns a table may have, pgdatahub's own included (``None``: no limit a
    #: spreadsheet could reach).
    max_columns: ClassVar[int | None] = None
    #: Whether the database has unique indexes and sequences. DuckLake has neither: row keys
    #: are kept unique by ``insert_new_keys`` and a check before commit, ids come from the clock.
    has_indexes: ClassVar[bool] = True

    def __init__(self, display_url: str) -> None:
        #: The URL without its password, for logs and metadata.
        self.display_url = display_url
        self._creating: str | None = None
        #: Tables created (or emptied, ``empty_for_reload``) by the running transaction, still
        #: without their unique index, with the keys loaded into them so far. Such a table
        #: holds nothing but this transaction's rows, so filtering by these keys gives exactly
        #: the rows the index would let in; the index built before commit still enforces
        #: uniqueness.
        self._fresh: dict[str, SeenKeys] = {}
        #: Of those, the ones past ``FRESH_TABLE_MAX_KEYS``: their keys, in fixed memory.
        self._filters: dict[str, KeyFilter] = {}
        #: Of those, the ones with undecided rows: how many were set aside so far.
        self._undecided: dict[str, int] = {}

    # -- primitives every database implements -------------------------------------------

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count where the driver knows it."""

    @abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""

    @abstractmethod
    def quote(self, identifier: str) -> str:
        """Quote an identifier with the driver's own quoting."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Everything inside commits together or not at all."""

    @abstractmethod
    def insert_fresh(
        self, table: str, frame: pl.DataFrame, lineage: Lineage, undecided: pl.DataFrame | None = None
    ) -> int:
        """Bulk-insert rows with keys new to ``table``, a table this transaction created or
        emptied and has not indexed yet (``load_fresh``), and the ``undecided`` rows, if any
        (user columns, ``_row_key`` and ``UNDECIDED_POSITION``), into its table of undecided
        rows (``undecided_table``); returns the number inserted into ``table``."""

    @abstractmethod
    def empty_for_reload(self, table: str) -> int:
        """Delete every row of ``table``, whose rows nobody holds any more, and let the rows
        this transaction loads next take the fast path of a new table (``_fresh``); returns
        the rows deleted. Readers see the old rows until commit (on PostgreSQL they wait for
        the index to be rebuilt, as for any schema change)."""

    @abstractmethod
    def staged(self, frame: pl.DataFrame, types: Mapping[str, SqlType]) -> AbstractContextManager[str]:
        """``frame`` (user columns and ``_row_key``) as the temporary table ``STAGE_TABLE``
        for the duration of the context; yields its name."""

    @abstractmethod
    def analyze(self, table: str, columns: Sequence[str] = ()) -> None:
        """Give the planner the size of a temporary table just filled (and the statistics of
        ``columns``, by default all), where it needs that to join it by index instead of
        scanning the other side."""

    @abstractmethod
    def index_holders(self, holders: str, table: str) -> None:
        """Index a new holders table (``holders`` is its quoted, qualified name) where the
        database needs indexes to find a key's holders and an import's keys."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _in_outer_transaction(self) -> bool:
        """Whether the outermost transaction is open (not a savepoint, not autocommit):
        only then may a new table's index wait until just before commit."""

    @abstractmethod
    def lock(self, name: str) -> None:
        """Serialise writers of ``name`` until the transaction ends."""

    @abstractmethod
    def classify(self, error: Exception) -> PgDataHubError:
        """The engine's error for one of the driver's: ``refused`` if the database refused the
        data or schema of the file being imported (a value it cannot store, a limit the file
        exceeds), else a ``system_fault`` (a lost connection, a full disk, a permission)."""

    # -- errors ----------------------------------------------------------------------------

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Driver errors raised inside leave as the engine's typed errors (``classify``)."""
        try:
            yield
        except self.driver_error as error:
            raise self.classify(error) from error

    def refused(self, error: Exception) -> DataRefusedError:
        return DataRefusedError(f"{self.name} refused the data: {first_line(error)}")

    def system_fault(self, what: str, error: Exception) -> WarehouseError:
        return WarehouseError(f"warehouse {self.display_url}: {what}: {first_line(error)}")

    # -- shared SQL ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_transaction(self, work: Callable[[], T]) -> T:
        """``work()`` in one transaction. A transaction whose commit lost a race with another
        writer (``CommitConflict``: DuckLake's optimistic commits) runs again from the start,
        as it would have run after the other writer, up to ``COMMIT_ATTEMPTS`` times."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self.transaction():
                    return work()
            except CommitConflict as conflict:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.info(
                    "%s; commit conflict: running the transaction again (attempt %d)", conflict, attempt + 1
                )
                time.sleep(COMMIT_RETRY_SECONDS * attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def snapshots(self, limit: int) -> list[Snapshot]:
        """The latest ``limit`` snapshots, newest first; none where the database keeps no
        versions (PostgreSQL, DuckDB)."""
        return []

    def compact(self, expire_older_than: timedelta) -> str:
        """Merge small data files, forget snapshots older than ``expire_older_than`` and
        delete the files only they used; says what it did. The databases that keep no
        snapshots or small files have nothing to do."""
        return f"{self.name} keeps no snapshots or small files: nothing to compact"

    def ensure_ledger(self) -> None:
        def create() -> None:
            self.lock(LEDGER_TABLE)
            for statement in _ledger_ddl(self.has_indexes):
                self.execute(statement)

        self.run_transaction(create)

    def next_id(self, table: str) -> int:
        """A new id for a row of ``table`` (the ledger, the audit of schema changes)."""
        return int(self.fetchall(f"SELECT nextval('{table}_id_seq')")[0][0])

    def next_import_id(self) -> int:
        return self.next_id(LEDGER_TABLE)

    def upsert(self, table: str, key: str, row: Mapping[str, Any]) -> None:
        """Insert ``row`` into ``table``, or replace the row with the same ``key`` (a column
        with a unique index)."""
        names = list(row)
        values = ", ".join([self.placeholder] * len(names))
        updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != key)
        self.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({values}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}",
            list(row.values()),
        )

    def insert_new_keys(self, table: str, columns: str, values: str, source: str) -> str:
        """The statement ``INSERT INTO table (columns) SELECT values FROM source``, leaving
        out the rows whose ``_row_key`` the table holds already (rows without a key all go
        in): here by the table's unique index. ``source`` is a table or a parenthesised
        query, named ``s`` in the statement."""
        return (
            f"INSERT INTO {table} ({columns}) SELECT {values} FROM {source} AS s "
            f"ON CONFLICT ({self.quote(ROW_KEY_COLUMN)}) DO NOTHING"
        )

    def _columns(self, table: str, schema: str | None = None) -> list[tuple[str, str]]:
        p = self.placeholder
        where = _in_schema(schema, p)
        return [
            (str(name), str(kind))
            for name, kind in self.fetchall(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE {where} AND table_name = {p} ORDER BY ordinal_position",
                (schema, table) if schema else (table,),
            )
        ]

    def table_exists(self, table: str, schema: str | None = None) -> bool:
        p = self.placeholder
        where = _in_schema(schema, p)
        rows = self.fetchall(
            f"SELECT 1 FROM information_schema.tables WHERE {where} AND table_name = {p}",
            (schema, table) if schema else (table,),
        )
        return bool(rows)

    def table_names(self, schema: str | None = None) -> set[str]:
        """Every table in ``schema`` (by default the current one)."""
        p = self.placeholder
        rows = self.fetchall(
            f"SELECT table_name FROM information_schema.tables WHERE {_in_schema(schema, p)}",
            (schema,) if schema else (),
        )
        return {str(name) for (name,) in rows}

    def count(self, table: str) -> int:
        return int(self.fetchall(f"SELECT count(*) FROM {self.quote(table)}")[0][0])

    def holders_table(self, table: str) -> str | None:
        """The quoted name of ``table``'s holders table, if it has one."""
        if not self.table_exists(table, schema=HOLDERS_SCHEMA):
            return None
        return f"{self.quote(HOLDERS_SCHEMA)}.{self.quote(table)}"

    def column_names(self, table: str, schema: str | None = None) -> list[str]:
        """Every column of ``table`` (in ``schema``, by default the current one), lineage
        included, in order."""
        return [name for name, _ in self._columns(table, schema)]

    def column_types(self, table: str) -> list[tuple[str, str]]:
        """Every column of ``table`` with its type as the database names it, lineage and row
        key included, in order; empty when the table does not exist."""
        return self._columns(table)

    def table_columns(self, table: str) -> dict[str, SqlType] | None:
        """The user columns of ``table`` and their types; ``None`` when it does not exist."""
        rows = self._columns(table)
        if not rows:
            return None
        return {name: sql_type_named(kind) for name, kind in rows if name not in SYSTEM_COLUMNS}

    def row_key_index_name(self, table: str) -> str:
        # Index names share the schema's namespace and PostgreSQL's 63-byte limit.
        digest = hashlib.sha256(table.encode()).hexdigest()[:8]
        return f"{table[:40]}_row_key_{digest}"

    def _create_table(self, table: str, columns: Mapping[str, SqlType]) -> None:
        definitions = [f"{self.quote(name)} {kind.value}" for name, kind in columns.items()]
        definitions += [f"{self.quote(name)} {kind}" for name, kind in LINEAGE_COLUMNS.items()]
        definitions.append(f"{self.quote(ROW_KEY_COLUMN)} UUID")
        self.execute(f"CREATE TABLE {self.quote(table)} ({', '.join(definitions)})")
        self._creating = table if self._in_outer_transaction() else None
        try:
            self.create_row_key_index(table)
        finally:
            self._creating = None

    def create_row_key_index(self, table: str) -> None:
        """Build the unique index now, or, for a table the running transaction is creating,
        just before commit (``build_deferred_indexes``)."""
        if table == self._creating:
            self._index_at_commit(table)
            return
        if table in self._undecided:
            # An index built now would leave them out: fail the file rather than lose rows.
            raise RuntimeError(f"{table}: undecided rows were never settled (settle_fresh)")
        self._filters.pop(table, None)
        if self._fresh.pop(table, None) is not None:
            self._before_deferred_index(table)
        if self.has_indexes:
            index = self.quote(self.row_key_index_name(table))
            self.execute(f"CREATE UNIQUE INDEX {index} ON {self.quote(table)} ({self.quote(ROW_KEY_COLUMN)})")

    def _index_at_commit(self, table: str) -> None:
        """Leave ``table``, which holds only this transaction's rows, without its unique index
        until just before commit: its rows load by the fast path meanwhile."""
        self._fresh[table] = SeenKeys()

    @abstractmethod
    def _before_deferred_index(self, table: str) -> None:
        """Undo whatever the fast path set up on a new table, before its index is built."""

    def build_deferred_indexes(self) -> None:
        """Before commit: the tables this transaction created get their unique index."""
        for table in list(self._fresh):
            self.create_row_key_index(table)

    def _forget_fresh(self) -> None:
        """When the outer transaction ends: no table is new to the next one."""
        self._fresh.clear()
        self._filters.clear()
        self._undecided.clear()

    def load_fresh(self, table: str, frame: pl.DataFrame, lineage: Lineage) -> int | None:
        """Load a batch into a table this transaction created or emptied and has not indexed
        yet: the rows whose key it does not hold yet go in (``insert_fresh``); returns how
        many, or ``None`` when rows must go in against the table's index instead (it has one).
        Past ``FRESH_TABLE_MAX_KEYS`` (``_past_key_bound``) the rows the key filter cannot
        call new are set aside for ``settle_fresh``."""
        seen = self._fresh.get(table)
        if seen is None:
            return None
        keys = self._filters.get(table)
        if keys is None and len(seen) + frame.height > FRESH_TABLE_MAX_KEYS:
            keys = self._past_key_bound(table)
        if keys is None:
            first, undecided_rows = seen.admit(frame[ROW_KEY_COLUMN]), None
        else:
            first, undecided_rows = keys.admit(frame[ROW_KEY_COLUMN])
        if undecided_rows is None or not bool(undecided_rows.any()):
            rows = frame if bool(first.all()) else frame.filter(first)
            return self.insert_fresh(table, rows, lineage) if rows.height else 0
        undecided = frame.filter(undecided_rows)
        if table not in self._undecided:
            self._create_undecided(table)
            self._undecided[table] = 0
        start = self._undecided[table]
        self._undecided[table] += undecided.height
        positioned = undecided.with_row_index(UNDECIDED_POSITION, offset=start)
        return self.insert_fresh(table, frame.filter(first), lineage, undecided=positioned)

    def _past_key_bound(self, table: str) -> KeyFilter:
        """A new table's keys pass ``FRESH_TABLE_MAX_KEYS``: the exact keys move into a filter
        of fixed size, which holds the recent ones exactly, and the table still waits for its
        index."""
        keys = self._filters[table] = KeyFilter(KEY_FILTER_BITS, self._fresh[table], RECENT_KEYS)
        self._fresh[table] = SeenKeys()
        return keys

    def settle_fresh(self, table: str, lineage: Lineage) -> int:
        """After the last batch of a file into ``table``: the rows ``load_fresh`` could not
        decide yet go in where they are the first with their key; returns how many. The
        table gets its index first: every row in it is the first with its key, so the index
        holds, and the undecided rows go in against it (``insert_new_keys``), an index probe
        each, where a statement finding them by a pass over the whole table cost more than
        the rest of a 5,000,000-row file's settle (docs/benchmarks.md, *Issue 12, recent keys
        held exactly*)."""
        if self._undecided.pop(table, None) is None:
            return 0
        q, p = self.quote, self.placeholder
        undecided, key = q(self.undecided_table(table)), q(ROW_KEY_COLUMN)
        self.create_row_key_index(table)
        # The undecided table has the table's user columns (``apply_schema_changes``).
        columns = ", ".join([q(name) for name in self.table_columns(table) or {}] + [key])
        lineage_columns = ", ".join(q(name) for name in LINEAGE_COLUMNS)
        first_rows = (
            f"(SELECT DISTINCT ON ({key}) {columns} FROM {undecided} ORDER BY {key}, {q(UNDECIDED_POSITION)})"
        )
        inserted = self.execute(
            self.insert_new_keys(
                q(table), f"{columns}, {lineage_columns}", f"{columns}, {p}, {p}, {p}, {p}", first_rows
            ),
            (lineage.source_file, lineage.source_file_id, lineage.file_sha256, lineage.load_timestamp),
        )
        self.execute(f"DROP TABLE {undecided}")
        return max(inserted, 0)

    def undecided_table(self, table: str) -> str:
        """The temporary table of ``table``'s undecided rows: named after the table, within
        63 bytes."""
        return f"{ENGINE_PREFIX}undecided_{hashlib.sha256(table.encode()).hexdigest()[:8]}"

    def _create_undecided(self, table: str) -> None:
        q = self.quote
        columns = [f"{q(name)} {kind.value}" for name, kind in (self.table_columns(table) or {}).items()]
        columns += [f"{q(ROW_KEY_COLUMN)} UUID", f"{q(UNDECIDED_POSITION)} BIGINT"]
        self.execute(f"CREATE TEMPORARY TABLE {q(self.undecided_table(table))} ({', '.join(columns)})")

    def cast_sql(self, column_sql: str, old_type: SqlType, new_type: SqlType) -> str:
        """The SQL that converts a column's existing values when it widens."""
        return f"{column_sql}::{new_type.value}"

    def drop_column(self, table: str, column: str) -> None:
        self.execute(f"ALTER TABLE {self.quote(table)} DROP COLUMN {self.quote(column)}")
        self.drop_holders_column(table, column)

    def drop_holders_column(self, table: str, column: str) -> None:
        holders = self.holders_table(table)
        if holders is not None:
            self.execute(f"ALTER TABLE {holders} DROP COLUMN {self.quote(column)}")

    def _check_column_limit(self, table: str, changes: Sequence[SchemaChange], creating: bool) -> None:
        """Refuse, with the numbers, a file that needs more columns than a table may have."""
        added = sum(change.change_type == "add_column" for change in changes)
        if self.max_columns is None or added == 0:
            return
        columns = added + (0 if creating else len(self.table_columns(table) or {}))
        if columns + len(SYSTEM_COLUMNS) <= self.max_columns:
            return
        limit = (
            f"{self.name} allows at most {self.max_columns:,} per table, {len(SYSTEM_COLUMNS)} of "
            f"which pgdatahub uses for lineage and the row key"
        )
        if creating:
            raise DataRefusedError(
                f"has {columns:,} columns; {limit}: split it into files of at most "
                f"{self.max_columns - len(SYSTEM_COLUMNS):,} columns"
            )
        raise DataRefusedError(
            f"would give table {table} {columns:,} columns ({added:,} of them new); {limit}"
        )

    def apply_schema_changes(self, table: str, changes: Sequence[SchemaChange]) -> None:
        creating = [c for c in changes if c.change_type == "create_table"]
        self._check_column_limit(table, changes, creating=bool(creating))
        if creating:
            self._create_table(
                table, {c.column_name: c.new_type for c in changes if c.column_name and c.new_type}
            )
            self._record_row_key_version(table, ROW_KEY_VERSION)
            return
        self._change_columns(table, changes)
        # The undecided rows keep the table's columns, converted as the table's rows were.
        if table in self._undecided:
            self._alter(self.quote(self.undecided_table(table)), changes)

    def _change_columns(self, table: str, changes: Sequence[SchemaChange]) -> None:
        """Add and widen columns of an existing data table and of its holders table."""
        # The holders table keeps the data table's user columns, so that a holder's own
        # values can always take the row's place.
        for target in filter(None, (self.quote(table), self.holders_table(table))):
            self._alter(target, changes)

    def _alter(self, target: str, changes: Sequence[SchemaChange]) -> None:
        """Add and widen columns of ``target`` (a quoted table name) in place."""
        for change in changes:
            assert change.column_name is not None and change.new_type is not None
            column = self.quote(change.column_name)
            if change.change_type == "add_column":
                self.execute(f"ALTER TABLE {target} ADD COLUMN {column} {change.new_type.value}")
            else:
                assert change.old_type is not None
                self.execute(
                    f"ALTER TABLE {target} ALTER COLUMN {column} TYPE {change.new_type.value} "
                    f"USING {self.cast_sql(column, change.old_type, change.new_type)}"
                )

    def record_schema_changes(
        self,
        import_id: int,
        table: str,
        changes: Sequence[SchemaChange],
        source_file: str,
        run_id: str | None,
        changed_at: datetime,
    ) -> None:
        values = ", ".join([self.placeholder] * 10)
        for change in changes:
            self.execute(
                f"INSERT INTO {SCHEMA_CHANGES_TABLE} (id, import_id, table_name, change_type, column_name, "
                f"old_type, new_type, source_file, run_id, changed_at) VALUES ({values})",
                (
                    self.next_id(SCHEMA_CHANGES_TABLE),
                    import_id,
                    table,
                    change.change_type,
                    change.column_name,
                    change.old_type.value if change.old_type else None,
                    change.new_type.value if change.new_type else None,
                    source_file,
                    run_id,
                    changed_at,
                ),
            )

    def record_import(self, record: ImportRecord) -> None:
        names = [field.name for field in fields(ImportRecord)]
        values = ", ".join([self.placeholder] * len(names))
        self.execute(f"INSERT INTO {LEDGER_TABLE} ({', '.join(names)}) VALUES ({values})", astuple(record))

    def update_import(self, record: ImportRecord) -> None:
        """Rewrite a ledger row written earlier in the same transaction (its counts)."""
        names = [field.name for field in fields(ImportRecord) if field.name != "id"]
        p = self.placeholder
        assignments = ", ".join(f"{name} = {p}" for name in names)
        values = [getattr(record, name) for name in names]
        self.execute(f"UPDATE {LEDGER_TABLE} SET {assignments} WHERE id = {p}", [*values, record.id])

    def holding_imports(self, source_file_id: str) -> list[HoldingImport]:
        """The imports of a file that hold rows now, in every table, oldest first."""
        p = self.placeholder
        rows = self.fetchall(
            "SELECT id, table_name, source_file, file_sha256, status, modified_at, read_as "
            f"FROM {LEDGER_TABLE} WHERE source_file_id = {p} AND status IN {HOLDING_SQL} ORDER BY id",
            (source_file_id,),
        )
        return [
            HoldingImport(int(r[0]), str(r[1]), str(r[2]), source_file_id, str(r[3]), str(r[4]), r[5], r[6])
            for r in rows
        ]

    def live_file_ids(self, source: str) -> set[str]:
        """Every file of one source whose rows are loaded and which was not deleted since."""
        p = self.placeholder
        rows = self.fetchall(
            f"SELECT DISTINCT source_file_id FROM {LEDGER_TABLE} WHERE source = {p} AND status = 'success'",
            (source,),
        )
        return {str(row[0]) for row in rows}

    def set_rank(
        self, import_id: int, status: str, source_file: str, modified_at: datetime | None, read_as: str | None
    ) -> None:
        """What ranks an import among the holders of its keys (live or kept, path, time), and
        the settings it was read under."""
        p = self.placeholder
        self.execute(
            f"UPDATE {LEDGER_TABLE} SET status = {p}, source_file = {p}, modified_at = {p}, read_as = {p} "
            f"WHERE id = {p}",
            (status, source_file, modified_at, read_as, import_id),
        )

    def decided_prefer(self, table: str) -> str | None:
        """The ``prefer`` the table's shared keys were last decided by; ``None`` if unknown."""
        rows = self.fetchall(
            f"SELECT prefer FROM {TABLE_SETTINGS_TABLE} WHERE table_name = {self.placeholder}", (table,)
        )
        return str(rows[0][0]) if rows else None

    def record_prefer(self, table: str, prefer: str) -> None:
        p = self.placeholder
        self.execute(f"DELETE FROM {TABLE_SETTINGS_TABLE} WHERE table_name = {p}", (table,))
        self.execute(
            f"INSERT INTO {TABLE_SETTINGS_TABLE} (table_name, prefer) VALUES ({p}, {p})", (table, prefer)
        )

    def row_key_version(self, table: str) -> int:
        """How the row keys of ``table`` are made (``dedup.keys.ROW_KEY_VERSIONS``): as its
        existing rows' keys were, so that old and new rows compare; a table yet to be created
        gets today's version."""
        if not self.table_exists(table):
            return ROW_KEY_VERSION
        rows = self.fetchall(
            f"SELECT version FROM {ROW_KEY_VERSIONS_TABLE} WHERE table_name = {self.placeholder}", (table,)
        )
        return int(rows[0][0]) if rows else LEGACY_ROW_KEY_VERSION

    def _record_row_key_version(self, table: str, version: int) -> None:
        p = self.placeholder
        # A record left by an earlier table of the same name (dropped since) is replaced.
        self.execute(f"DELETE FROM {ROW_KEY_VERSIONS_TABLE} WHERE table_name = {p}", (table,))
        self.execute(
            f"INSERT INTO {ROW_KEY_VERSIONS_TABLE} (table_name, version) VALUES ({p}, {p})", (table, version)
        )

    def ledger(self) -> Iterator[dict[str, Any]]:
        """Every ledger row, oldest first."""
        names = [field.name for field in fields(ImportRecord)]
        for row in self.fetchall(f"SELECT {', '.join(names)} FROM {LEDGER_TABLE} ORDER BY id"):
            yield dict(zip(names, row, strict=True))
