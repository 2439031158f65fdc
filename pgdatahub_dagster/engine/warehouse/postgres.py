"""PostgreSQL through psycopg 3; rows arrive by COPY.

Into an existing table rows go by ``COPY`` into a temporary staging table, merged by the
shared SQL of ``ownership.py`` against the table's unique ``_row_key`` index. A table this
very transaction created is loaded faster: its rows are ``COPY``-ed straight in and its
unique index is built once, just before commit. That is exact because such a table held
nothing before this transaction, and the keys this transaction already put in it are kept
(16 bytes each) to filter later batches; the index built at the end still enforces
uniqueness, so a mistake here fails the file instead of storing duplicates.

Past ``FRESH_TABLE_MAX_KEYS`` keys the file stays on that path with memory that no longer
grows: the keys go into a ``KeyFilter`` of fixed size. Rows it calls certainly new are
COPY-ed into the table as before. The others (repeats, and the rare key the filter mistakes
for one) are COPY-ed into a temporary table of undecided rows with their position in the
file, which mirrors the table's schema changes. After the last batch one statement inserts,
of each undecided key the table does not hold, its first row (``settle_fresh``), and the
index is built. Going on with the index instead cost more per row the larger the table grew
(docs/benchmarks.md, *Issue 12, linear cost*).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN, KeyFilter, SeenKeys
from pgdatahub_dagster.engine.errors import PgDataHubError, WarehouseError
from pgdatahub_dagster.engine.schema.evolve import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.warehouse.base import (
    ENGINE_PREFIX,
    LINEAGE_COLUMNS,
    STAGE_TABLE,
    BackgroundLoad,
    Lineage,
    Warehouse,
)

_COPY_SLICE_ROWS = 50_000
#: The size of the ``KeyFilter`` of a new table past ``FRESH_TABLE_MAX_KEYS`` (16 MiB, the
#: memory the exact keys took up to there): at 5,000,000 keys one in about 800 is undecided
#: by mistake, at 20,000,000 about one in 20; every undecided row costs a row in the temporary
#: table, never a wrong answer.
KEY_FILTER_BITS = 2**27
#: The column of the undecided rows' table giving each row's position among them.
_POSITION = f"{ENGINE_PREFIX}position"

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
        #: The lineage the temporary column defaults of a new table hold (see ``_copy_into_fresh_table``).
        self._lineage_defaults: dict[str, Lineage] = {}
        #: New tables of the running transaction past ``FRESH_TABLE_MAX_KEYS``: their keys.
        self._filters: dict[str, KeyFilter] = {}
        #: Of those, the ones with undecided rows: the rows set aside so far.
        self._undecided: dict[str, int] = {}
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
                self._fresh.clear()
                self._lineage_defaults.clear()
                self._filters.clear()
                self._undecided.clear()

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    def _in_outer_transaction(self) -> bool:
        return self._depth == 1

    def _before_deferred_index(self, table: str) -> None:
        if table in self._undecided:
            # An index built now would leave them out: fail the file rather than lose rows.
            raise RuntimeError(f"{table}: undecided rows were never settled (settle_fresh)")
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

    def insert_fresh(self, table: str, frame: pl.DataFrame, lineage: Lineage) -> int:
        return self._copy_into_fresh_table(table, frame, lineage)

    def load_fresh(self, table: str, frame: pl.DataFrame, lineage: Lineage) -> int | None:
        keys = self._filters.get(table)
        if keys is None:
            return super().load_fresh(table, frame, lineage)
        new = keys.admit(frame[ROW_KEY_COLUMN])
        if bool(new.all()):
            return self._copy_into_fresh_table(table, frame, lineage)
        undecided = frame.filter(~new)
        if table not in self._undecided:
            self._create_undecided(table)
            self._undecided[table] = 0
        start = self._undecided[table]
        self._undecided[table] += undecided.height
        positioned = undecided.with_row_index(_POSITION, offset=start)
        return self._copy_into_fresh_table(table, frame.filter(new), lineage, undecided=positioned)

    def _past_key_bound(self, table: str, frame: pl.DataFrame, lineage: Lineage) -> int | None:
        # The exact keys move into a filter of fixed size; the table still waits for its index.
        self._filters[table] = KeyFilter(KEY_FILTER_BITS, self._fresh[table])
        self._fresh[table] = SeenKeys()
        return self.load_fresh(table, frame, lineage)

    def settle_fresh(self, table: str, lineage: Lineage) -> int:
        if self._undecided.pop(table, None) is None:
            return 0
        self._filters.pop(table)
        q = self.quote
        undecided, data, key = q(self._undecided_table(table)), q(table), q(ROW_KEY_COLUMN)
        self.execute(f"ANALYZE {undecided} ({key})")
        # The undecided table has the table's user columns (``apply_schema_changes``).
        columns = [q(name) for name in self.table_columns(table) or {}] + [key]
        lineage_columns = ", ".join(q(name) for name in LINEAGE_COLUMNS)
        # One pass over the table, probing a hash of the undecided keys (far fewer than the
        # table's) for the ones it holds; then the first row of each other undecided key.
        inserted = self.execute(
            f"WITH held AS MATERIALIZED (SELECT t.{key} FROM {data} t "
            f"WHERE t.{key} IN (SELECT {key} FROM {undecided})) "
            f"INSERT INTO {data} ({', '.join(columns)}, {lineage_columns}) "
            f"SELECT DISTINCT ON (u.{key}) {', '.join('u.' + c for c in columns)}, %s, %s, %s, %s "
            f"FROM {undecided} u WHERE NOT EXISTS (SELECT 1 FROM held h WHERE h.{key} = u.{key}) "
            f"ORDER BY u.{key}, u.{q(_POSITION)}",
            (lineage.source_file, lineage.source_file_id, lineage.file_sha256, lineage.load_timestamp),
        )
        self.execute(f"DROP TABLE {undecided}")
        # Every row is decided: the index now, so that any later batch goes in against it.
        self.create_row_key_index(table)
        return max(inserted, 0)

    def apply_schema_changes(self, table: str, changes: Sequence[SchemaChange]) -> None:
        super().apply_schema_changes(table, changes)
        # The undecided rows keep the table's columns, converted as the table's rows were.
        if table in self._undecided:
            self._alter(self.quote(self._undecided_table(table)), changes)

    def _undecided_table(self, table: str) -> str:
        # Temporary, so in a schema of its own; named after the table, within 63 bytes.
        return f"{ENGINE_PREFIX}undecided_{hashlib.sha256(table.encode()).hexdigest()[:8]}"

    def _create_undecided(self, table: str) -> None:
        q = self.quote
        columns = [f"{q(name)} {kind.value}" for name, kind in (self.table_columns(table) or {}).items()]
        columns += [f"{q(ROW_KEY_COLUMN)} UUID", f"{q(_POSITION)} BIGINT"]
        self.execute(
            f"CREATE TEMPORARY TABLE {q(self._undecided_table(table))} ({', '.join(columns)}) ON COMMIT DROP"
        )

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
        self.execute(f"ANALYZE {stage} ({self.quote(ROW_KEY_COLUMN)})")
        yield STAGE_TABLE
        self.execute(f"DROP TABLE {stage}")

    def analyze(self, table: str) -> None:
        # Without statistics PostgreSQL guesses a temporary table's size, and a guess too
        # large makes it scan the whole data table for a handful of keys.
        self.execute(f"ANALYZE {self.quote(table)}")

    def index_holders(self, holders: str, table: str) -> None:
        digest = self.row_key_index_name(table)
        for column, suffix in ((ROW_KEY_COLUMN, "k"), ("_import_id", "i")):
            index = self.quote(f"{digest}_{suffix}")
            self.execute(f"CREATE INDEX {index} ON {holders} ({self.quote(column)})")

    def _copy_statement(self, table: str, frame: pl.DataFrame) -> bytes:
        columns = ", ".join(self.quote(name) for name in frame.columns)
        return f"COPY {self.quote(table)} ({columns}) FROM STDIN (FORMAT csv)".encode()

    def _write(self, statement: bytes, frame: pl.DataFrame) -> None:
        """The COPY itself; touches nothing but the connection, so it may run in the background."""
        with self.translated(), self._conn.cursor() as cursor, cursor.copy(statement) as copy:
            for part in frame.iter_slices(_COPY_SLICE_ROWS):
                copy.write(part.write_csv(include_header=False))

    def _copy_into_fresh_table(
        self, table: str, frame: pl.DataFrame, lineage: Lineage, undecided: pl.DataFrame | None = None
    ) -> int:
        """COPY rows this transaction has not loaded yet straight into its new ``table``, and
        the ``undecided`` ones, if any, into the table kept for them (``load_fresh``)."""
        copies = []
        if frame.height:
            if self._lineage_defaults.get(table) != lineage:
                self._set_lineage_defaults(table, lineage)
                self._lineage_defaults[table] = lineage
            copies.append((self._copy_statement(table, frame), frame))
        if undecided is not None:
            copies.append((self._copy_statement(self._undecided_table(table), undecided), undecided))

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
