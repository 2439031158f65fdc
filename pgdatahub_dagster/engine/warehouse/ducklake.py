"""DuckLake: the tables as Parquet files, their catalog in a DuckDB file or in PostgreSQL.

It is DuckDB with the ``ducklake`` extension, so the DuckDB warehouse does the work (Arrow
loads, staging, the shared SQL of ``ownership.py``); what differs is written here.

DuckLake has no unique indexes, so no ``ON CONFLICT``: a batch goes in by an anti-join
(``insert_new_keys``), and before commit every table the transaction changed is checked for
a row key that occurs twice, which fails the file as a unique index would. That holds for
one writer. Several writers (processes or machines sharing a PostgreSQL catalog) do not
see each other's uncommitted rows, and DuckLake commits optimistically: two transactions
that only append never conflict, even with the same keys. So every writer of a table also
changes that table's one-row lock table (``lock``): of two concurrent writers of a table
the second to commit then conflicts, is rolled back, and runs again from the start, now
seeing the first writer's rows (``Warehouse.run_transaction``). The end is the same as if
they had run one after the other.

DuckLake has no sequences either: ledger ids come from the clock (``next_id``).

Every transaction that writes ledger rows commits one snapshot saying so: its message names
them (``import 42: success crm/a.csv``) and its extra info lists their ids as JSON
(``{"import_ids": [42]}``), so a table reads as of an import with ``AT (VERSION => …)``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import duckdb
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdatahub_dagster.engine.dedup.keys import ROW_KEY_COLUMN
from pgdatahub_dagster.engine.errors import (
    CommitConflict,
    ConfigError,
    PgDataHubError,
    WarehouseError,
    WarehouseNotCreatedError,
)
from pgdatahub_dagster.engine.schema.evolve import SchemaChange
from pgdatahub_dagster.engine.schema.types import SqlType
from pgdatahub_dagster.engine.settings import S3Settings
from pgdatahub_dagster.engine.warehouse.base import (
    LEDGER_SIDE_TABLES,
    LEDGER_TABLE,
    ImportRecord,
    Snapshot,
    Warehouse,
)
from pgdatahub_dagster.engine.warehouse.duckdb import DuckDBWarehouse, open_waiting

#: The name the lake is attached under; every statement runs in it (``USE``).
LAKE = "lake"
#: Where each locked name's lock table lives, under the name (see ``lock``).
LOCKS_SCHEMA = "pgdatahub_locks"
#: The author of the snapshots the engine commits.
AUTHOR = "pgdatahub"
#: Compaction rewrites a data file once this share of its rows is deleted (a changed or
#: reverted file deletes rows), so that merging can then take it in.
REWRITE_DELETED_SHARE = 0.5

# The extensions, as PyPI packages for this duckdb version: INSTALL would download them.
_EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
}
#: The DuckDB secret that signs the requests to an S3 data path.
S3_SECRET = "pgdatahub_s3"


@dataclass(frozen=True)
class LakeLocation:
    """Where a lake's catalog and data are, from its URL."""

    #: What follows ``ducklake:`` in ATTACH: a DuckDB file path, or ``postgres:`` and a
    #: libpq connection string.
    catalog: str
    #: The folder (or ``s3://`` prefix) of the Parquet files; ``None``: DuckLake's default,
    #: beside a DuckDB catalog file.
    data_path: str | None
    #: The PostgreSQL schema of the catalog's tables; ``None``: DuckLake's default.
    metadata_schema: str | None
    #: The password inside ``catalog``, to keep out of error messages.
    password: str | None = None

    @property
    def on_postgres(self) -> bool:
        return self.catalog.startswith("postgres:")

    @property
    def on_s3(self) -> bool:
        return (self.data_path or "").lower().startswith("s3://")


