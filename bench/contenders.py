"""Every contender: one way of landing the same file(s) in a database.

Each runs alone in a fresh interpreter (``python -m bench.worker``) so that its peak RSS
is its own. ``setup`` does the imports and anything a user would have done beforehand
(creating an indexed table); only ``run`` is timed. ``run`` returns the rows it read and
the rows the table holds afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.data import COLUMNS, KEY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TABLE = "listings"
# The typed table a person would declare by hand for the listings.
_SQL_TYPES = {
    "rating": "DOUBLE PRECISION",
    "review_count": "INTEGER",
    "opened": "DATE",
}
TYPED_COLUMNS = ", ".join(f"{name} {_SQL_TYPES.get(name, 'TEXT')}" for name in COLUMNS)


@dataclass
class Outcome:
    rows_in: int
    rows_out: int
    note: str = ""
    #: Figures a scenario needs besides rows and seconds (e.g. API calls).
    extra: dict[str, Any] = field(default_factory=dict)


class Contender:
    """One way to load; subclasses set ``description`` and implement ``run``."""

    description = ""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def setup(self) -> None:
        """Imports and preparation, not timed."""

    def run(self) -> Outcome:
        raise NotImplementedError


CONTENDERS: dict[str, type[Contender]] = {}


def contender(name: str) -> Callable[[type[Contender]], type[Contender]]:
    def register(cls: type[Contender]) -> type[Contender]:
        CONTENDERS[name] = cls
        return cls

    return register


def _count(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _polars_batches(path: Path, rows: int | None = None) -> Iterator[Any]:
    """The CSV as Polars frames of 100,000 rows, types inferred as a user's script would."""
    import polars as pl

    scan = pl.scan_csv(path, infer_schema_length=10_000, schema_overrides={"zip": pl.String})
    if rows is not None:
        scan = scan.head(rows)
    yield from scan.collect_batches(chunk_size=100_000)


# -- the project's engine ------------------------------------------------------------------


def _import_engine(url: str) -> None:
    """Everything the engine imports lazily (the drivers of each warehouse, the readers), so
    that no contender's timing includes imports, as for every other contender."""
    import importlib

    from pgdatahub_dagster.engine.warehouse import warehouse_kind

    for module in ("duckdb", "postgres", "ducklake"):
        importlib.import_module(f"pgdatahub_dagster.engine.warehouse.{module}")
    for module in ("delimited", "workbook", "encoding"):
        importlib.import_module(f"pgdatahub_dagster.engine.read.{module}")
    if warehouse_kind(url) == "duckdb":
        # DuckDB imports pandas, when installed, as it binds its first parameter (0.3-0.5 s,
        # 80 MB); an import into PostgreSQL never does.
        importlib.import_module("pandas")


def _fill_ledger(warehouse: Any, rows: int, tables: int) -> None:
    """A PostgreSQL ledger's history, as years of syncs leave it: ``rows`` imports of other
    files, one in ten an earlier, replaced version of a file of the listings table, the rest
    live files of ``tables`` other tables (``history_0`` …)."""
    with warehouse.transaction():
        warehouse.execute(
            "INSERT INTO etl_imports (id, table_name, source_file, source_file_id, file_sha256, status, "
            "rows_read, rows_inserted, rows_duplicate, run_id, started_at, finished_at, rows_deleted, "
            "source, rows_held) "
            f"SELECT nextval('etl_imports_id_seq'), CASE WHEN i % 10 = 0 THEN '{TABLE}' "
            f"ELSE 'history_' || (i / 10 % {int(tables)}) END, 'history/' || i || '.csv', "
            "'history/' || i || '.csv', md5(i::text), "
            "CASE WHEN i % 10 = 0 THEN 'replaced' ELSE 'success' END, 200, 200, 0, 'bench', now(), now(), "
            f"0, 'local', 200 FROM generate_series(1, {int(rows)}) AS i"
        )
    warehouse.execute("ANALYZE etl_imports")


@contender("engine_status")
class EngineStatus(Contender):
    """``pgdatahub status`` (the CLI's ``main``, in process, output discarded) over a warehouse
    of ``tables`` tables of two rows each and a ledger of ``ledger_rows`` imports."""

    description = "pgdatahub status"

    def setup(self) -> None:
        _import_engine(self.params["url"])
        from pgdatahub_dagster.cli import main
        from pgdatahub_dagster.engine.warehouse import connect

        self.main = main
        tables, url = int(self.params["tables"]), self.params["url"]
        with connect(url) as warehouse:
            _fill_ledger(warehouse, self.params["ledger_rows"], tables)
            for number in range(tables):
                # A transaction a table: one of thousands of tables runs out of locks.
                with warehouse.transaction():
                    warehouse.execute(
                        f"CREATE TABLE history_{number} (id BIGINT, source_file TEXT, source_file_id TEXT, "
                        "file_sha256 TEXT, load_timestamp TIMESTAMPTZ, _row_key UUID)"
                    )
                    warehouse.execute(
                        f"INSERT INTO history_{number} (id) VALUES ({number}), ({number + tables})"
                    )

    def run(self) -> Outcome:
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = self.main(["--database-url", self.params["url"], "status"])
        if code != 0:
            raise RuntimeError(f"pgdatahub status exited {code}: {printed.getvalue()[-2000:]}")
        listed = sum(line.startswith("history_") for line in printed.getvalue().splitlines())
        return Outcome(self.params["ledger_rows"], listed)


