"""One file through every stage: read → normalise → dedup → evolve the schema → load.

Each file is one transaction: its rows, its ownership records, its schema changes and its
``success`` ledger row commit together. On any error all of it rolls back. An error of the
file's own — anything reading, normalising or loading its data raises, the warehouse refusing
its data included — writes a ``failed`` ledger row with the file and the reason; the caller
goes on with the next file, and the file's earlier version, if any, keeps its rows. A system
fault (``SYSTEM_FAULTS``: the warehouse or the source lost, a full disk, a broken
configuration) is raised instead: no file is to blame, and the next run imports this one.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import polars as pl

from pgdatahub_dagster.engine.dedup import ROW_KEY_COLUMN, row_keys
from pgdatahub_dagster.engine.errors import (
    BadKeyError,
    CommitConflict,
    ConfigError,
    DataRefusedError,
    FileImportError,
    SystemFaultError,
)
from pgdatahub_dagster.engine.mapping import FolderMapping, FolderSettings, FolderTables
from pgdatahub_dagster.engine.normalise import normalise_frame, unique_column_names
from pgdatahub_dagster.engine.read import open_table, prepare_reader
from pgdatahub_dagster.engine.schema import (
    SchemaChange,
    plan_schema_changes,
    sql_type_of,
)
from pgdatahub_dagster.engine.schema.types import cast_to
from pgdatahub_dagster.engine.settings import ReadLimits
from pgdatahub_dagster.engine.sources import Source, SourceFile, SourceUnavailableError
from pgdatahub_dagster.engine.warehouse import (
    LINEAGE_COLUMNS,
    HoldingImport,
    ImportRecord,
    Lineage,
    Warehouse,
)
from pgdatahub_dagster.engine.warehouse.ownership import Holder, RowOwnership

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 100_000
#: Rows keyed and loaded at a time, of a batch normalised whole.
LOAD_SLICE_ROWS = 25_000

#: What stops a run rather than failing the file being imported.
SYSTEM_FAULTS = (SystemFaultError, SourceUnavailableError, ConfigError, MemoryError)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class ImportResult:
    """What happened to one file; the same facts as its ledger row, plus the schema changes."""

    record: ImportRecord
    schema_changes: list[SchemaChange] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def failed(self) -> bool:
        return self.record.status == "failed"


@dataclass(frozen=True)
class ImportProgress:
    """How far the import of one file has come, after each batch it loaded."""

    source_file: str
    table: str
    rows_read: int
    seconds: float  # since the file's first batch was read

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


#: Hears of each batch loaded: long imports can show they are alive and how fast they go.
ProgressCallback = Callable[[ImportProgress], None]


@dataclass
class _Counts:
    rows_read: int = 0
    sheet: str | None = None
    changes: list[SchemaChange] = field(default_factory=list)


class Importer:
    """Imports files of one source into one warehouse, following the folder mapping."""

    def __init__(
        self,
        warehouse: Warehouse,
        source: Source,
        mapping: FolderMapping,
        run_id: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        read_limits: ReadLimits | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.source = source
        self.mapping = mapping
        self.run_id = run_id
        # Read once, at the start of a run: a broken value stops the run, not each file.
        self.read_limits = read_limits or ReadLimits.from_env()
        self.batch_rows = batch_rows
        self.progress = progress
        self._folder_tables: FolderTables | None = None

    def settings_for(self, file: SourceFile) -> FolderSettings:
        return self.mapping.settings_for(file.folder, self.source.root_name_for(file))

    def folder_tables(self) -> FolderTables:
        """The tables of the source's folders, resolved once per importer (one listing of
        the folders per run), to refuse files whose folder shares its table by accident."""
        if self._folder_tables is None:
            self._folder_tables = self.mapping.tables_for(self.source.folders())
        return self._folder_tables

    def import_all(self, files: Iterable[SourceFile] | None = None) -> Iterator[ImportResult]:
        """Import every file (by default, all of the source); a failure stops only its file."""
        for file in self.source.list_files() if files is None else files:
            yield self.import_file(file)

    def import_file(self, file: SourceFile) -> ImportResult:
        prepare_reader(file.path)
        settings = self.settings_for(file)
        import_id = self.warehouse.next_import_id()
        started_at = datetime.now(UTC)
        record = ImportRecord(
            id=import_id,
            table_name=settings.table,
            source_file=file.path,
            source_file_id=file.file_id,
            file_sha256="",
            status="failed",
            run_id=self.run_id,
            started_at=started_at,
            finished_at=started_at,
            source=self.source.name,
            modified_at=file.modified_at,
            read_as=settings.read_as(),
        )
        counts = _Counts()
        try:
            self.folder_tables().check(file.path, self.source.root_name_for(file), file.folder)
            with self.source.fetch(file) as copy:
                record.file_sha256 = copy.sha256

                def attempt() -> ImportRecord:
                    # A transaction that lost a commit race runs again from the start.
                    nonlocal counts
                    counts = _Counts()
                    done = replace(record)
                    self._import(copy.path, file, settings, done, counts)
                    return done

                record = self.warehouse.run_transaction(attempt)
        except CommitConflict as error:
            record.error = f"{file.path}: not imported: {error}; the next sync imports it"
        except SYSTEM_FAULTS:
            raise
        except FileImportError as error:
            record.error = str(error)
        except DataRefusedError as error:
            record.error = f"{file.path}: {error}"
        except OSError as error:
            if error.errno in _DISK_FULL:  # the private snapshot of the file (Source.fetch)
                raise SystemFaultError(f"no disk space left to import {file.path}: {error}") from error
            record.error = f"{file.path}: {type(error).__name__}: {error}"
        except Exception as error:
            # Whatever else the file's data sets off fails that file alone; the traceback is
            # logged, as it may be a bug worth reporting.
            log.warning("unexpected error importing %s", file.path, exc_info=True)
            record.error = f"{file.path}: {type(error).__name__}: {error}"
        if record.error is None:
            if record.status == "skipped":
                log.info("SKIPPED %s: %s", file.path, skip_reason(record))
            else:
                log.info("DONE %s → %s: %d new rows", file.path, settings.table, record.rows_inserted)
            return ImportResult(record, counts.changes)
        self._record_failure(record, counts)
        return ImportResult(record)

    def _record_failure(self, record: ImportRecord, counts: _Counts) -> None:
        """Write the ledger row of a failed import, in its own transaction: everything the
        import did was rolled back, so the file's earlier version (if any) still holds."""
        log.warning("FAILED %s", record.error)
        record.status = "failed"
        record.rows_read = record.rows_inserted = record.rows_duplicate = record.rows_deleted = 0
        record.rows_held = 0
        record.replaced_import_id = record.duplicate_of = None
        record.sheet_name = counts.sheet
        record.finished_at = datetime.now(UTC)
        with self.warehouse.transaction():
            self.warehouse.record_import(record)

    def _import(
        self, path: Path, file: SourceFile, settings: FolderSettings, record: ImportRecord, counts: _Counts
    ) -> None:
        """Everything one file does to the warehouse, inside its transaction."""
        warehouse, table = self.warehouse, settings.table
        # Lock every table the file touches, in one order, so concurrent imports never deadlock.
        earlier = warehouse.holding_imports(file.file_id)
        for name in sorted({table} | {h.table_name for h in earlier}):
            warehouse.lock(name)
        earlier = warehouse.holding_imports(file.file_id)  # as of now that we hold the locks
        # The file now maps to another table (its folder moved or was mapped anew): its rows
        # leave the tables it was in before, as a fresh import would not put them there.
        for old in (h for h in earlier if h.table_name != table):
            old_settings = self.mapping.settings_for(
                PurePosixPath(old.source_file).parent.parts, self.source.root_name_for(file)
            )
            ownership = RowOwnership(warehouse, old.table_name, old_settings.prefer)
            record.rows_deleted += ownership.release(
                [(old.id, old.source_file_id, old.file_sha256)], "replaced"
            )
        here = [h for h in earlier if h.table_name == table]
        ownership = RowOwnership(warehouse, table, settings.prefer)
        ownership.apply_prefer()
        # Same bytes read under the same settings (unknown for imports older than the record).
        unchanged = next(
            (h for h in here if h.file_sha256 == record.file_sha256 and h.read_as in (None, record.read_as)),
            None,
        )
        if unchanged is not None:
            self._refresh(unchanged, file, ownership, record)
            return
        record.status = "success"
        warehouse.record_import(record)
        if here:
            # The earlier version gives way first: it stops holding rows, and the rows only it
            # supplied leave (the ones this version holds too come back with its values).
            ownership.retire([h.id for h in here], "replaced")
            record.replaced_import_id = here[-1].id
            record.rows_deleted += ownership.make_way(file.file_id, [h.file_sha256 for h in here], record.id)
        self._load(path, file, settings, record, counts, ownership)
        record.rows_deleted -= ownership.rows_brought_back()
        record.finished_at = datetime.now(UTC)
        warehouse.update_import(record)

    def _refresh(
        self, unchanged: HoldingImport, file: SourceFile, ownership: RowOwnership, record: ImportRecord
    ) -> None:
        """The content is already loaded for this file: nothing is read. Its rank may have
        changed (touched, renamed, restored after a deletion under ``keep``), and a fresh
        import would rank it anew, so the keys it holds are decided again."""
        warehouse = self.warehouse
        record.status = "skipped"
        record.duplicate_of = unchanged.source_file
        now = ("success", file.path, file.modified_at)
        ranked_anew = (unchanged.status, unchanged.source_file, unchanged.modified_at) != now
        if ranked_anew or unchanged.read_as != record.read_as:
            warehouse.set_rank(unchanged.id, *now, record.read_as)
        if ranked_anew:
            if unchanged.source_file != file.path:
                ownership.rename(file.file_id, unchanged.file_sha256, file.path)
            ownership.refresh(unchanged.id, file.file_id, unchanged.file_sha256)
        record.finished_at = datetime.now(UTC)
        warehouse.record_import(record)

    def _load(
        self,
        path: Path,
        file: SourceFile,
        settings: FolderSettings,
        record: ImportRecord,
        counts: _Counts,
        ownership: RowOwnership,
    ) -> None:
        warehouse, table = self.warehouse, settings.table
        lineage = Lineage(file.path, file.file_id, record.file_sha256, record.started_at)
        holder = Holder(record.id, lineage)
        with open_table(
            path,
            file.path,
            sheet=settings.sheet,
            default_sheet=settings.default_sheet,
            header_row=settings.header_row,
            batch_rows=self.batch_rows,
            limits=self.read_limits,
        ) as raw:
            counts.sheet = raw.sheet
            names = unique_column_names(raw.headers, reserved=LINEAGE_COLUMNS)
            key_columns = _key_columns(settings, names, file.path)
            started = time.monotonic()
            key_version = warehouse.row_key_version(table)
            # Read again only after a change: reading waits for the load still running in the
            # background, which would otherwise never overlap the next batch's reading.
            columns = warehouse.table_columns(table)
            for batch in raw.batches:
                frame = normalise_frame(batch.rename(dict(zip(batch.columns, names, strict=True))))
                if frame.height == 0:
                    continue
                # The batch's types, from all its rows, before it is cut into slices.
                types = {name: sql_type_of(frame[name]) for name in frame.columns}
                plan = plan_schema_changes(columns, types)
                if plan.changes:
                    warehouse.apply_schema_changes(table, plan.changes)
                    columns = warehouse.table_columns(table)
                    warehouse.record_schema_changes(
                        record.id, table, plan.changes, file.path, self.run_id, datetime.now(UTC)
                    )
                    counts.changes += plan.changes
                # Keyed and loaded a slice at a time: a slice's COPY runs in the background
                # while the next slice is keyed, and the last one to wait for is short.
                for part in frame.iter_slices(LOAD_SLICE_ROWS):
                    counts.rows_read += part.height
                    part = _with_row_keys(part, key_columns, settings.phone_region, key_version)
                    part = part.with_columns(
                        cast_to(part[name], kind) for name, kind in plan.load_types.items()
                    )
                    merged = ownership.load_batch(part, plan.load_types, holder)
                    record.rows_inserted += merged.supplied
                    record.rows_held += merged.held
                if self.progress is not None:
                    seconds = time.monotonic() - started
                    self.progress(ImportProgress(file.path, table, counts.rows_read, seconds))
        settled = ownership.finish_load(holder)
        record.rows_inserted += settled.supplied
        record.rows_held += settled.held
        record.sheet_name = counts.sheet
        record.rows_read = counts.rows_read
        record.rows_duplicate = counts.rows_read - record.rows_inserted