def parse_lake_url(url: str, display_url: str) -> LakeLocation:
    """``ducklake:///relative/or//absolute/meta.ducklake?data=folder/`` (a DuckDB catalog
    file) or ``ducklake+postgresql://user:pass@host:port/db?data=…&schema=…`` (a
    PostgreSQL catalog; other query parameters go to libpq, e.g. ``host=/socket/dir``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    data_path = query.pop("data", None) or None
    metadata_schema = query.pop("schema", None) or None
    if parts.scheme.lower() == "ducklake":
        path = url.split("://", 1)[1].split("?", 1)[0].removeprefix("/")
        if not path or query:
            raise ConfigError(
                f"{display_url}: a DuckLake URL with a DuckDB catalog names its file and, if you like, "
                "its data folder: ducklake:///lake/meta.ducklake?data=lake/data/"
            )
        return LakeLocation(path, data_path, metadata_schema)
    postgres_url = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
    try:
        keywords = conninfo_to_dict(postgres_url)
    except Exception:  # the parser's message quotes the URL, password and all
        raise ConfigError(f"{display_url}: malformed PostgreSQL catalog URL") from None
    password = keywords.get("password")
    return LakeLocation(
        "postgres:" + make_conninfo(**{k: str(v) for k, v in keywords.items()}),
        data_path,
        metadata_schema,
        str(password) if password else None,
    )


def _hide(text: str, hidden: Sequence[str]) -> str:
    for value in hidden:
        if value:
            text = text.replace(value, "***")
    return text


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_s3_secret(conn: duckdb.DuckDBPyConnection, s3: S3Settings) -> None:
    """The DuckDB secret for S3, from the environment (``S3Settings``). DuckDB takes no
    parameters in ``CREATE SECRET``: the values go in as literals, and any message quoting
    them is redacted (``DuckLakeWarehouse.hide``)."""
    options = ["TYPE s3"]
    if s3.key_id and s3.secret:
        options += [f"KEY_ID {_literal(s3.key_id)}", f"SECRET {_literal(s3.secret)}"]
    if s3.session_token:
        options.append(f"SESSION_TOKEN {_literal(s3.session_token)}")
    if s3.region:
        options.append(f"REGION {_literal(s3.region)}")
    if s3.endpoint:
        # Stores other than AWS (MinIO, moto) name buckets in the path, not the host name.
        options += [f"ENDPOINT {_literal(s3.endpoint)}", "URL_STYLE 'path'"]
    options.append(f"USE_SSL {str(s3.use_ssl).lower()}")
    conn.execute(f"CREATE OR REPLACE SECRET {S3_SECRET} ({', '.join(options)})")


def _load_extension(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    package = _EXTENSIONS[name]
    requirement = f"pip install {package.replace('_', '-')}=={duckdb.__version__}"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"DuckLake needs the {name} extension for duckdb {duckdb.__version__}: {requirement}"
        ) from None
    assert module.__file__ is not None
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise ConfigError(f"the {name} extension for duckdb {duckdb.__version__} is missing: {requirement}")
    conn.execute(f"LOAD {_literal(str(path))}")


class _ClockIds:
    """Ids that grow with time, unique across writers without a shared sequence: the
    microseconds since 1970 times 1024, plus 10 random bits (two writers would have to
    draw the same microsecond and the same bits), never smaller than the last one here."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            candidate = time.time_ns() // 1000 * 1024 + secrets.randbelow(1024)
            self._last = max(candidate, self._last + 1)
            return self._last


_CLOCK_IDS = _ClockIds()
#: Threads of one process opening a lake take turns: they share its DuckDB instance, and two
#: attaching a new lake at once would both create its catalog.
_OPENING = threading.Lock()


