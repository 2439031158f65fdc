"""Workbooks (xlsx, xlsm, xls, xlsb, ods) through fastexcel: one sheet read whole.

This runs in the workbook reader's process (``reader_process``), whose memory is capped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastexcel
import polars as pl

from pgdatahub_dagster.engine.errors import LimitExceededError, SheetNotFoundError, UnreadableFileError
from pgdatahub_dagster.engine.read.limits import check_columns
from pgdatahub_dagster.engine.read.sheet_size import (
    check_compound_file,
    check_sheet_size,
    check_workbook_size,
)
from pgdatahub_dagster.engine.settings import ReadLimits

WORKBOOK_EXTENSIONS = frozenset({".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"})
# Whose sheets are XML parts with a declared dimension (sheet_size.py).
_XML_SHEETS = frozenset({".xlsx", ".xlsm"})

_DEDUPLICATED_HEADER = re.compile(r"^(?P<base>.+)_(?P<number>\d+)$")


def _reason(error: BaseException) -> str:
    """calamine's message, first line only, in words a user can act on."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    lowered = message.lower()
    if "password" in lowered or "encrypt" in lowered:
        return "the workbook is password-protected; save a copy without a password and import that"
    if "not an office document" in lowered or "invalid ole" in lowered or "zip" in lowered:
        return f"not a readable workbook (corrupt, or another kind of file renamed): {message}"
    return f"the workbook is corrupt or uses features the reader does not support: {message}"


def _is_reader_panic(error: BaseException) -> bool:
    # A bug in the Rust reader surfaces as pyo3's PanicException, a BaseException; it
    # concerns this file only, so it becomes a per-file failure like any corrupt file.
    return type(error).__name__ == "PanicException"


def choose_sheet(
    sheet_names: list[str], sheet: str | None, default_sheet: str | None, source_file: str
) -> str:
    """The configured sheet, else ``default_sheet`` when present, else the first sheet."""
    if sheet is not None:
        if sheet not in sheet_names:
            available = ", ".join(repr(name) for name in sheet_names) or "none"
            raise SheetNotFoundError(
                source_file, f"sheet {sheet!r} does not exist; the workbook has: {available}"
            )
        return sheet
    if default_sheet is not None and default_sheet in sheet_names:
        return default_sheet
    if not sheet_names:
        raise UnreadableFileError(source_file, "the workbook has no sheets")
    return sheet_names[0]


def _raw_headers(sheet: fastexcel.ExcelSheet) -> list[str]:
    """The header texts as typed, undoing fastexcel's own naming of blank and repeated headers."""
    headers: list[str] = []
    # Every column is selected (no use_columns), so these are all the sheet's columns;
    # unlike available_columns(), reading them costs nothing.
    for column in sheet.selected_columns:
        name = column.name
        if column.column_name_from == "generated":
            name = ""
        else:
            repeated = _DEDUPLICATED_HEADER.match(name)
            if repeated and repeated["base"] in headers:
                name = repeated["base"]
        headers.append(name)
    return headers


@dataclass
class LoadedSheet:
    """A sheet read whole: its raw header texts and its rows, columns named ``c0``, ``c1``…"""

    headers: list[str]
    frame: pl.DataFrame
    sheet: str


def load_sheet(
    path: Path,
    source_file: str,
    sheet: str | None,
    default_sheet: str | None,
    header_row: int | None,
    limits: ReadLimits,
) -> LoadedSheet:
    check_workbook_size(path, source_file, limits)
    check_compound_file(path, source_file)
    try:
        reader = fastexcel.read_excel(path)
        chosen = choose_sheet(reader.sheet_names, sheet, default_sheet, source_file)
        if path.suffix.lower() in _XML_SHEETS:
            check_sheet_size(path, reader.sheet_names.index(chosen), chosen, source_file, limits)
        header_index = (header_row or 1) - 1

        def load(**options: Any) -> tuple[fastexcel.ExcelSheet, pl.DataFrame]:
            loaded = reader.load_sheet(chosen, header_row=header_index, **options)
            check_columns(loaded.width, source_file, limits, f"sheet {chosen!r} ")
            return loaded, loaded.to_polars()

        try:
            # Every row decides a column's type: a sample would let a late text value be
            # coerced away.
            loaded, frame = load(schema_sample_rows=None)
        except fastexcel.FastExcelError:
            # Columns mixing kinds calamine cannot unify (dates with durations, error
            # cells): read everything as text and let normalising find honest types.
            loaded, frame = load(dtypes="string")
    except (SheetNotFoundError, UnreadableFileError, LimitExceededError):
        raise
    except fastexcel.FastExcelError as error:
        raise UnreadableFileError(source_file, _reason(error)) from None
    except BaseException as error:
        if not _is_reader_panic(error):
            raise
        raise UnreadableFileError(source_file, _reason(error)) from None
    frame = frame.rename({old: f"c{index}" for index, old in enumerate(frame.columns)})
    return LoadedSheet(_raw_headers(loaded), frame, chosen)
