"""PostgreSQL through psycopg 3; rows arrive by COPY.

Into an existing table rows go by ``COPY`` into a temporary staging table, merged by the
shared SQL of ``ownership.py`` against the table's unique ``_row_key`` index. A table this
very transaction created is loaded faster: its rows are ``COPY``-ed straight in and its
unique index is built once, just before commit. That is exact because such a table held
nothing before this transaction, and the keys this transaction already put in it are kept
(in a hash table, 17 bytes a slot) to filter later batches; the index built at the end still enforces
uniqueness, so a mistake here fails the file instead of storing duplicates.

Past ``FRESH_TABLE_MAX_KEYS`` keys the file stays on that path with memory that no longer
grows (``Warehouse.load_fresh``): rows the key filter calls certainly new are COPY-ed into
the table as before, repeats of recent keys are dropped, the others go into a temporary
table of undecided rows, inserted against the index once it is built after the last batch
(``Warehouse.settle_fresh``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN
from pgdatahub_dagster.engine.errors import PgDataHubError, WarehouseError
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.warehouse.base import (
    HOLDERS_SCHEMA,
    LEDGER_TABLE,
    LINEAGE_COLUMNS,
    STAGE_TABLE,
    BackgroundLoad,
    Lineage,
    Warehouse,
)

# Each slice is one ``write_csv`` bytes object (about 2 MB here). glibc's malloc raises its
# mmap threshold to the largest block freed, so 10 MB slices (50,000 rows) were then carved from
# the heap and their freed space kept: 90 MB more peak RSS on a 5,000,000-row file, at the
# same speed (docs/benchmarks.md, *Issue 12, COPY slices and glibc's heap*).
_COPY_SLICE_ROWS = 10_000
# The planner's default random_page_cost (4) prices an index probe like four sequential page
# reads, as on a spinning disk. Priced so, a batch's 2,000 keys probing the unique index of a
# table of 60,000-200,000 rows lost to a scan of the whole table, so a file's merge cost grew
# with its table (docs/benchmarks.md, *Issue 12, the planner's price of an index probe*). 1.1
# is the value PostgreSQL's documentation suggests for SSDs; a server configured with its own
# value keeps it.
_PRICE_INDEX_PROBES = (
    "SELECT set_config('random_page_cost', '1.1', false) FROM pg_settings "
    "WHERE name = 'random_page_cost' AND source = 'default'"
)
#: The suffix of a holders table's index by import and key (``index_holders``).
_BY_IMPORT_AND_KEY = "_ik"

#: SQLSTATE classes of errors the data or schema of one file causes: data exception (22),
#: integrity constraint violation (23), syntax error or access rule violation (42, but for
#: 42501, a missing privilege), program limit exceeded (54: too many columns, a row too big),
#: feature not supported (0A), cardinality violation (21). Every other class is the system's:
#: connection exception (08), insufficient resources (53: a full disk), operator intervention
#: (57: a terminated backend), system error (58), transaction rollback (40: a deadlock, worth a
#: new run rather than failing the file).
_DATA_ERROR_CLASSES = frozenset({"22", "23", "42", "54", "0A", "21"})
#: Errors psycopg raises itself, without a SQLSTATE, about the values it was given.
_CLIENT_DATA_ERRORS = (psycopg.DataError, psycopg.ProgrammingError, psycopg.NotSupportedError)


class PostgresWarehouse(Warehouse):
    name = "PostgreSQL"
    placeholder = "%s"
    driver_error = psycopg.Error
    max_columns = 1600

    def __init__(self, conninfo: str, display_url: str, wait_seconds: float = 120.0) -> None:
        super().__init__(display_url)
        self._depth = 0
        self._background = BackgroundLoad()
        #: The lineage the temporary column defaults of a new table hold (see ``insert_fresh``).
        self._lineage_defaults: dict[str, Lineage] = {}
        # ``wait_seconds`` bounds the wait for the server to answer, unless the URL sets
        # its own connect_timeout.
        options: dict[str, Any] = {}
        try:
            if "connect_timeout" not in conninfo_to_dict(conninfo):
                options["connect_timeout"] = max(1, round(wait_seconds))
            self._conn = psycopg.connect(conninfo, autocommit=True, application_name="pgdatahub", **options)
        except psycopg.ProgrammingError:
            # The parser's message quotes the connection string, password and all.
            raise WarehouseError(
                f"cannot connect to PostgreSQL at {display_url}: malformed URL (characters such as "
                "# ? / @ : in the password must be percent-encoded, e.g. # as %23)"
            ) from None
        except psycopg.OperationalError as error:
            # The driver's message may quote the connection string; name the redacted URL.
            reason = str(error).splitlines()[-1] if str(error) else "connection refused"
            raise WarehouseError(f"cannot connect to PostgreSQL at {display_url}: {reason}") from None
        # Connected: from here a driver error is the session's, not the URL's.
        self.execute(_PRICE_INDEX_PROBES)

    # Every use of the connection first waits for a COPY still running in the background.

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        with self.translated():
            self._background.wait()
            with self._conn.cursor() as cursor:
                cursor.execute(query.encode(), params or None)  # bytes: a trusted, composed statement
                return cursor.rowcount

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.translated():
            self._background.wait()
            with self._conn.cursor() as cursor:
                cursor.execute(query.encode(), params or None)
                return cursor.fetchall()

    def quote(self, identifier: str) -> str:
        with self.translated():
            self._background.wait()
            return sql.Identifier(identifier).as_string(self._conn)

    def classify(self, error: Exception) -> PgDataHubError:
        state = getattr(error, "sqlstate", None) or ""
        if state == "42501":
            return self.system_fault("permission denied", error)
        if state[:2] in _DATA_ERROR_CLASSES or (not state and isinstance(error, _CLIENT_DATA_ERRORS)):
            return self.refused(error)
        if state == "53100":
            return self.system_fault("the disk is full", error)
        if state[:2] == "53":
            return self.system_fault("out of resources", error)
        if state[:2] == "08" or state in ("57P01", "57P02", "57P03") or self._conn.broken:
            return self.system_fault("the connection was lost", error)
        return self.system_fault("the database failed", error)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.translated():
            self._background.wait()
        self._depth += 1
        try:
            # psycopg rolls back on an error and, if the rollback fails too (the connection is
            # gone), only logs that: the first error is the one raised.
            with self.translated(), self._conn.transaction():
                try:
                    yield
                    self._background.wait()
                    if self._depth == 1:
                        self.build_deferred_indexes()
                except BaseException:
                    self._background.wait(raise_error=False)  # then roll back
                    # An interrupted run (a cancelled backfill) can leave a statement running
                    # on the server; psycopg cancels it by itself only on KeyboardInterrupt.
                    if self._conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE:
                        self._conn.cancel_safe()
                    raise
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._forget_fresh()
                self._lineage_defaults.clear()

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    def _in_outer_transaction(self) -> bool:
        return self._depth == 1

    def _before_deferred_index(self, table: str) -> None:
        if self._lineage_defaults.pop(table, None) is not None:
            self._set_lineage_defaults(table, None)

    def _set_lineage_defaults(self, table: str, lineage: Lineage | None) -> None:
        """Let COPY leave out the four lineage columns, the same for every row of a file
        (``None``: back to no defaults, as the table is declared)."""
        if lineage is None:
            actions = [f"ALTER COLUMN {self.quote(name)} DROP DEFAULT" for name in LINEAGE_COLUMNS]
        else:
            values = (
                lineage.source_file,
                lineage.source_file_id,
                lineage.file_sha256,
                lineage.load_timestamp,
            )
            actions = [
                f"ALTER COLUMN {self.quote(name)} SET DEFAULT {sql.Literal(value).as_string(self._conn)}"
                for name, value in zip(LINEAGE_COLUMNS, values, strict=True)
            ]
        self.execute(f"ALTER TABLE {self.quote(table)} {', '.join(actions)}")

    def empty_for_reload(self, table: str) -> int:
        # DELETE rather than TRUNCATE: readers in an older snapshot still see the old rows.
        # An index built later in the same transaction ignores the rows it deleted.
        removed = max(self.execute(f"DELETE FROM {self.quote(table)}"), 0)
        if self._in_outer_transaction() and table not in self._fresh:
            self.execute(f"DROP INDEX {self.quote(self.row_key_index_name(table))}")
            self._index_at_commit(table)
        return removed

    @contextmanager
    def staged(self, frame: pl.DataFrame, types: Mapping[str, SqlType]) -> Iterator[str]:
        stage_columns = ", ".join(
            f"{self.quote(name)} {'UUID' if name == ROW_KEY_COLUMN else types[name].value}"
            for name in frame.columns
        )
        stage = self.quote(STAGE_TABLE)
        self.execute(f"CREATE TEMPORARY TABLE {stage} ({stage_columns}) ON COMMIT DROP")
        self._write(self._copy_statement(STAGE_TABLE, frame), frame)
        # The merge joins the stage with the table by key: with the key's statistics the
        # planner hashes instead of looping; the other columns' would cost far more to gather.
        self.analyze(STAGE_TABLE, [ROW_KEY_COLUMN])
        yield STAGE_TABLE
        self.execute(f"DROP TABLE {stage}")

    def analyze(self, table: str, columns: Sequence[str] = ()) -> None:
        # Without statistics PostgreSQL guesses a temporary table's size, and a guess too
        # large makes it scan the whole data table for a handful of keys.
        named = f" ({', '.join(self.quote(name) for name in columns)})" if columns else ""
        self.execute(f"ANALYZE {self.quote(table)}{named}")

    def index_holders(self, holders: str, table: str) -> None:
        # By key: a key's holders. By import and key: an import's keys, and whether it holds
        # a given key. An index on the import alone (before 2026-12-02) made each such lookup
        # scan all the import's keys: a second file holding 20,000 rows of the first took 65 s.
        digest = self.row_key_index_name(table)
        key, import_id = self.quote(ROW_KEY_COLUMN), self.quote("_import_id")
        self.execute(f"CREATE INDEX IF NOT EXISTS {self.quote(digest + '_k')} ON {holders} ({key})")
        self.execute(
            f"CREATE INDEX IF NOT EXISTS {self.quote(digest + _BY_IMPORT_AND_KEY)} "
            f"ON {holders} ({import_id}, {key})"
        )
        self.execute(f"DROP INDEX IF EXISTS {self.quote(HOLDERS_SCHEMA)}.{self.quote(digest + '_i')}")

    def ensure_ledger(self) -> None:
        super().ensure_ledger()
        # Holders tables made before the index by import and key get it: once, and after that
        # a catalog query per connection.
        outdated = self.fetchall(
            "SELECT t.table_name FROM information_schema.tables t WHERE t.table_schema = %s "
            "AND NOT EXISTS (SELECT 1 FROM pg_indexes i WHERE i.schemaname = t.table_schema "
            "AND i.tablename = t.table_name AND right(i.indexname, %s) = %s)",
            [HOLDERS_SCHEMA, len(_BY_IMPORT_AND_KEY), _BY_IMPORT_AND_KEY],
        )
        for (table,) in outdated:
            self.run_transaction(partial(self._index_outdated_holders, str(table)))

    def _index_outdated_holders(self, table: str) -> None:
        # Under the ledger's lock: two processes opening the warehouse at once would otherwise
        # both build the index, and the second would fail on its name.
        self.lock(LEDGER_TABLE)
        self.index_holders(f"{self.quote(HOLDERS_SCHEMA)}.{self.quote(table)}", table)

    def _copy_statement(self, table: str, frame: pl.DataFrame) -> bytes:
        columns = ", ".join(self.quote(name) for name in frame.columns)
        return f"COPY {self.quote(table)} ({columns}) FROM STDIN (FORMAT csv)".encode()

    def _write(self, statement: bytes, frame: pl.DataFrame) -> None:
        """The COPY itself; touches nothing but the connection, so it may run in the background."""
        with self.translated(), self._conn.cursor() as cursor, cursor.copy(statement) as copy:
            for part in frame.iter_slices(_COPY_SLICE_ROWS):
                copy.write(part.write_csv(include_header=False))

    def insert_fresh(
        self, table: str, frame: pl.DataFrame, lineage: Lineage, undecided: pl.DataFrame | None = None
    ) -> int:
        """COPY straight into the new table, with the lineage as its columns' temporary
        defaults."""
        copies = []
        if frame.height:
            if self._lineage_defaults.get(table) != lineage:
                self._set_lineage_defaults(table, lineage)
                self._lineage_defaults[table] = lineage
            copies.append((self._copy_statement(table, frame), frame))
        if undecided is not None:
            copies.append((self._copy_statement(self.undecided_table(table), undecided), undecided))

        def write() -> None:
            for statement, rows in copies:
                self._write(statement, rows)

        if copies:
            # The count is known already: the COPY runs on while the next batch is prepared.
            self._background.start(write)
        return frame.height

    def close(self) -> None:
        self._background.wait(raise_error=False)
        self._conn.close()