@contender("engine")
class Engine(Contender):
    """pgdatahub's Importer over a folder: read, normalise, key, evolve, load, ledger."""

    description = "pgdatahub engine (Importer.import_all)"

    def setup(self) -> None:
        _import_engine(self.params["url"])
        from pgdatahub_dagster.engine.importer import Importer
        from pgdatahub_dagster.engine.mapping import FolderMapping
        from pgdatahub_dagster.engine.report import row_counts
        from pgdatahub_dagster.engine.sources import LocalFolderSource
        from pgdatahub_dagster.engine.warehouse import connect

        self.connect, self.importer, self.row_counts = connect, Importer, row_counts
        root = Path(self.params["source_dir"])
        self.source = LocalFolderSource(root)
        self.mapping = FolderMapping.load(root / "pgdatahub.yaml")
        if self.params.get("warm_reader"):
            # The workbook reader is an interpreter importing Polars and fastexcel: started
            # (and waited for) here, as every contender's imports are done before the timer.
            from pgdatahub_dagster.engine.read.reader_process import start_reader

            start_reader(wait=True)
        if self.params.get("ledger_rows"):
            with connect(self.params["url"]) as warehouse:
                _fill_ledger(warehouse, self.params["ledger_rows"], self.params["history_tables"])

    def run(self) -> Outcome:
        rows_in = 0
        failed = []
        with self.connect(self.params["url"]) as warehouse:
            for result in self.importer(warehouse, self.source, self.mapping).import_all():
                rows_in += result.record.rows_read
                if result.status != "success":
                    failed.append(f"{result.record.source_file}: {result.status} {result.record.error}")
            # The table's rows: rows_inserted also counts rows a later file took over.
            tables = [table for (table,) in warehouse.fetchall("SELECT DISTINCT table_name FROM etl_imports")]
            rows_out = sum(self.row_counts(warehouse, tables).values())
        if failed:
            raise RuntimeError("; ".join(failed[:5]))
        return Outcome(rows_in, rows_out)


@contender("engine_refuses")
class EngineRefuses(Engine):
    """The same Importer, with the default read limits, over a folder of files it must refuse:
    each must end ``failed``; its reason is reported."""

    description = "pgdatahub engine (Importer.import_all) over a hostile file, default limits"

    def run(self) -> Outcome:
        with self.connect(self.params["url"]) as warehouse:
            results = list(self.importer(warehouse, self.source, self.mapping).import_all())
        imported = [f"{r.record.source_file}: {r.status}" for r in results if r.status != "failed"]
        if imported or not results:
            raise RuntimeError(f"expected every file to fail, got {imported or 'no files'}")
        errors = [r.record.error or "" for r in results]
        return Outcome(0, 0, "; ".join(errors), {"errors": errors})


# -- a changed file: the same file identity, new content -----------------------------------


class _ChangedFile(Contender):
    """Setup (not timed): the first version of a file imported by the engine into the fresh
    database, then the file overwritten in place by its next version, so the source folder
    holds the same relative path with new content. ``run`` lands the new version."""

    #: The file's relative path in the source folder: the engine's identity of a local file.
    file_id = "listings.csv"

    def setup(self) -> None:
        _import_engine(self.params["url"])
        from pgdatahub_dagster.engine.importer import Importer
        from pgdatahub_dagster.engine.mapping import FolderMapping
        from pgdatahub_dagster.engine.report import row_counts
        from pgdatahub_dagster.engine.sources import LocalFolderSource
        from pgdatahub_dagster.engine.warehouse import connect

        self.connect, self.importer, self.row_counts = connect, Importer, row_counts
        root = Path(self.params["source_dir"])
        self.source = LocalFolderSource(root)
        self.mapping = FolderMapping.load(root / "pgdatahub.yaml")
        if self.params.get("ledger_rows"):
            with connect(self.params["url"]) as warehouse:
                _fill_ledger(warehouse, self.params["ledger_rows"], self.params["history_tables"])
        target = root / self.file_id
        target.unlink(missing_ok=True)  # a real file, not a link to the cached data
        shutil.copyfile(self.params["csv_v1"], target)
        with connect(self.params["url"]) as warehouse:
            self.import_folder(warehouse)
        self.settle()
        shutil.copyfile(self.params["csv_v2"], target)

    def settle(self) -> None:
        """The table as it stands some time after the first import: vacuumed, analysed, its
        pages flushed (PostgreSQL; skipped without the rights)."""
        if not self.params["url"].startswith("postgresql"):
            return
        import psycopg

        try:
            with psycopg.connect(self.params["url"], autocommit=True) as conn:
                conn.execute(f"VACUUM (ANALYZE) {TABLE}")
                conn.execute("CHECKPOINT")
        except psycopg.Error:
            pass

    def import_folder(self, warehouse: Any) -> Any:
        """Import the folder's one file with the engine; its ledger record."""
        results = list(self.importer(warehouse, self.source, self.mapping).import_all())
        if len(results) != 1 or results[0].status != "success":
            raise RuntimeError(
                f"expected one successful import, got {[(r.status, r.record.error) for r in results]}"
            )
        record = results[0].record
        if record.source_file_id != self.file_id:
            raise RuntimeError(f"imported {record.source_file_id!r}, expected {self.file_id!r}")
        return record

    def table_after(self, warehouse: Any) -> tuple[int, int]:
        """The table's rows, and the sum of its review counts: both contenders must agree."""
        rows, reviews = warehouse.fetchall(
            f"SELECT count(*), sum(review_count) FROM {warehouse.quote(TABLE)}"
        )[0]
        return int(rows), int(reviews or 0)


@contender("engine_reimport")
class EngineReimport(_ChangedFile):
    """The engine's changed-file path: the new version imported over the old one, whose rows
    it replaces in the same transaction."""

    description = "pgdatahub engine: Importer.import_all over the changed file (replaces its rows)"

    def run(self) -> Outcome:
        with self.connect(self.params["url"]) as warehouse:
            record = self.import_folder(warehouse)
            rows_out, reviews = self.table_after(warehouse)
        if not record.rows_deleted or record.replaced_import_id is None:
            raise RuntimeError("the new version did not replace the old one's rows")
        return Outcome(
            record.rows_read,
            rows_out,
            f"{record.rows_deleted:,} old rows replaced by {record.rows_inserted:,}",
            {
                "rows_deleted": record.rows_deleted,
                "rows_inserted": record.rows_inserted,
                "review_count_sum": reviews,
            },
        )


