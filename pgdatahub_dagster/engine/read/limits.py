"""The reader's limits (``settings.ReadLimits``) as the errors a file over one of them fails
with: each names the limit and the variable that raises it."""

from __future__ import annotations

from pgdatahub_dagster.engine.errors import LimitExceededError
from pgdatahub_dagster.engine.settings import (
    MAX_CELLS_VAR,
    MAX_COLUMNS_VAR,
    MAX_LINE_MB_VAR,
    MAX_READ_MEMORY_MB_VAR,
    ReadLimits,
)


def check_columns(columns: int, source_file: str, limits: ReadLimits, where: str = "") -> None:
    if columns > limits.max_columns:
        raise LimitExceededError(
            source_file,
            f"{where}has {columns:,} columns, more than the limit of {limits.max_columns:,} "
            f"(set {MAX_COLUMNS_VAR} to raise it; PostgreSQL holds at most 1,600 in a table)",
        )


def check_cells(cells: int, what: str, source_file: str, limits: ReadLimits) -> None:
    """``what`` says how the cells were counted, e.g. ``sheet 'Data' declares 8,192 × 16,384``."""
    if cells > limits.max_cells:
        raise LimitExceededError(
            source_file,
            f"{what} cells, more than the limit of {limits.max_cells:,} (set {MAX_CELLS_VAR} to raise it; "
            "reading a sheet takes about 100 bytes of memory per cell)",
        )


def readable_size(size: float) -> str:
    """``1.28 GB``, ``64 MB``, ``2 KB``, ``100 bytes``."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            scaled = size / scale
            return f"{scaled:,.0f} {unit}" if scaled >= 100 else f"{scaled:,.3g} {unit}"
    return f"{size:,.0f} bytes"


def line_too_long(source_file: str, line: int, limits: ReadLimits) -> LimitExceededError:
    return LimitExceededError(
        source_file,
        f"line {line:,} is longer than {readable_size(limits.max_line_bytes)}, the limit "
        f"(set {MAX_LINE_MB_VAR} to raise it); "
        "a quote that is never closed also makes the rest of the file one line",
    )


def part_too_large(
    source_file: str, part: str, size: int, allowed: int, limits: ReadLimits
) -> LimitExceededError:
    """A part of a zip-based workbook that unpacks to more than its cells could need."""
    return LimitExceededError(
        source_file,
        f"its part {part} unpacks to {readable_size(size)}, more than the {readable_size(allowed)} "
        f"a sheet of {limits.max_cells:,} cells could need (set {MAX_CELLS_VAR} to raise it)",
    )


def out_of_read_memory(source_file: str, limits: ReadLimits, what: str) -> LimitExceededError:
    """The workbook reader ran out of its memory; ``what`` says how it showed, e.g.
    ``it asked for 320 MB more``."""
    return LimitExceededError(
        source_file,
        f"reading it takes more than the {limits.max_read_memory_bytes / 2**20:,.0f} MB of memory "
        f"the workbook reader may use ({what}; set {MAX_READ_MEMORY_MB_VAR} to raise it); "
        "a workbook can hold far more cells than its size suggests (repeated cells in an ods, "
        "a sheet larger than it declares)",
    )
