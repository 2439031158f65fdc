"""Reading: any supported file becomes raw headers plus batches of rows (Polars frames)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgdatahub_dagster.engine.errors import UnreadableFileError
from pgdatahub_dagster.engine.read.delimited import DELIMITED_EXTENSIONS, read_delimited
from pgdatahub_dagster.engine.read.reader_process import read_workbook, start_reader
from pgdatahub_dagster.engine.read.table import RawTable
from pgdatahub_dagster.engine.read.workbook import WORKBOOK_EXTENSIONS
from pgdatahub_dagster.engine.settings import ReadLimits

SUPPORTED_EXTENSIONS = WORKBOOK_EXTENSIONS | DELIMITED_EXTENSIONS
DEFAULT_LIMITS = ReadLimits()

__all__ = ["SUPPORTED_EXTENSIONS", "RawTable", "is_supported", "open_table", "prepare_reader"]


def is_supported(name: str) -> bool:
    """Spreadsheet or delimited text, and not an Office lock file (``~$book.xlsx``). By
    string, as ``PurePosixPath(name).suffix`` tells it: the sensor asks this of every file of
    the tree at every tick, and ``pathlib`` was a fifth of an idle tick over 100,000 files."""
    if name.startswith(("~$", ".")):
        return False
    last = name.rstrip("/").rpartition("/")[2]
    dot = last.rfind(".")
    return 0 < dot < len(last) - 1 and last[dot:].lower() in SUPPORTED_EXTENSIONS


def prepare_reader(name: str) -> None:
    """Start what will read a file named ``name`` ahead of its read: a workbook's reader
    process starts while the file is fetched and its import prepared."""
    if Path(name).suffix.lower() in WORKBOOK_EXTENSIONS:
        start_reader()


@contextmanager
def open_table(
    path: Path,
    source_file: str,
    *,
    sheet: str | None = None,
    default_sheet: str | None = None,
    header_row: int | None = None,
    batch_rows: int = 100_000,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> Iterator[RawTable]:
    """Open ``path`` (shown to users as ``source_file``) and yield its rows in batches: of
    ``batch_rows`` for delimited text, one for a workbook's sheet (read whole anyway).

    ``header_row`` is 1-based, as spreadsheet programs number rows. A file over one of the
    ``limits`` fails with ``LimitExceededError`` before the expensive work.
    """
    extension = path.suffix.lower()
    if extension in WORKBOOK_EXTENSIONS:
        yield read_workbook(path, source_file, sheet, default_sheet, header_row, limits)
    elif extension in DELIMITED_EXTENSIONS:
        with read_delimited(path, source_file, header_row, batch_rows, limits) as table:
            yield table
    else:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnreadableFileError(source_file, f"unsupported file type {extension!r}; supported: {supported}")