@contender("delete_reinsert")
class DeleteReinsert(_ChangedFile):
    """Delete the file's rows and import it again whole, through the engine's own code:
    ``revert(selector="file_id")`` (one transaction), then an import of the new version."""

    description = "engine revert(selector=file_id) of the old version, then Importer.import_all of the new"

    def run(self) -> Outcome:
        from pgdatahub_dagster.engine.revert import revert

        with self.connect(self.params["url"]) as warehouse:
            reverted = revert(warehouse, selector="file_id", value=self.file_id)
            record = self.import_folder(warehouse)
            rows_out, reviews = self.table_after(warehouse)
        if not reverted.rows_deleted or record.rows_deleted:
            raise RuntimeError("the revert did not remove the old version's rows")
        return Outcome(
            record.rows_read,
            rows_out,
            f"{reverted.rows_deleted:,} old rows reverted, {record.rows_inserted:,} inserted",
            {
                "rows_deleted": reverted.rows_deleted,
                "rows_inserted": record.rows_inserted,
                "review_count_sum": reviews,
            },
        )


@contender("dagster_materialize")
class DagsterMaterialize(Contender):
    """The documented bulk command, as a user runs it."""

    description = "dagster asset materialize --select local_folder_sync"

    def setup(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bench-dagster-home-"))
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")

    def run(self) -> Outcome:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "PGDATAHUB_SOURCE_DIR": self.params["source_dir"],
            "PGDATAHUB_DATABASE_URL": self.params["url"],
            # Unset: the code location's default, the run's single step in the run's own process.
            "PGDATAHUB_EXECUTOR": self.params.get("executor", ""),
        }
        command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize"]
        command += ["-m", "pgdatahub_dagster.definitions", "--select", "local_folder_sync"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)
        if done.returncode != 0:
            raise RuntimeError(f"dagster exited {done.returncode}: {done.stderr[-2000:]}")
        rows_read, imported, stored = _ledger(self.params["url"])
        return Outcome(rows_read, stored, f"{imported} files imported")


