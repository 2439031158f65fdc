"""PostgreSQL through psycopg 3; rows arrive by COPY.

Into an existing table rows go by ``COPY`` into a temporary staging table and one
``INSERT … ON CONFLICT DO NOTHING``, so the table's unique ``_row_key`` index decides what
is new. A table this very transaction created is loaded faster: its rows are ``COPY``-ed
straight in and its unique index is built once, just before commit. That is exact because
such a table held nothing before this transaction, and the keys this transaction already
put in it are kept (16 bytes each) to filter later batches; the index built at the end
still enforces uniqueness, so a mistake here fails the file instead of storing duplicates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN, SeenKeys
from pgdatahub_dagster.engine.errors import WarehouseError
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.warehouse.base import LINEAGE_COLUMNS, Lineage, Warehouse

_STAGE_TABLE = "pgdatahub_stage"
_COPY_SLICE_ROWS = 50_000
# A new table takes the fast path for this many keyed rows: their keys take 16 bytes each
# (16 MiB). Past that its index is built and the rest of the file goes through staging,
# so memory stays flat however large the file.
FRESH_TABLE_MAX_KEYS = 1_000_000


class _Background:
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


@dataclass
class _FreshTable:
    """A table created by the running transaction, still without its unique index."""

    keys: SeenKeys = field(default_factory=SeenKeys)
    #: The lineage the columns' temporary defaults hold.
    lineage: Lineage | None = None


class PostgresWarehouse(Warehouse):
    placeholder = "%s"
    unique_violation: ClassVar[tuple[type[Exception], ...]] = (psycopg.errors.UniqueViolation,)
    data_errors: ClassVar[tuple[type[Exception], ...]] = (
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.ProgrammingError,
        psycopg.NotSupportedError,
    )

    def __init__(self, conninfo: str, display_url: str, wait_seconds: float = 120.0) -> None:
        super().__init__(display_url)
        self._depth = 0
        self._background = _Background()
        self._creating: str | None = None
        self._fresh: dict[str, _FreshTable] = {}
        # ``wait_seconds`` bounds the wait for the server to answer, unless the URL sets
        # its own connect_timeout.
        options: dict[str, Any] = {}
        try:
            if "connect_timeout" not in conninfo_to_dict(conninfo):
                options["connect_timeout"] = max(1, round(wait_seconds))
            self._conn = psycopg.connect(conninfo, autocommit=True, application_name="pgdatahub", **options)
        except psycopg.ProgrammingError:
            # The parser's message quotes the connection string, password and all.
            raise WarehouseError(f"cannot connect to PostgreSQL at {display_url}: malformed URL") from None
        except psycopg.OperationalError as error:
            # The driver's message may quote the connection string; name the redacted URL.
            reason = str(error).splitlines()[-1] if str(error) else "connection refused"
            raise WarehouseError(f"cannot connect to PostgreSQL at {display_url}: {reason}") from None

    # Every use of the connection first waits for a COPY still running in the background.

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        self._background.wait()
        with self._conn.cursor() as cursor:
            cursor.execute(query.encode(), params or None)  # bytes: a trusted, composed statement
            return cursor.rowcount

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._background.wait()
        with self._conn.cursor() as cursor:
            cursor.execute(query.encode(), params or None)
            return cursor.fetchall()

    def quote(self, identifier: str) -> str:
        self._background.wait()
        return sql.Identifier(identifier).as_string(self._conn)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._background.wait()
        self._depth += 1
        try:
            with self._conn.transaction():
                try:
                    yield
                    self._background.wait()
                    if self._depth == 1:
                        # Before commit: the new tables get their unique index.
                        for table in list(self._fresh):
                            self.create_row_key_index(table)
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

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    def _create_table(self, table: str, columns: Mapping[str, SqlType]) -> None:
        # A table created by the outermost transaction gets its index just before commit
        # (see ``transaction``); inside a savepoint, or outside any transaction, at once.
        self._creating = table if self._depth == 1 else None
        try:
            super()._create_table(table, columns)
        finally:
            self._creating = None

    def create_row_key_index(self, table: str) -> None:
        if table == self._creating:
            self._fresh[table] = _FreshTable()
            return
        fresh = self._fresh.pop(table, None)
        if fresh is not None and fresh.lineage is not None:
            self._set_lineage_defaults(table, None)
        super().create_row_key_index(table)

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

    def insert_new_rows(
        self, table: str, frame: pl.DataFrame, types: Mapping[str, SqlType], lineage: Lineage
    ) -> int:
        fresh = self._fresh.get(table)
        if fresh is not None:
            if len(fresh.keys) + frame.height <= FRESH_TABLE_MAX_KEYS:
                return self._copy_into_fresh_table(table, fresh, frame, lineage)
            self.create_row_key_index(table)
        return self._insert_through_stage(table, frame, types, lineage)

    def _copy_statement(self, table: str, frame: pl.DataFrame) -> bytes:
        columns = ", ".join(self.quote(name) for name in frame.columns)
        return f"COPY {self.quote(table)} ({columns}) FROM STDIN (FORMAT csv)".encode()

    def _write(self, statement: bytes, frame: pl.DataFrame) -> None:
        """The COPY itself; touches nothing but the connection, so it may run in the background."""
        with self._conn.cursor() as cursor, cursor.copy(statement) as copy:
            for part in frame.iter_slices(_COPY_SLICE_ROWS):
                copy.write(part.write_csv(include_header=False))

    def _copy_into_fresh_table(
        self, table: str, fresh: _FreshTable, frame: pl.DataFrame, lineage: Lineage
    ) -> int:
        """COPY the rows whose key this transaction has not loaded yet straight into ``table``."""
        new = fresh.keys.admit(frame[ROW_KEY_COLUMN])
        if not bool(new.all()):
            frame = frame.filter(new)
        if frame.height == 0:
            return 0
        if fresh.lineage != lineage:
            self._set_lineage_defaults(table, lineage)
            fresh.lineage = lineage
        # The count is known already: the COPY runs on while the next batch is prepared.
        statement = self._copy_statement(table, frame)
        self._background.start(lambda: self._write(statement, frame))
        return frame.height

    def _insert_through_stage(
        self, table: str, frame: pl.DataFrame, types: Mapping[str, SqlType], lineage: Lineage
    ) -> int:
        columns = frame.columns
        quoted = ", ".join(self.quote(name) for name in columns)
        stage_columns = ", ".join(
            f"{self.quote(name)} {'UUID' if name == ROW_KEY_COLUMN else types[name].value}"
            for name in columns
        )
        stage = self.quote(_STAGE_TABLE)
        self.execute(f"CREATE TEMPORARY TABLE {stage} ({stage_columns}) ON COMMIT DROP")
        self._write(self._copy_statement(_STAGE_TABLE, frame), frame)
        lineage_columns = ", ".join(self.quote(name) for name in LINEAGE_COLUMNS)
        inserted = self.execute(
            f"INSERT INTO {self.quote(table)} ({quoted}, {lineage_columns}) "
            f"SELECT {quoted}, %s, %s, %s, %s FROM {stage} "
            f"ON CONFLICT ({self.quote(ROW_KEY_COLUMN)}) DO NOTHING",
            (lineage.source_file, lineage.source_file_id, lineage.file_sha256, lineage.load_timestamp),
        )
        self.execute(f"DROP TABLE {stage}")
        return inserted

    def close(self) -> None:
        self._background.wait(raise_error=False)
        self._conn.close()
