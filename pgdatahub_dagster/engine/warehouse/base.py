"""The warehouse interface, with the SQL that PostgreSQL and DuckDB share.

Subclasses supply the connection primitives (execute, quoting, transactions, bulk load);
everything else — the ledger, the audit of schema changes, DDL — is written once here in
SQL both databases accept.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Self

import polars as pl

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN, SeenKeys
from pgdatahub_dagster.engine.errors import PgDataHubError
from pgdatahub_dagster.engine.schema.evolve import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType

LEDGER_TABLE = "etl_imports"
SCHEMA_CHANGES_TABLE = "etl_schema_changes"
LOADED_FILES_TABLE = "etl_loaded_files"

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
# keys remembered in memory) for this many keyed rows, 16 bytes each (16 MiB). Past that
# its index is built and the rest of the file goes in with ON CONFLICT, so memory stays
# flat however large the file.
FRESH_TABLE_MAX_KEYS = 1_000_000


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


class ContentAlreadyLoaded(PgDataHubError):
    """Another import committed the same content into the same table first."""


@dataclass(frozen=True)
class Lineage:
    source_file: str
    source_file_id: str
    file_sha256: str
    load_timestamp: datetime


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


#: Ledger statuses. Only ``success`` rows hold rows in the tables: ``replaced``, ``reverted``
#: and ``retracted`` imports had their rows removed later; ``deleted`` and ``retracted``
#: rows record a file's disappearance.
LEDGER_STATUSES = ("success", "skipped", "failed", "replaced", "reverted", "deleted", "retracted")

_LEDGER_DDL = (
    f"CREATE SEQUENCE IF NOT EXISTS {LEDGER_TABLE}_id_seq",
    f"""CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
        id BIGINT PRIMARY KEY,
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
        replaced_import_id BIGINT
    )""",
    # One row per (table, content) ever committed: the database, not Python, guarantees
    # that the same bytes never load twice into a table, even from concurrent runs.
    f"""CREATE TABLE IF NOT EXISTS {LOADED_FILES_TABLE} (
        table_name TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        import_id BIGINT NOT NULL,
        source_file TEXT NOT NULL,
        PRIMARY KEY (table_name, file_sha256)
    )""",
    f"CREATE SEQUENCE IF NOT EXISTS {SCHEMA_CHANGES_TABLE}_id_seq",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA_CHANGES_TABLE} (
        id BIGINT PRIMARY KEY DEFAULT nextval('{SCHEMA_CHANGES_TABLE}_id_seq'),
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
)


class Warehouse(ABC):
    """A database the importer loads into. Use as a context manager to close it."""

    #: The parameter placeholder of the driver.
    placeholder: ClassVar[str]
    #: The driver's exception for a violated unique constraint.
    unique_violation: ClassVar[tuple[type[Exception], ...]]
    #: Driver exceptions that mean the database refused one file's data or DDL (as
    #: opposed to a lost connection), so that file fails and the others go on.
    data_errors: ClassVar[tuple[type[Exception], ...]]

    def __init__(self, display_url: str) -> None:
        #: The URL without its password, for logs and metadata.
        self.display_url = display_url
        self._creating: str | None = None
        #: Tables created by the running transaction, still without their unique index,
        #: with the keys loaded into them so far. Such a table held nothing before this
        #: transaction, so filtering by these keys gives exactly the rows the index would
        #: let in; the index built before commit still enforces uniqueness.
        self._fresh: dict[str, SeenKeys] = {}

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
    def insert_new_rows(
        self, table: str, frame: pl.DataFrame, types: Mapping[str, SqlType], lineage: Lineage
    ) -> int:
        """Bulk-insert ``frame`` (user columns and ``_row_key``) into ``table``, skipping
        rows whose key the table already holds; returns the number inserted."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _in_outer_transaction(self) -> bool:
        """Whether the outermost transaction is open (not a savepoint, not autocommit):
        only then may a new table's index wait until just before commit."""

    @abstractmethod
    def lock(self, name: str) -> None:
        """Serialise writers of ``name`` until the transaction ends."""

    # -- shared SQL ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_ledger(self) -> None:
        with self.transaction():
            self.lock(LEDGER_TABLE)
            for statement in _LEDGER_DDL:
                self.execute(statement)

    def next_import_id(self) -> int:
        return int(self.fetchall(f"SELECT nextval('{LEDGER_TABLE}_id_seq')")[0][0])

    def _columns(self, table: str) -> list[tuple[str, str]]:
        return [
            (str(name), str(kind))
            for name, kind in self.fetchall(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = current_schema() AND table_name = {self.placeholder} "
                "ORDER BY ordinal_position",
                (table,),
            )
        ]

    def column_names(self, table: str) -> list[str]:
        """Every column of ``table``, lineage included, in order."""
        return [name for name, _ in self._columns(table)]

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
            self._fresh[table] = SeenKeys()
            return
        if self._fresh.pop(table, None) is not None:
            self._before_deferred_index(table)
        index = self.quote(self.row_key_index_name(table))
        self.execute(f"CREATE UNIQUE INDEX {index} ON {self.quote(table)} ({self.quote(ROW_KEY_COLUMN)})")

    @abstractmethod
    def _before_deferred_index(self, table: str) -> None:
        """Undo whatever the fast path set up on a new table, before its index is built."""

    def build_deferred_indexes(self) -> None:
        """Before commit: the tables this transaction created get their unique index."""
        for table in list(self._fresh):
            self.create_row_key_index(table)

    def new_rows_for_fresh_table(self, table: str, frame: pl.DataFrame) -> pl.DataFrame | None:
        """For a table this transaction created, the rows of ``frame`` whose key it does not
        hold yet; ``None`` when rows must go in against the table's index instead (it has one,
        or it gets one now because the keys to remember would pass the memory bound)."""
        seen = self._fresh.get(table)
        if seen is None:
            return None
        if len(seen) + frame.height > FRESH_TABLE_MAX_KEYS:
            self.create_row_key_index(table)
            return None
        new = seen.admit(frame[ROW_KEY_COLUMN])
        return frame if bool(new.all()) else frame.filter(new)

    def cast_sql(self, column_sql: str, old_type: SqlType, new_type: SqlType) -> str:
        """The SQL that converts a column's existing values when it widens."""
        return f"{column_sql}::{new_type.value}"

    def alter_column_type(self, table: str, column: str, old_type: SqlType, new_type: SqlType) -> None:
        quoted = self.quote(column)
        self.execute(
            f"ALTER TABLE {self.quote(table)} ALTER COLUMN {quoted} TYPE {new_type.value} "
            f"USING {self.cast_sql(quoted, old_type, new_type)}"
        )

    def drop_column(self, table: str, column: str) -> None:
        self.execute(f"ALTER TABLE {self.quote(table)} DROP COLUMN {self.quote(column)}")

    def apply_schema_changes(self, table: str, changes: Sequence[SchemaChange]) -> None:
        creating = [c for c in changes if c.change_type == "create_table"]
        if creating:
            self._create_table(
                table, {c.column_name: c.new_type for c in changes if c.column_name and c.new_type}
            )
            return
        for change in changes:
            assert change.column_name is not None and change.new_type is not None
            if change.change_type == "add_column":
                column = self.quote(change.column_name)
                self.execute(f"ALTER TABLE {self.quote(table)} ADD COLUMN {column} {change.new_type.value}")
            else:
                assert change.old_type is not None
                self.alter_column_type(table, change.column_name, change.old_type, change.new_type)

    def record_schema_changes(
        self,
        import_id: int,
        table: str,
        changes: Sequence[SchemaChange],
        source_file: str,
        run_id: str | None,
        changed_at: datetime,
    ) -> None:
        values = ", ".join([self.placeholder] * 9)
        for change in changes:
            self.execute(
                f"INSERT INTO {SCHEMA_CHANGES_TABLE} (import_id, table_name, change_type, column_name, "
                f"old_type, new_type, source_file, run_id, changed_at) VALUES ({values})",
                (
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

    def find_loaded(self, table: str, file_sha256: str) -> str | None:
        """The source file under which this content was already loaded into ``table``."""
        p = self.placeholder
        rows = self.fetchall(
            f"SELECT source_file FROM {LOADED_FILES_TABLE} WHERE table_name = {p} AND file_sha256 = {p}",
            (table, file_sha256),
        )
        return str(rows[0][0]) if rows else None

    def claim_content(self, table: str, file_sha256: str, import_id: int, source_file: str) -> None:
        """Mark the content as loaded into ``table``; raises ``ContentAlreadyLoaded`` when a
        concurrent import got there first."""
        p = self.placeholder
        try:
            self.execute(
                f"INSERT INTO {LOADED_FILES_TABLE} (table_name, file_sha256, import_id, source_file) "
                f"VALUES ({p}, {p}, {p}, {p})",
                (table, file_sha256, import_id, source_file),
            )
        except self.unique_violation as error:
            raise ContentAlreadyLoaded(f"{source_file}: already loaded into {table}") from error

    def record_import(self, record: ImportRecord) -> None:
        names = [field.name for field in fields(ImportRecord)]
        values = ", ".join([self.placeholder] * len(names))
        self.execute(f"INSERT INTO {LEDGER_TABLE} ({', '.join(names)}) VALUES ({values})", astuple(record))

    def successful_imports(self, table: str, source_file_id: str) -> list[int]:
        """Ids of the imports whose rows of this file are in ``table`` now."""
        p = self.placeholder
        rows = self.fetchall(
            f"SELECT id FROM {LEDGER_TABLE} WHERE table_name = {p} AND source_file_id = {p} "
            "AND status = 'success' ORDER BY id",
            (table, source_file_id),
        )
        return [int(row[0]) for row in rows]

    def delete_file_rows(self, table: str, source_file_id: str, file_sha256: str | None = None) -> int:
        """Delete a file's rows (of one version, given its sha256); returns how many."""
        p = self.placeholder
        where, params = f"source_file_id = {p}", [source_file_id]
        if file_sha256 is not None:
            where, params = where + f" AND file_sha256 = {p}", [source_file_id, file_sha256]
        return max(self.execute(f"DELETE FROM {self.quote(table)} WHERE {where}", params), 0)

    def retire_imports(self, import_ids: Sequence[int], status: str) -> None:
        """Mark imports whose rows were removed, and release their content, so the same
        bytes can be imported again later."""
        assert status in LEDGER_STATUSES
        p = self.placeholder
        for import_id in import_ids:
            self.execute(f"UPDATE {LEDGER_TABLE} SET status = {p} WHERE id = {p}", (status, import_id))
            self.execute(f"DELETE FROM {LOADED_FILES_TABLE} WHERE import_id = {p}", (import_id,))

    def ledger(self) -> Iterator[dict[str, Any]]:
        """Every ledger row, oldest first."""
        names = [field.name for field in fields(ImportRecord)]
        for row in self.fetchall(f"SELECT {', '.join(names)} FROM {LEDGER_TABLE} ORDER BY id"):
            yield dict(zip(names, row, strict=True))