def _ledger(url: str) -> tuple[int, int, int]:
    """Rows read by successful imports, their count, and the rows stored in the table."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(rows_read), count(*) FROM etl_imports WHERE status = 'success'"
        ).fetchone()
        exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
        stored = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() if exists and exists[0] else (0,)
    assert row is not None and stored is not None
    return int(row[0] or 0), int(row[1]), int(stored[0])


@contender("dagster_sensor_backfill")
class DagsterSensorBackfill(Contender):
    """A first load as the sensor does it under a real ``dagster-daemon``: its first tick
    finds every file, registers them and launches one backfill of ``PGDATAHUB_FILES_PER_RUN``
    files per run, which the backfill daemon runs, ``pool`` imports side by side. Timed from
    the daemon's start to the last file in the ledger and every run ended. ``instance``: ``sqlite``, the
    repository's dagster.yaml, or ``postgres``, deploy/dagster.yaml (dagster-postgres, in a
    database of its own on the warehouse's server) with ``DAGSTER_EVENT_BATCH_SIZE`` set, as
    docs/deployment.md tells a production instance to run."""

    description = "dagster-daemon: local_folder_sensor → one backfill, pool of 2"

    def setup(self) -> None:
        from dagster import DagsterInstance

        self.home = Path(tempfile.mkdtemp(prefix="bench-dagster-home-"))
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "PGDATAHUB_SOURCE_DIR": self.params["source_dir"],
            "PGDATAHUB_DATABASE_URL": self.params["url"],
            "PGDATAHUB_SENSOR_INTERVAL": "1",
            "PGDATAHUB_SENSOR_SETTLE_SECONDS": "0",
            "PGDATAHUB_SENSOR_BACKFILL_FILES": str(self.params["backfill_files"]),
        }
        self.dagster_database = None
        if self.params.get("instance") == "postgres":
            import psycopg

            self.dagster_database = f"{urlsplit(self.params['url']).path.lstrip('/')}_dagster"
            with psycopg.connect(self.params["url"], autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.dagster_database}"')
            dagster_url = urlsplit(self.params["url"])._replace(path=f"/{self.dagster_database}")
            self.env["DAGSTER_POSTGRES_URL"] = dagster_url._replace(scheme="postgresql+psycopg2").geturl()
            self.env["DAGSTER_EVENT_BATCH_SIZE"] = "1000"
            shutil.copy(ROOT / "deploy" / "dagster.yaml", self.home / "dagster.yaml")
        else:
            shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        os.environ.update(self.env)
        # Opened beforehand, as it takes seconds; the timed part only reads it.
        self.instance = DagsterInstance.from_config(str(self.home))
        # PostgreSQL takes imports side by side (README: raise the pool for PostgreSQL).
        self.instance.event_log_storage.set_concurrency_slots("warehouse", self.params.get("pool", 2))
        self.files = len(list(Path(self.params["source_dir"]).glob("*.csv")))

    def run(self) -> Outcome:
        import time

        from dagster import DagsterRunStatus, RunsFilter

        command = [str(Path(sys.executable).parent / "dagster-daemon"), "run"]
        command += ["-m", "pgdatahub_dagster.definitions"]
        log = self.home / "daemon.log"
        with log.open("wb") as output:
            daemon = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + self.params.get("timeout", 7200)
                while (ledger := self._ledger_if_ready())[1] < self.files or self._runs_in_progress():
                    if daemon.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the daemon stopped or timed out: {log.read_text()[-2000:]}")
                    time.sleep(0.5)
            finally:
                os.killpg(daemon.pid, 15)
                daemon.wait(60)
        with self.instance as instance:
            backfills = instance.get_backfills()
            runs = instance.get_runs(RunsFilter(tags={"pgdatahub/source": "local"}))
        shutil.rmtree(self.home, ignore_errors=True)
        if self.dagster_database is not None:
            import psycopg

            with psycopg.connect(self.params["url"], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{self.dagster_database}" WITH (FORCE)')
        if len(backfills) != 1:
            raise RuntimeError(f"expected one backfill from the sensor, found {len(backfills)}")
        if failed := [run.run_id for run in runs if run.status != DagsterRunStatus.SUCCESS]:
            raise RuntimeError(f"runs of the backfill did not succeed: {failed}")
        rows_read, imported, stored = ledger
        return Outcome(
            rows_read,
            stored,
            f"{imported} files in one backfill of {len(runs)} runs",
            {"files": imported, "runs": len(runs)},
        )

    def _runs_in_progress(self) -> bool:
        """Whether a run has not ended: its last step records the partitions' materialisations
        after the last import, and the UI shows them only then."""
        from dagster import RunsFilter
        from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

        return bool(self.instance.get_runs_count(RunsFilter(statuses=list(NOT_FINISHED_STATUSES))))

    def _ledger_if_ready(self) -> tuple[int, int, int]:
        import psycopg

        try:
            return _ledger(self.params["url"])
        except psycopg.errors.UndefinedTable:
            return 0, 0, 0  # no import has created the ledger yet


# -- plain PostgreSQL ----------------------------------------------------------------------


def _copy_file(conn: Any, table: str, path: Path) -> None:
    statement = f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
    with conn.cursor() as cursor, cursor.copy(statement) as copy, path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            copy.write(chunk)


@contender("copy_indexed")
class CopyIndexed(Contender):
    """The limit: the file's bytes straight to the server, which parses them, and a unique
    index on the raw (name, address, phone). COPY aborts on a duplicate key, so the rows go
    through a temporary table and one INSERT … ON CONFLICT DO NOTHING: the plainest SQL that
    lands this file. Exact duplicates only; messy ones stay."""

    description = "COPY → temp table → INSERT … ON CONFLICT into a table with UNIQUE (name, address, phone)"

    def setup(self) -> None:
        import psycopg

        self.conn = psycopg.connect(self.params["url"], autocommit=True)
        self.conn.execute(f"CREATE TABLE {TABLE} ({TYPED_COLUMNS})")
        self.conn.execute(f"CREATE UNIQUE INDEX ON {TABLE} ({', '.join(KEY_COLUMNS)})")

    def run(self) -> Outcome:
        path = Path(self.params["csv"])
        with self.conn.transaction():
            self.conn.execute(f"CREATE TEMPORARY TABLE stage ({TYPED_COLUMNS}) ON COMMIT DROP")
            _copy_file(self.conn, "stage", path)
            rows_in = int(self.conn.execute("SELECT count(*) FROM stage").fetchone()[0])  # type: ignore[index]
            self.conn.execute(f"INSERT INTO {TABLE} SELECT * FROM stage ON CONFLICT DO NOTHING")
        return Outcome(rows_in, _count(self.params["url"], TABLE))


@contender("copy_plain")
class CopyPlain(Contender):
    """The ceiling: COPY into a typed table with no index; keeps every duplicate."""

    description = "COPY into a typed table, no index, no de-duplication"

    def setup(self) -> None:
        import psycopg

        self.conn = psycopg.connect(self.params["url"], autocommit=True)
        self.conn.execute(f"CREATE TABLE {TABLE} ({TYPED_COLUMNS})")

    def run(self) -> Outcome:
        with self.conn.transaction():
            _copy_file(self.conn, TABLE, Path(self.params["csv"]))
        rows = _count(self.params["url"], TABLE)
        return Outcome(rows, rows)


# -- dlt ------------------------------------------------------------------------------------


def _dlt_setup() -> Any:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    import dlt

    return dlt


def _dlt_postgres(dlt: Any, url: str) -> Any:
    """dlt's destination for a URL; a socket directory travels as libpq's host parameter."""
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    parts = urlsplit(url)
    credentials = PostgresCredentials()
    credentials.database = parts.path.lstrip("/")
    credentials.username = parts.username or "postgres"
    credentials.password = parts.password or ""
    credentials.host = parts.hostname or "localhost"
    credentials.port = parts.port or 5432
    credentials.query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    return dlt.destinations.postgres(credentials=credentials)


def _keyed_arrow(frame: Any) -> Any:
    import polars as pl

    # dlt requires primary key columns to be non-null.
    return frame.with_columns(pl.col(*KEY_COLUMNS).fill_null("")).to_arrow()


class _Dlt(Contender):
    destination_name = ""
    loader_file_format = "parquet"

    def setup(self) -> None:
        self.dlt = _dlt_setup()
        import polars  # noqa: F401  (imported here so that the timed part excludes it)

        self.pipelines_dir = tempfile.mkdtemp(prefix="bench-dlt-")

    def destination(self) -> Any:
        raise NotImplementedError

    def pipeline(self) -> Any:
        return self.dlt.pipeline(
            pipeline_name="bench",
            destination=self.destination(),
            dataset_name="bench",
            pipelines_dir=self.pipelines_dir,
        )

    def resource(self, frames: Callable[[], Iterator[Any]]) -> Any:
        @self.dlt.resource(name=TABLE, write_disposition="merge", primary_key=KEY_COLUMNS)
        def listings() -> Iterator[Any]:
            for frame in frames():
                yield _keyed_arrow(frame)

        return listings()

    def rows_in_destination(self) -> int:
        raise NotImplementedError

    def run(self) -> Outcome:
        path = Path(self.params["csv"])
        rows_in = 0

        def frames() -> Iterator[Any]:
            nonlocal rows_in
            for frame in _polars_batches(path):
                rows_in += frame.height
                yield frame

        self.pipeline().run(self.resource(frames), loader_file_format=self.loader_file_format)
        shutil.rmtree(self.pipelines_dir, ignore_errors=True)
        return Outcome(rows_in, self.rows_in_destination())


@contender("dlt_postgres")
class DltPostgres(_Dlt):
    """dlt 1.x merge on the same primary key, Arrow items, parquet loaded through ADBC."""

    description = "dlt merge, primary key (name, address, phone), parquet via ADBC"

    def destination(self) -> Any:
        return _dlt_postgres(self.dlt, self.params["url"])

    def rows_in_destination(self) -> int:
        return _count(self.params["url"], f"bench.{TABLE}")


@contender("dlt_duckdb")
class DltDuckDB(_Dlt):
    """dlt merge into a DuckDB file."""

    description = "dlt merge into DuckDB, primary key (name, address, phone)"

    def destination(self) -> Any:
        return self.dlt.destinations.duckdb(credentials=self.params["duckdb_path"])

    def rows_in_destination(self) -> int:
        import duckdb

        with duckdb.connect(self.params["duckdb_path"], read_only=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM bench.{TABLE}").fetchone()
        return int(row[0]) if row else 0


@contender("dlt_per_file")
class DltPerFile(_Dlt):
    """dlt the way a per-file trigger runs it: one pipeline run per file."""

    description = "dlt merge, one pipeline.run per file"

    def destination(self) -> Any:
        return _dlt_postgres(self.dlt, self.params["url"])

    def run(self) -> Outcome:
        import polars as pl

        files = sorted(Path(self.params["source_dir"]).glob("*.csv"))
        pipeline = self.pipeline()
        rows_in = 0
        for path in files:
            frame = pl.read_csv(path, infer_schema_length=10_000, schema_overrides={"zip": pl.String})
            rows_in += frame.height
            pipeline.run(self.resource(lambda frame=frame: iter([frame])), loader_file_format="parquet")
        shutil.rmtree(self.pipelines_dir, ignore_errors=True)
        return Outcome(rows_in, _count(self.params["url"], f"bench.{TABLE}"), f"{len(files)} runs")


# -- DuckDB on its own -----------------------------------------------------------------------


@contender("duckdb_read_csv")
class DuckDBReadCsv(Contender):
    """The limit in DuckDB: its own parallel CSV reader straight into a table; no
    de-duplication."""

    description = "DuckDB CREATE TABLE AS SELECT * FROM read_csv(...)"

    def setup(self) -> None:
        import duckdb

        self.conn = duckdb.connect(self.params["duckdb_path"])

    def run(self) -> Outcome:
        path = str(self.params["csv"]).replace("'", "''")
        self.conn.execute(
            f"CREATE TABLE {TABLE} AS SELECT * FROM read_csv('{path}', types={{'zip': 'VARCHAR'}})"
        )
        row = self.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        self.conn.close()
        rows = int(row[0]) if row else 0
        return Outcome(rows, rows)


@contender("duckdb_copy_parquet")
class DuckDBCopyParquet(Contender):
    """The limit for a lake: DuckDB's own CSV reader writing one Parquet file, the format a
    DuckLake stores; no catalog, no de-duplication."""

    description = "DuckDB COPY (SELECT * FROM read_csv(...)) TO '….parquet'"

    def setup(self) -> None:
        import duckdb

        self.conn = duckdb.connect()

    def run(self) -> Outcome:
        path = str(self.params["csv"]).replace("'", "''")
        target = str(self.params["parquet"]).replace("'", "''")
        read = f"SELECT * FROM read_csv('{path}', types={{'zip': 'VARCHAR'}})"
        self.conn.execute(f"COPY ({read}) TO '{target}' (FORMAT parquet)")
        row = self.conn.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()
        self.conn.close()
        rows = int(row[0]) if row else 0
        return Outcome(rows, rows)


def _ducklake_extension() -> str:
    """The ducklake extension's path in its PyPI package (offline, ``INSTALL`` fails)."""
    import duckdb
    import duckdb_extension_ducklake

    assert duckdb_extension_ducklake.__file__ is not None
    folder = Path(duckdb_extension_ducklake.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    return str(folder / "ducklake.duckdb_extension")


@contender("dlt_ducklake")
class DltDuckLake(_Dlt):
    """dlt merge into a DuckLake (a DuckDB-file catalog, Parquet in a folder), the extension
    loaded from its PyPI package."""

    description = "dlt merge into DuckLake, primary key (name, address, phone)"

    def destination(self) -> Any:
        from dlt.destinations.impl.ducklake.configuration import DuckLakeCredentials

        lake = Path(self.params["lake"])
        credentials = DuckLakeCredentials(
            "bench_lake", catalog=f"duckdb:///{lake / 'catalog.duckdb'}", storage=f"{lake / 'data'}/"
        )
        credentials.extensions = ["'" + _ducklake_extension().replace("'", "''") + "'"]
        credentials.global_config = {"autoinstall_known_extensions": False}
        return self.dlt.destinations.ducklake(credentials=credentials)

    def rows_in_destination(self) -> int:
        import duckdb

        catalog = str(Path(self.params["lake"]) / "catalog.duckdb").replace("'", "''")
        with duckdb.connect() as conn:
            conn.execute("LOAD '" + _ducklake_extension().replace("'", "''") + "'")
            conn.execute(f"ATTACH 'ducklake:{catalog}' AS lake (READ_ONLY)")
            row = conn.execute(f"SELECT count(*) FROM lake.bench.{TABLE}").fetchone()
        return int(row[0]) if row else 0


@contender("duckdb_read_csv_indexed")
class DuckDBReadCsvIndexed(DuckDBReadCsv):
    """The limit in DuckDB for the same result: its own reader into a table with a unique
    index on the key, repeats left out by the index (``INSERT OR IGNORE``)."""

    description = "DuckDB INSERT OR IGNORE INTO a table with UNIQUE (name, address, phone) SELECT read_csv"

    def setup(self) -> None:
        super().setup()
        typed = TYPED_COLUMNS.replace("DOUBLE PRECISION", "DOUBLE")
        self.conn.execute(f"CREATE TABLE {TABLE} ({typed}, UNIQUE ({', '.join(KEY_COLUMNS)}))")

    def run(self) -> Outcome:
        path = str(self.params["csv"]).replace("'", "''")
        self.conn.execute(
            f"INSERT OR IGNORE INTO {TABLE} SELECT * FROM read_csv('{path}', types={{'zip': 'VARCHAR'}})"
        )
        stored = self.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        read = self.conn.execute(f"SELECT count(*) FROM read_csv('{path}')").fetchone()
        self.conn.close()
        return Outcome(int(read[0]) if read else 0, int(stored[0]) if stored else 0)


# -- workbooks -------------------------------------------------------------------------------


@contender("fastexcel_read")
class FastexcelRead(Contender):
    """The limit for workbooks: fastexcel reading the sheet into Polars, nothing else."""

    description = "fastexcel read_excel → load_sheet(all rows typed) → Polars; no database"

    def setup(self) -> None:
        import fastexcel
        import polars  # noqa: F401

        self.fastexcel = fastexcel

    def run(self) -> Outcome:
        reader = self.fastexcel.read_excel(self.params["xlsx"])
        frame = reader.load_sheet(0, schema_sample_rows=None).to_polars()
        return Outcome(frame.height, 0, "read only")


# -- pandas, as an old ETL script did it -----------------------------------------------------


class _Pandas(Contender):
    def setup(self) -> None:
        import pandas
        import psycopg
        import sqlalchemy

        self.pandas = pandas
        with psycopg.connect(self.params["url"], autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {TABLE} ({TYPED_COLUMNS})")
            conn.execute(f"CREATE UNIQUE INDEX ON {TABLE} ({', '.join(KEY_COLUMNS)})")
        self.engine = sqlalchemy.create_engine(
            self.params["url"].replace("postgresql://", "postgresql+psycopg2://")
        )

    def frame(self) -> Any:
        raise NotImplementedError

    def run(self) -> Outcome:
        frame = self.frame()
        rows_in = len(frame)
        frame = frame.drop_duplicates(subset=list(KEY_COLUMNS))
        frame.to_sql(TABLE, self.engine, if_exists="append", index=False, method="multi", chunksize=2000)
        self.engine.dispose()
        return Outcome(rows_in, _count(self.params["url"], TABLE))


@contender("pandas_to_sql")
class PandasToSql(_Pandas):
    """pandas read_csv, drop_duplicates on the key, to_sql(method="multi", chunksize=2000)."""

    description = 'pandas read_csv → drop_duplicates → to_sql(method="multi", chunksize=2000)'

    def frame(self) -> Any:
        return self.pandas.read_csv(self.params["csv"], nrows=self.params["rows"], dtype={"zip": str})


@contender("pandas_openpyxl")
class PandasOpenpyxl(_Pandas):
    """pandas read_excel through openpyxl, then the same to_sql."""

    description = 'pandas read_excel(openpyxl) → drop_duplicates → to_sql(method="multi")'

    def frame(self) -> Any:
        return self.pandas.read_excel(
            self.params["xlsx"], engine="openpyxl", nrows=self.params["rows"], dtype={"zip": str}
        )


# -- Google Drive ----------------------------------------------------------------------------


class _SensorTick(Contender):
    """One evaluation of a code location's sensor (``sensor_name``) from a cursor, with the
    test server, definitions and instance ``setup`` made."""

    sensor_name = ""

    def _tick(self, cursor: str | None) -> Any:
        from dagster import build_sensor_context

        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            os.environ.pop(name, None)  # httplib2 would send loopback traffic to a proxy
        sensor = self.defs.resolve_sensor_def(self.sensor_name)
        with build_sensor_context(
            instance=self.instance, cursor=cursor, resources=self.defs.resources
        ) as context:
            return sensor(context)


@contender("drive_tick")
class DriveTick(_SensorTick):
    """One tick of the code location's drive_sensor, over a watched tree already walked, with a
    few files changed: the real client over HTTP to the project's Drive test server."""

    description = "drive_sensor: one tick after a few changes (Dagster sensor evaluation)"
    sensor_name = "drive_sensor"

    def setup(self) -> None:
        from dagster import DagsterInstance

        from pgdatahub_dagster.definitions import build_defs
        from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
        from pgdatahub_dagster.defs.sources.drive import DriveResource
        from pgdatahub_dagster.defs.sources.local import LocalFolderResource
        from pgdatahub_dagster.testing.drive_server import DriveTestServer

        self.server = DriveTestServer().start()
        root = self.server.add_folder("Inbox")
        folders = [self.server.add_folder(f"d{i:04d}", root) for i in range(self.params["folders"])]
        files = [
            self.server.add_file(f"f{i}.csv", folders[i % len(folders)], f"n\n{i}\n".encode())
            for i in range(self.params["files"])
        ]
        scratch = Path(tempfile.mkdtemp(prefix="bench-drive-"))
        token = scratch / "token.json"
        token.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "token": "bench",
                    "expiry": "2099-01-01T00:00:00Z",
                    "refresh_token": "bench",
                    "client_id": "bench",
                    "client_secret": "bench",
                }
            )
        )
        os.environ.update(
            PGDATAHUB_DRIVE_FOLDER_ID=root,
            PGDATAHUB_DRIVE_CREDENTIALS=str(token),
            PGDATAHUB_DRIVE_API_ENDPOINT=self.server.api_endpoint,
            PGDATAHUB_DRIVE_TICK_SECONDS="600",
        )
        self.defs = build_defs(
            {
                "warehouse": WarehouseResource(database_url=self.params["url"]),
                "folder_mapping": FolderMappingResource(),
                "local_folder": LocalFolderResource(source_dir=str(scratch)),
                "drive": DriveResource(),
            }
        )
        self.instance = DagsterInstance.ephemeral()
        walk = self._tick(None)  # the first tick walks the whole tree
        for request in walk.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = walk.cursor
        for file_id in files[: self.params["changes"]]:
            self.server.update_content(file_id, b"n\nchanged\n")
        self.server.reset_request_log()

    def run(self) -> Outcome:
        result = self._tick(self.cursor)
        calls = len(self.server.request_log)
        pages = self.server.request_count(path_contains="/changes")
        self.server.stop()
        requested = len(result.run_requests or [])
        return Outcome(
            self.params["changes"],
            requested,
            f"{calls} API calls ({pages} changes pages) for a tree of {self.params['files']:,} files",
            {"api_calls": calls, "changes_pages": pages, "runs_requested": requested},
        )