class DuckLakeWarehouse(DuckDBWarehouse):
    has_indexes: ClassVar[bool] = False

    def __init__(self, conn: duckdb.DuckDBPyConnection, display_url: str, hidden: Sequence[str] = ()) -> None:
        super().__init__(conn, display_url)
        #: The catalog's password and the S3 secrets, which no message may show.
        self._hidden = [value for value in hidden if value]
        #: The names this transaction locked: the tables it changes.
        self._locked: set[str] = set()
        #: The ledger rows this transaction wrote, for its snapshot's commit message.
        self._recorded: list[ImportRecord] = []

    @classmethod
    def open_lake(
        cls, location: LakeLocation, display_url: str, wait_seconds: float = 120.0, *, create: bool = True
    ) -> DuckLakeWarehouse:
        if not create and not location.on_postgres and not Path(location.catalog).exists():
            raise WarehouseNotCreatedError(
                f"{display_url}: the DuckLake catalog {location.catalog} does not exist yet"
            )
        if not location.on_postgres:
            Path(location.catalog).parent.mkdir(parents=True, exist_ok=True)
        if location.data_path is not None and "://" not in location.data_path:
            Path(location.data_path).mkdir(parents=True, exist_ok=True)
        # Connections to one lake in one process share a DuckDB instance, as connections to
        # one DuckDB file do: a catalog file cannot be attached twice in a process.
        digest = hashlib.sha256(repr(location).encode()).hexdigest()[:16]
        conn = duckdb.connect(f":memory:pgdatahub-lake-{digest}")
        s3 = S3Settings.from_env() if location.on_s3 else None
        hidden = [location.password or "", *(s3.secrets if s3 else [])]
        try:
            # Nothing is ever downloaded: the extensions come from their PyPI packages.
            conn.execute("SET autoinstall_known_extensions = false")
            _load_extension(conn, "ducklake")
            if location.on_postgres:
                _load_extension(conn, "postgres_scanner")
            if s3 is not None:
                _load_extension(conn, "httpfs")
            options = []
            if location.data_path:
                options.append(f"DATA_PATH {_literal(location.data_path)}")
            if location.metadata_schema:
                options.append(f"METADATA_SCHEMA {_literal(location.metadata_schema)}")
            attach = f"ATTACH IF NOT EXISTS {_literal('ducklake:' + location.catalog)} AS {LAKE}"
            attach += f" ({', '.join(options)})" if options else ""

            def open_catalog() -> duckdb.DuckDBPyConnection:
                conn.execute(attach)
                return conn

            try:
                if s3 is not None:
                    _create_s3_secret(conn, s3)
                with _OPENING:
                    open_waiting(open_catalog, "the DuckLake catalog of", display_url, wait_seconds)
            except (duckdb.Error, WarehouseError) as error:
                # DuckDB's message quotes the catalog's connection string, password and all.
                reason = _hide(str(error), hidden)
                raise WarehouseError(
                    reason
                    if isinstance(error, WarehouseError)
                    else f"cannot open the DuckLake {display_url}: {reason}"
                ) from None
            conn.execute(f"USE {LAKE}")
        except BaseException:
            conn.close()
            raise
        return cls(conn, display_url, hidden)

    # -- keys without indexes --------------------------------------------------------------

    def insert_new_keys(self, table: str, columns: str, values: str, source: str) -> str:
        # The anti-join leaves out keys the table holds; rows without a key (NULL) match
        # nothing, so they all go in, as with ON CONFLICT.
        key = self.quote(ROW_KEY_COLUMN)
        return (
            f"INSERT INTO {table} ({columns}) SELECT {values} FROM {source} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = s.{key})"
        )

    def upsert(self, table: str, key: str, row: Mapping[str, Any]) -> None:
        # Callers hold the table's lock, so no other writer can insert the key meanwhile.
        self.execute(f"DELETE FROM {table} WHERE {key} = ?", [row[key]])
        names = list(row)
        values = ", ".join(["?"] * len(names))
        self.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({values})", list(row.values()))

    def build_deferred_indexes(self) -> None:
        """Before commit: instead of unique indexes, every table the transaction changed is
        checked for a key that occurs twice, which fails the transaction; then the snapshot
        the commit makes is named after the imports it records."""
        super().build_deferred_indexes()
        key = self.quote(ROW_KEY_COLUMN)
        for table in sorted(self._locked):
            if ROW_KEY_COLUMN not in self.column_names(table):
                continue  # not a data table (the ledger), or gone
            repeated = self.fetchall(
                f"SELECT CAST({key} AS VARCHAR) FROM {self.quote(table)} WHERE {key} IS NOT NULL "
                f"GROUP BY {key} HAVING count(*) > 1 LIMIT 1"
            )
            if repeated:
                raise duckdb.ConstraintException(
                    f'Duplicate key "_row_key: {repeated[0][0]}" in {table}: the load would store it twice'
                )
        self._name_snapshot()

    def next_id(self, table: str) -> int:
        return _CLOCK_IDS.next()

    def lock(self, name: str) -> None:
        """Make concurrent writers of ``name`` conflict at commit (see the module's doc): its
        lock table's one row is updated, and DuckLake refuses to commit a change to a table
        another transaction changed since this one began. The first writer creates it, and
        two creating it at once conflict likewise."""
        self._locked.add(name)
        q = self.quote
        locks = f"{q(LOCKS_SCHEMA)}.{q(name)}"
        if self.table_exists(name, schema=LOCKS_SCHEMA):
            self.execute(f"UPDATE {locks} SET writes = writes + 1")
        else:
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {q(LOCKS_SCHEMA)}")
            self.execute(f"CREATE TABLE {locks} AS SELECT CAST(1 AS BIGINT) AS writes")

    def classify(self, error: Exception) -> PgDataHubError:
        """A commit that lost the race with another writer may run again (``CommitConflict``,
        see ``Warehouse.run_transaction``); the rest as on DuckDB. No secret shows."""
        if isinstance(error, duckdb.TransactionException) and "conflict" in str(error).lower():
            last_line = _hide(str(error).splitlines()[-1], self._hidden)
            return CommitConflict(f"{self.display_url}: another writer changed the same tables: {last_line}")
        classified = super().classify(error)
        classified.args = tuple(_hide(str(arg), self._hidden) for arg in classified.args)
        return classified

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with super().transaction():
                yield
        finally:
            self._locked.clear()
            self._recorded.clear()

    # -- snapshots -------------------------------------------------------------------------

    def ensure_ledger(self) -> None:
        """Only when something is missing: creating the ledger locks it, and every
        connection would otherwise commit a snapshot that changes nothing."""
        complete = {f.name for f in fields(ImportRecord)} <= set(self.column_names(LEDGER_TABLE))
        if not (complete and all(self.table_exists(table) for table in LEDGER_SIDE_TABLES)):
            super().ensure_ledger()

    def record_import(self, record: ImportRecord) -> None:
        """The ledger row, and the transaction's snapshot names it (the last message set
        before commit is the one DuckLake keeps)."""
        super().record_import(record)
        if self._in_outer_transaction():
            self._recorded.append(record)

    def _name_snapshot(self) -> None:
        """Once, just before commit: a transaction that records many imports (a deletion of
        many files) would otherwise rebuild an ever longer message at every one."""
        if self._recorded:
            message = "; ".join(f"import {r.id}: {r.status} {r.source_file}" for r in self._recorded)
            extra = json.dumps({"import_ids": [r.id for r in self._recorded]})
            self.execute(f"CALL {LAKE}.set_commit_message(?, ?, extra_info => ?)", [AUTHOR, message, extra])

    def snapshots(self, limit: int) -> list[Snapshot]:
        rows = self.fetchall(
            f"SELECT snapshot_id, snapshot_time, commit_message, commit_extra_info FROM {LAKE}.snapshots() "
            f"ORDER BY snapshot_id DESC LIMIT {int(limit)}"
        )
        return [
            Snapshot(int(id_), when, message, tuple(_import_ids(extra))) for id_, when, message, extra in rows
        ]

    def compact(self, expire_older_than: timedelta) -> str:
        """DuckLake's maintenance, each step its own commit: data files mostly deleted are
        rewritten, small files of a table merged into larger ones (time travel still reads
        them), snapshots older than ``expire_older_than`` (but never the latest) forgotten,
        and the files no snapshot left uses deleted. A query still reading an expired
        snapshot may then fail; the next one reads the current data."""
        lake = _literal(LAKE)
        rewritten = self.fetchall(
            f"CALL ducklake_rewrite_data_files({lake}, delete_threshold => {REWRITE_DELETED_SHARE})"
        )
        merged = self.fetchall(f"CALL ducklake_merge_adjacent_files({lake})")
        cutoff = datetime.now(UTC) - expire_older_than
        expired = self.fetchall(f"CALL ducklake_expire_snapshots({lake}, older_than => ?)", [cutoff])
        deleted = self.fetchall(f"CALL ducklake_cleanup_old_files({lake}, cleanup_all => true)")
        files_in = sum(int(row[2]) for row in rewritten + merged)
        files_out = sum(int(row[3]) for row in rewritten + merged)
        return (
            f"{self.display_url}: {files_in} data files rewritten into {files_out}, "
            f"{len(expired)} snapshots older than {cutoff:%Y-%m-%d %H:%M} UTC expired, "
            f"{len(deleted)} unused files deleted"
        )

    # -- schema changes --------------------------------------------------------------------

    def _change_columns(self, table: str, changes: Sequence[SchemaChange]) -> None:
        """DuckLake alters tables in place, in its catalog (the limits of DuckDB's own file
        do not apply), but changes a column's type only losslessly: a column that becomes
        text needs the table rebuilt."""
        if any(c.change_type == "alter_type" and c.new_type == SqlType.TEXT for c in changes):
            self._rebuild(table, changes)
            self._rebuild_holders(table, changes)
        else:
            Warehouse._change_columns(self, table, changes)

    def drop_column(self, table: str, column: str) -> None:
        Warehouse.drop_column(self, table, column)


def _import_ids(extra_info: str | None) -> list[int]:
    """The ledger ids a snapshot's extra info lists; none for a snapshot not the engine's."""
    try:
        ids = json.loads(extra_info or "{}").get("import_ids", [])
    except (ValueError, AttributeError):
        return []
    return [int(i) for i in ids if isinstance(i, int)]