def skip_reason(record: ImportRecord) -> str:
    """Why a file was skipped, in words: its content is already loaded."""
    if record.duplicate_of in (None, record.source_file):
        return f"already imported into {record.table_name}, unchanged"
    return f"already imported into {record.table_name} as {record.duplicate_of}, unchanged"


def _key_columns(settings: FolderSettings, names: Sequence[str], source_file: str) -> tuple[str, ...] | None:
    """The configured key columns, checked against the file; ``None`` means all columns."""
    if settings.unique_key is None or settings.unique_key == ():
        return settings.unique_key
    missing = [name for name in settings.unique_key if name not in names]
    if missing:
        raise BadKeyError(
            source_file,
            f"unique_key column(s) {', '.join(missing)} not found; the file has: {', '.join(names)}",
        )
    return settings.unique_key


def _with_row_keys(
    frame: pl.DataFrame, key_columns: tuple[str, ...] | None, phone_region: str, version: int
) -> pl.DataFrame:
    if key_columns == ():
        return frame.with_columns(pl.lit(None, dtype=pl.String).alias(ROW_KEY_COLUMN))
    if key_columns is None:
        keys = row_keys(frame, sorted(frame.columns), phone_region, label_columns=True, version=version)
    else:
        # A key column left empty in this batch was dropped by normalising; it still takes
        # part in the key (as empty), so the same row keys the same in every batch and file.
        missing = [
            pl.lit(None, dtype=pl.String).alias(name) for name in key_columns if name not in frame.columns
        ]
        keys = row_keys(frame.with_columns(missing), key_columns, phone_region, version=version)
    # Repeats inside the file count as duplicates too; the first occurrence wins.
    return frame.with_columns(keys).unique(subset=[ROW_KEY_COLUMN], keep="first", maintain_order=True)