# -- Gmail -----------------------------------------------------------------------------------


@contender("gmail_tick")
class GmailTick(_SensorTick):
    """One tick of the code location's gmail_sensor over a mailbox already listed, with a few
    new messages, each with a workbook: the real client over HTTP to the project's Gmail test
    server."""

    description = "gmail_sensor: one tick after a few new messages (Dagster sensor evaluation)"
    sensor_name = "gmail_sensor"

    def setup(self) -> None:
        from dagster import DagsterInstance

        from pgdatahub_dagster.definitions import build_defs
        from pgdatahub_dagster.defs.resources import FolderMappingResource, WarehouseResource
        from pgdatahub_dagster.testing.gmail_server import Attachment, GmailTestServer

        self.server = GmailTestServer().start()
        vendor = "reports@vendor.example"

        def deliver(n: int) -> None:
            workbook = Attachment(f"r{n}.csv", f"n\n{n}\n".encode())
            self.server.add_message(sender=vendor, subject=f"report {n}", attachments=[workbook])

        for n in range(self.params["messages"]):
            deliver(n)
        scratch = Path(tempfile.mkdtemp(prefix="bench-gmail-"))
        mapping = scratch / "pgdatahub.yaml"
        mapping.write_text(f'gmail:\n  reports:\n    query: "from:{vendor} has:attachment"\n')
        os.environ.update(
            PGDATAHUB_CONFIG=str(mapping),
            PGDATAHUB_GMAIL_ACCESS_TOKEN="bench",
            PGDATAHUB_GMAIL_API_ENDPOINT=self.server.api_endpoint,
            # The setup's listing in as few ticks as it takes (pages of 500 ids), not the
            # hundred runs a tick of the default budget; the measured tick reads history.
            PGDATAHUB_SENSOR_MAX_RUNS=str(2 * self.params["messages"]),
            PGDATAHUB_SENSOR_TICK_SECONDS="600",
        )
        self.defs = build_defs(
            {
                "warehouse": WarehouseResource(database_url=self.params["url"]),
                "folder_mapping": FolderMappingResource(),
            }
        )
        self.instance = DagsterInstance.ephemeral()
        self.cursor = None
        while self.cursor is None or "listing" in json.loads(self.cursor):  # the first sync's listing
            listing = self._tick(self.cursor)
            for request in listing.dynamic_partitions_requests or []:
                keys = list(request.partition_keys)
                self.instance.add_dynamic_partitions(request.partitions_def_name, keys)
            self.cursor = listing.cursor
        for n in range(self.params["new"]):
            deliver(self.params["messages"] + n)
        self.server.reset_request_log()

    def run(self) -> Outcome:
        result = self._tick(self.cursor)
        calls, round_trips = len(self.server.request_log), self.server.round_trips
        self.server.stop()
        requested = len(result.run_requests or [])
        return Outcome(
            self.params["new"],
            requested,
            f"{round_trips} HTTP requests ({calls} API calls, batched ones counted one by one) "
            f"for a mailbox of {self.params['messages']:,} messages",
            {"api_calls": calls, "round_trips": round_trips, "runs_requested": requested},
        )


