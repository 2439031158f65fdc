"""DuckDB, the embedded default; rows arrive as Arrow.

Into an existing table a batch is staged as a temporary table and merged by the shared SQL
of ``ownership.py``, against the table's unique ``_row_key`` index. A table this very
transaction created has no index until just before commit: its rows are inserted plainly,
filtered by the keys this transaction already put in it (``SeenKeys``), which gives the
same rows and counts at a fraction of the cost; the index built at the end still enforces
uniqueness. Past ``FRESH_TABLE_MAX_KEYS`` keys it stays on that path with a key filter of
fixed size and a temporary table of undecided rows (``Warehouse.load_fresh``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN
from pgdatahub_dagster.engine.errors import PgDataHubError, WarehouseError, WarehouseNotCreatedError
from pgdatahub_dagster.engine.schema.evolve import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.warehouse.base import (
    HOLDERS_SCHEMA,
    LINEAGE_COLUMNS,
    STAGE_TABLE,
    BackgroundLoad,
    Lineage,
    Warehouse,
)

T = TypeVar("T")

# Each batch's Arrow table, by the name of the local that holds it in `_with_arrow` (a name
# under ENGINE_PREFIX, which no table from user data takes).
_ARROW_TABLE = "pgdatahub_arrow"
#: DuckDB's row group. A new table's slices are gathered and inserted in whole row groups:
#: an insert of whole row groups is written to the file as it runs, where smaller inserts
#: wait in the transaction's local storage for the commit, and an insert that ends in part
#: of a row group leaves it for the next checkpoint to rewrite. 940,000 rows in inserts of
#: 25,000: 4.9-5.5 s with commit and close; of 140,000: 6.3-7.0 s; of 122,880: 4.3-4.4 s.
_ROW_GROUP_ROWS = 122_880


def open_waiting(open_database: Callable[[], T], what: str, display_url: str, wait_seconds: float) -> T:
    """DuckDB lets one process write a database file: processes started together take
    turns, each waiting up to ``wait_seconds`` for the file's lock."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return open_database()
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise WarehouseError(f"cannot open {what} {display_url}: {error}") from None
            time.sleep(0.2)


#: What the data or schema of one file causes: a value that does not convert or fit (DataError),
#: a violated constraint (IntegrityError), a statement its names or types make invalid
#: (ProgrammingError), something DuckDB does not support (NotSupportedError). Everything else is
#: the system's: an I/O error (a full disk), running out of memory, a failed commit, an
#: invalidated database (FatalException), DuckDB's own internal errors.
_DATA_ERRORS = (duckdb.DataError, duckdb.IntegrityError, duckdb.ProgrammingError, duckdb.NotSupportedError)


