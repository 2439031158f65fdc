"""PostgreSQL through psycopg 3; rows arrive by COPY."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import polars as pl
import psycopg
from psycopg import sql

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN
from pgdatahub_dagster.engine.errors import WarehouseError
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.warehouse.base import LINEAGE_COLUMNS, Lineage, Warehouse

_STAGE_TABLE = "pgdatahub_stage"
_COPY_SLICE_ROWS = 50_000


class PostgresWarehouse(Warehouse):
    placeholder = "%s"
    unique_violation: ClassVar[tuple[type[Exception], ...]] = (psycopg.errors.UniqueViolation,)
    data_errors: ClassVar[tuple[type[Exception], ...]] = (
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.ProgrammingError,
        psycopg.NotSupportedError,
    )

    def __init__(self, conninfo: str, display_url: str) -> None:
        super().__init__(display_url)
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, application_name="pgdatahub")
        except psycopg.OperationalError as error:
            # The driver's message may quote the connection string; name the redacted URL.
            reason = str(error).splitlines()[-1] if str(error) else "connection refused"
            raise WarehouseError(f"cannot connect to PostgreSQL at {display_url}: {reason}") from None

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        with self._conn.cursor() as cursor:
            cursor.execute(query.encode(), params or None)  # bytes: a trusted, composed statement
            return cursor.rowcount

    def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            cursor.execute(query.encode(), params or None)
            return cursor.fetchall()

    def quote(self, identifier: str) -> str:
        return sql.Identifier(identifier).as_string(self._conn)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    def insert_new_rows(
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
        copy_statement = f"COPY {stage} ({quoted}) FROM STDIN (FORMAT csv)".encode()
        with self._conn.cursor() as cursor, cursor.copy(copy_statement) as copy:
            for part in frame.iter_slices(_COPY_SLICE_ROWS):
                copy.write(part.write_csv(include_header=False))
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
        self._conn.close()