# -- sensor ticks at scale -------------------------------------------------------------------


class _DaemonTicks(Contender):
    """Sensor ticks as ``dagster-daemon`` runs them: the sensor daemon's own iteration
    (``execute_sensor_iteration``) over the code location in a gRPC code server of its own,
    so each tick pays what a deployed one pays: the evaluation in the code server (under
    Dagster's 60 s limit), the partition requests, the run and backfill submissions, the tick
    record. Only the sensor daemon runs: no backfill daemon or run queue launches the imports
    (that is ``many_files_large``). A tick's seconds are Dagster's own, from the tick record's
    start to its end."""

    def start(self, env: dict[str, str]) -> None:
        import logging

        from dagster import DagsterInstance
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import ModuleTarget

        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            os.environ.pop(name, None)  # httplib2 would send loopback traffic to a proxy
        self.home = Path(tempfile.mkdtemp(prefix="bench-dagster-home-"))
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        # The code server inherits this environment: settings are read there.
        os.environ.update(
            DAGSTER_HOME=str(self.home),
            PGDATAHUB_SENSOR_INTERVAL="1",
            PGDATAHUB_SENSOR_SETTLE_SECONDS="0",
            **env,
        )
        self.instance = DagsterInstance.get()
        target = ModuleTarget(
            module_name="pgdatahub_dagster.definitions",
            attribute=None,
            working_directory=str(ROOT),
            location_name=None,
        )
        self.workspace = WorkspaceProcessContext(self.instance, target)
        self.logger = logging.getLogger("bench.sensor_ticks")

    def tick(self, sensor_name: str) -> dict[str, Any]:
        """Run the sensor daemon's iterations until ``sensor_name`` has a new finished tick."""
        import time

        from dagster._core.scheduler.instigation import TickStatus
        from dagster._daemon.sensor import execute_sensor_iteration

        before = self._ticks(sensor_name)
        started = time.perf_counter()
        while True:
            for _ in execute_sensor_iteration(self.workspace, self.logger, None, None):
                pass
            ticks = self._ticks(sensor_name)
            done = [t for t in ticks.values() if t.tick_id not in before and t.status != TickStatus.STARTED]
            if done:
                break
            time.sleep(0.2)  # the sensor's minimum interval (1 s) has not passed yet
        (tick,) = done
        added = sum(len(r.added_partitions or []) for r in tick.tick_data.dynamic_partitions_request_results)
        backfills = [run_id for run_id in tick.run_ids if not self.instance.get_run_by_id(run_id)]
        return {
            "seconds": round(tick.end_timestamp - tick.timestamp, 3),
            "iteration_seconds": round(time.perf_counter() - started, 3),
            "status": tick.status.value,
            "added_partitions": added,
            "runs": len(tick.run_ids) - len(backfills),
            "backfills": len(backfills),
            "error": tick.error.message[:500] if tick.error else None,
        }

    def _ticks(self, sensor_name: str) -> dict[str, Any]:
        from dagster._core.scheduler.instigation import InstigatorType

        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == sensor_name:
                ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
                return {tick.tick_id: tick for tick in ticks}
        return {}

    def stop(self) -> None:
        self.workspace.__exit__(None, None, None)
        self.instance.dispose()
        shutil.rmtree(self.home, ignore_errors=True)

    def partitions(self, name: str) -> int:
        return len(self.instance.get_dynamic_partitions(name))