class DuckDBWarehouse(Warehouse):
    name = "DuckDB"
    placeholder = "?"
    driver_error = duckdb.Error

    def __init__(self, conn: duckdb.DuckDBPyConnection, display_url: str) -> None:
        super().__init__(display_url)
        self._in_transaction = False
        self._background = BackgroundLoad()
        # Rows for new tables not inserted yet (``insert_fresh``), by statement and parameters.
        self._gathered: dict[tuple[str, tuple[Any, ...]], list[pl.DataFrame]] = {}
        self._conn = conn

    @classmethod
    def open(
        cls, path: Path, display_url: str, wait_seconds: float = 120.0, *, create: bool = True
    ) -> DuckDBWarehouse:
        if not create and not path.exists():
            raise WarehouseNotCreatedError(f"{display_url}: the DuckDB file {path} does not exist yet")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(
            open_waiting(lambda: duckdb.connect(str(path)), "DuckDB database", display_url, wait_seconds),
            display_url,
        )

    # Every use of the connection first finishes the inserts gathered or still running in the
    # background (``_settle``).

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        with self.translated():
            self._settle()
            result = self._conn.execute(query, list(params)).fetchall()
        # DuckDB answers DML with one row holding the affected count.
        if len(result) == 1 and len(result[0]) == 1 and isinstance(result[0][0], int):
            return result[0][0]
        return -1

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.translated():
            self._settle()
            return self._conn.execute(query, list(params)).fetchall()

    def quote(self, identifier: str) -> str:
        return str(duckdb.ColumnExpression(identifier))

    def classify(self, error: Exception) -> PgDataHubError:
        if isinstance(error, _DATA_ERRORS):
            return self.refused(error)
        if "No space left on device" in str(error):
            return self.system_fault("the disk is full", error)
        if isinstance(error, duckdb.PermissionException) or "Permission denied" in str(error):
            return self.system_fault("permission denied", error)
        if isinstance(error, duckdb.IOException):
            return self.system_fault("cannot read or write the database file", error)
        if isinstance(error, duckdb.OutOfMemoryException):
            return self.system_fault("out of memory", error)
        return self.system_fault("the database failed", error)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.translated():
            self._settle()
            self._conn.begin()
        self._in_transaction = True
        try:
            with self.translated():
                yield
                self._settle()
                self.build_deferred_indexes()
        except BaseException:
            self._abandon_inserts()
            # The first error is the one raised: a rollback that fails as well (the database
            # was invalidated by a failed write) only confirms that nothing was committed.
            with suppress(duckdb.Error):
                self._conn.rollback()
            raise
        finally:
            self._in_transaction = False
            self._forget_fresh()
        with self.translated():
            self._conn.commit()

    def lock(self, name: str) -> None:
        """A DuckDB file has a single writing process, so writers never race. But every
        writer locks a table before it changes it, which makes this the moment to load the
        table's unique index: DuckDB 1.5 loads an index from the file on first use, and one
        first used by a DELETE still holds the deleted keys for the rest of the
        transaction, so re-inserting one of them fails. An empty INSERT loads it."""
        if self.table_exists(name):
            quoted = self.quote(name)
            self.execute(f"INSERT INTO {quoted} SELECT * FROM {quoted} WHERE FALSE")

    def cast_sql(self, column_sql: str, old_type: SqlType, new_type: SqlType) -> str:
        if old_type == SqlType.DOUBLE and new_type == SqlType.TEXT:
            # DuckDB writes 7.0 as '7.0', PostgreSQL as '7': keep both warehouses alike.
            return (
                f"CASE WHEN {column_sql} = trunc({column_sql}) AND abs({column_sql}) < 1e15 "
                f"THEN CAST(CAST({column_sql} AS BIGINT) AS VARCHAR) ELSE CAST({column_sql} AS VARCHAR) END"
            )
        return super().cast_sql(column_sql, old_type, new_type)

    def _in_outer_transaction(self) -> bool:
        return self._in_transaction

    def _before_deferred_index(self, table: str) -> None:
        """Nothing to undo: DuckDB's fast path is plain INSERTs into the new table."""

    def _change_columns(self, table: str, changes: Sequence[SchemaChange]) -> None:
        """DuckDB refuses to alter a column of an indexed table (and an index dropped and
        built again inside the transaction would still count the rows it deleted), and
        DuckDB 1.5 cannot commit any ALTER TABLE of a table whose rows the same transaction
        deleted or updated (the import of a changed file does both). So a table that existed
        before the transaction, and every holders table, is rebuilt with a batch's changes
        instead, holding only the live rows: a table new to the transaction has no such
        past. A table created by this transaction takes them in place."""
        if table in self._fresh:
            self._alter(self.quote(table), changes)  # new to the transaction, no index yet
        else:
            self._rebuild(table, changes)
        self._rebuild_holders(table, changes)

    def drop_column(self, table: str, column: str) -> None:
        # Inside a transaction DuckDB refuses DROP COLUMN on an indexed table even after
        # DROP INDEX, and the revert that drops it released holders' rows just before.
        dropped = [SchemaChange("drop_column", column, None, None)]
        self._rebuild(table, dropped)
        self._rebuild_holders(table, dropped)

    def empty_for_reload(self, table: str) -> int:
        removed = self.count(table)
        # An index DuckDB builds inside the transaction that deleted rows still counts them,
        # so the emptied table is a new one, whose index is built at commit.
        self._rebuild(table, (), keep_rows=False)
        return removed

    def _rebuild(self, table: str, changes: Sequence[SchemaChange], keep_rows: bool = True) -> None:
        """Replace data table ``table`` by a new one with ``changes`` applied (no rows unless
        ``keep_rows``), and its unique index (at commit, if the table is empty and this is
        the outer transaction)."""
        self._replace(table, changes, keep_rows=keep_rows)
        if keep_rows and table in self._fresh:
            return  # new to the transaction (DuckLake widens it so): still on the fast path
        if not keep_rows and self._in_outer_transaction():
            self._index_at_commit(table)
        else:
            self.create_row_key_index(table)

    def _rebuild_holders(self, table: str, changes: Sequence[SchemaChange]) -> None:
        if self.holders_table(table) is not None:
            self._replace(table, changes, HOLDERS_SCHEMA)

    def _replace(
        self, table: str, changes: Sequence[SchemaChange], schema: str | None = None, keep_rows: bool = True
    ) -> None:
        """Replace ``table`` (in ``schema``) by a new table of its columns with ``changes``
        (add, widen, drop) applied, as ``ALTER TABLE`` would (added columns go last), its
        rows copied over unless not ``keep_rows``."""
        q = self.quote
        dropped = {c.column_name for c in changes if c.change_type == "drop_column"}
        widened = {c.column_name: c for c in changes if c.change_type == "alter_type"}
        definitions, selected = [], []
        for name, kind in self._columns(table, schema):
            change = widened.get(name)
            if name in dropped:
                continue
            if change is None:
                not_null = " NOT NULL" if name in LINEAGE_COLUMNS else ""
                definitions.append(f"{q(name)} {kind}{not_null}")
                selected.append(q(name))
            else:
                assert change.old_type is not None and change.new_type is not None
                definitions.append(f"{q(name)} {change.new_type.value}")
                selected.append(self.cast_sql(q(name), change.old_type, change.new_type))
        for change in changes:
            if change.change_type == "add_column":
                assert change.column_name is not None and change.new_type is not None
                definitions.append(f"{q(change.column_name)} {change.new_type.value}")
                selected.append("NULL")
        prefix = f"{q(schema)}." if schema else ""
        old, rebuilt = prefix + q(table), prefix + q(f"{table}__rebuild")
        self.execute(f"CREATE TABLE {rebuilt} ({', '.join(definitions)})")
        if keep_rows:
            self.execute(f"INSERT INTO {rebuilt} SELECT {', '.join(selected)} FROM {old}")
        self.execute(f"DROP TABLE {old}")
        self.execute(f"ALTER TABLE {rebuilt} RENAME TO {q(table)}")

    def insert_fresh(
        self, table: str, frame: pl.DataFrame, lineage: Lineage, undecided: pl.DataFrame | None = None
    ) -> int:
        q = self.quote
        inserts: list[tuple[pl.DataFrame, str, tuple[Any, ...]]] = []
        if frame.height:
            lineage_columns = ", ".join(q(name) for name in LINEAGE_COLUMNS)
            statement = (
                f"INSERT INTO {q(table)} ({self._names(frame.columns)}, {lineage_columns}) "
                f"SELECT {self._selected(frame.columns)}, ?, ?, ?, ? FROM {q(_ARROW_TABLE)}"
            )
            values = [lineage.source_file, lineage.source_file_id, lineage.file_sha256]
            inserts.append((frame, statement, (*values, lineage.load_timestamp)))
        if undecided is not None:
            statement = (
                f"INSERT INTO {q(self.undecided_table(table))} ({self._names(undecided.columns)}) "
                f"SELECT {self._selected(undecided.columns)} FROM {q(_ARROW_TABLE)}"
            )
            inserts.append((undecided, statement, ()))
        for rows, statement, params in inserts:
            self._gathered.setdefault((statement, params), []).append(rows)
        self._start_inserts(whole_row_groups=True)
        return frame.height

    def _start_inserts(self, *, whole_row_groups: bool) -> None:
        """The gathered rows, one INSERT per statement, start in the background (the count is
        known already, so they run on while the next batch is prepared): all of them, or only
        whole row groups, the rest left gathered."""
        ready: list[tuple[pl.DataFrame, str, tuple[Any, ...]]] = []
        for (statement, params), frames in list(self._gathered.items()):
            rows = sum(part.height for part in frames)
            cut = rows - rows % _ROW_GROUP_ROWS if whole_row_groups else rows
            if cut == 0:
                continue
            gathered = pl.concat(frames, rechunk=False)
            ready.append((gathered.head(cut), statement, params))
            if cut < rows:
                self._gathered[(statement, params)] = [gathered.slice(cut)]
            else:
                del self._gathered[(statement, params)]
        if not ready:
            return

        def insert() -> None:
            for rows, statement, params in ready:
                self._with_arrow(rows, statement, list(params))

        self._background.start(insert)

    def _settle(self) -> None:
        """Every gathered row inserted: before any other use of the connection."""
        self._start_inserts(whole_row_groups=False)
        self._background.wait()

    def _abandon_inserts(self) -> None:
        """After a failure: the gathered rows are dropped, and a running insert waited for,
        its error (the failure's consequence, or the failure itself) left to the caller."""
        self._gathered = {}
        self._background.wait(raise_error=False)

    @contextmanager
    def staged(self, frame: pl.DataFrame, types: Mapping[str, SqlType]) -> Iterator[str]:
        statement = (
            f"CREATE OR REPLACE TEMPORARY TABLE {self.quote(STAGE_TABLE)} AS "
            f"SELECT {self._selected(frame.columns)} FROM {self.quote(_ARROW_TABLE)}"
        )
        self._settle()
        self._with_arrow(frame, statement, [])
        yield STAGE_TABLE
        # Not after an error: the transaction is aborted then, and its rollback drops the table.
        self.execute(f"DROP TABLE {self.quote(STAGE_TABLE)}")

    def analyze(self, table: str, columns: Sequence[str] = ()) -> None:
        """Nothing to do: DuckDB plans with the true size of a temporary table."""

    def index_holders(self, holders: str, table: str) -> None:
        """None: DuckDB finds a key's holders by hash join, and an index would only slow
        the inserts down."""

    def _names(self, columns: Sequence[str]) -> str:
        return ", ".join(self.quote(name) for name in columns)

    def _selected(self, columns: Sequence[str]) -> str:
        return ", ".join(
            f"{self.quote(name)}::UUID AS {self.quote(name)}" if name == ROW_KEY_COLUMN else self.quote(name)
            for name in columns
        )

    def _with_arrow(self, frame: pl.DataFrame, statement: str, params: list[Any]) -> None:
        """Run ``statement`` over ``frame`` as the Arrow table ``_ARROW_TABLE``. Touches
        nothing but the connection, so it may run in the background."""
        # DuckDB finds the table by this local's name (a replacement scan), not as a registered
        # view: a view dropped inside a transaction is kept, with its Arrow data, until the
        # commit, which held every batch of a file in memory (1.3 GB against 0.55 GB for
        # 5,000,000 narrow rows inserted in one transaction).
        pgdatahub_arrow = frame.to_arrow()  # noqa: F841
        with self.translated():
            self._conn.execute(statement, params).fetchall()

    def close(self) -> None:
        self._abandon_inserts()
        self._conn.close()