@contender("local_ticks")
class LocalTicks(_DaemonTicks):
    """The local sensor's first load of a large tree, tick after tick until every file is
    registered, then ``idle_ticks`` ticks with nothing new, a tick of ``runs`` new files (a run
    each), and a tick that finds ``deletions`` files gone at once (registered first, then
    deleted)."""

    description = "local_folder_sensor under the sensor daemon: first load of the tree, then idle ticks"

    def setup(self) -> None:
        # The tree is cached bench data: the few files the last tick finds come and go here.
        self.new_folder = Path(self.params["source_dir"]) / "new_files"
        shutil.rmtree(self.new_folder, ignore_errors=True)
        self.new_folder.mkdir()
        self.files = sum(1 for _ in Path(self.params["source_dir"]).rglob("*.csv"))
        self.start(
            {"PGDATAHUB_SOURCE_DIR": self.params["source_dir"], "PGDATAHUB_DATABASE_URL": self.params["url"]}
        )

    def run(self) -> Outcome:
        import time

        first, idle = [], []
        while (registered := self.partitions("local_files")) < self.files:
            first.append(self.tick("local_folder_sensor"))
            if len(first) > self.files // 100 + 10:
                raise RuntimeError(f"the first load stalled at {registered} files: {first[-1]}")
        for _ in range(self.params.get("idle_ticks", 3)):
            idle.append(self.tick("local_folder_sensor"))
        # A few new files, a run each: what Dagster takes to resolve and submit a run.
        runs = self.params.get("runs", 100)
        for index in range(runs):
            (self.new_folder / f"n{index:03d}.csv").write_text(f"code\nnew-{index}\n")
        time.sleep(0.05)  # past the newest change time, however coarse the file system's clock
        few = self.tick("local_folder_sensor")
        gone = self._deletion_tick(self.params.get("deletions", 0))
        self.stop()
        return Outcome(
            self.files,
            registered,
            f"{len(first)} ticks to register {registered:,} files, {len(idle)} idle ticks, "
            f"a tick of {few['runs']} runs, a tick of {gone.get('deleted', 0):,} files deleted",
            {"first_load_ticks": first, "idle_ticks": idle, "runs_tick": few, "deletion_tick": gone},
        )

    def _deletion_tick(self, deletions: int) -> dict[str, Any]:
        """``deletions`` new files, registered (a backfill), then deleted at once: the tick
        that finds them gone, and the partitions left after it."""
        if not deletions:
            return {}
        import time

        folder = self.new_folder / "gone"
        folder.mkdir()
        for index in range(deletions):
            (folder / f"d{index:05d}.csv").write_text(f"code\ngone-{index}\n")
        time.sleep(0.05)
        before = self.partitions("local_files")
        while self.partitions("local_files") < before + deletions:
            self.tick("local_folder_sensor")
        shutil.rmtree(folder)
        tick = self.tick("local_folder_sensor")
        left = self.partitions("local_files")
        return {**tick, "deleted": deletions, "partitions_left": left - before}

    def stop(self) -> None:
        shutil.rmtree(self.new_folder, ignore_errors=True)
        super().stop()


@contender("drive_ticks")
class DriveTicks(_DaemonTicks):
    """The Drive sensor's first walk of a large tree on the project's Drive test server (real
    client, real HTTP), tick after tick until every file is registered, then one idle tick."""

    description = "drive_sensor under the sensor daemon: the first walk of the tree, then an idle tick"

    def setup(self) -> None:
        from pgdatahub_dagster.testing.drive_server import DriveTestServer

        tables, folders, files = self.params["tree"]
        self.server = DriveTestServer().start()
        root = self.server.add_folder("Inbox")
        for table in range(tables):
            top = self.server.add_folder(f"t{table:02d}", root)
            for folder in range(folders):
                parent = self.server.add_folder(f"c{folder:03d}", top)
                for index in range(files):
                    self.server.add_file(
                        f"f{index:02d}.csv", parent, f"code\n{table}-{folder}-{index}\n".encode()
                    )
        self.files = tables * folders * files
        scratch = Path(tempfile.mkdtemp(prefix="bench-drive-"))
        self.start(
            {
                "PGDATAHUB_SOURCE_DIR": str(scratch),
                "PGDATAHUB_DATABASE_URL": self.params["url"],
                "PGDATAHUB_DRIVE_FOLDER_ID": root,
                "PGDATAHUB_DRIVE_ACCESS_TOKEN": "bench",
                "PGDATAHUB_DRIVE_API_ENDPOINT": self.server.api_endpoint,
            }
        )

    def run(self) -> Outcome:
        walk = []
        while (registered := self.partitions("drive_files")) < self.files:
            walk.append(self.tick("drive_sensor"))
            if len(walk) > 200:
                raise RuntimeError(f"the walk stalled at {registered} files: {walk[-1]}")
        idle = [self.tick("drive_sensor")]
        calls = len(self.server.request_log)
        self.server.stop()
        self.stop()
        return Outcome(
            self.files,
            registered,
            f"{len(walk)} ticks to walk {registered:,} files ({calls:,} API calls), then an idle tick",
            {"walk_ticks": walk, "idle_ticks": idle, "api_calls": calls},
        )
