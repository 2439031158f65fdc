"""Honest column types.

Text stays text unless every value of the column says otherwise: ``"01234"`` is a zip
code, not the number 1234; a column of ``true``/``false`` is boolean; ISO dates are dates.
A float column whose values are all whole numbers (how Excel stores every number) becomes
an integer, and datetimes that are all at midnight become dates.
"""

from __future__ import annotations

import polars as pl

# Whole numbers without leading zeros; 18 digits always fit in a signed 64-bit integer,
# so anything longer (account numbers, ids) stays text instead of losing digits.
_INTEGER = r"^[+-]?(0|[1-9][0-9]{0,17})$"
_DECIMAL = r"^[+-]?(0|[1-9][0-9]*)?(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
_HAS_DIGIT = r"[0-9]"
_LONG_DIGIT_RUN = r"^[+-]?[0-9]{19,}$"
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?$"
_BOOLEAN_TEXT = ("true", "false")
# 2**53: above it a float no longer holds every whole number exactly.
_MAX_EXACT_FLOAT = 9_007_199_254_740_992.0


def normalise_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Trim text, drop empty rows and columns, and give every column its honest type."""
    frame = frame.with_columns(_trimmed(name, dtype) for name, dtype in frame.schema.items())
    frame = frame.select(name for name in frame.columns if frame[name].null_count() < frame.height)
    if frame.width == 0:
        return frame.clear()
    frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
    return frame.with_columns(_honest(frame[name]) for name in frame.columns)


def _trimmed(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if dtype == pl.String:
        stripped = column.str.strip_chars()
        return pl.when(stripped == "").then(None).otherwise(stripped).alias(name)
    if dtype == pl.Duration:
        # Spreadsheets store times of day and spans as durations; they have no place in the
        # type lattice, so keep them readable as H:MM:SS text.
        seconds = column.dt.total_seconds()
        return pl.format(
            "{}:{}:{}",
            seconds // 3600,
            (seconds // 60 % 60).cast(pl.String).str.zfill(2),
            (seconds % 60).cast(pl.String).str.zfill(2),
        ).alias(name)
    if dtype == pl.Null:
        return column.cast(pl.String)
    return column


def _honest(column: pl.Series) -> pl.Series:
    if column.dtype == pl.String:
        return _from_text(column)
    if column.dtype.is_float():
        return _whole_floats_to_int(column)
    if isinstance(column.dtype, pl.Datetime):
        if column.dtype.time_zone is not None:
            column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return _midnights_to_date(column)
    return column


# Most text columns fail every test on their first values; looking at these first spares
# a full pass over the column per test. The answer is the same: all() of a column is false
# whenever it is false for a part of it.
_SAMPLE_ROWS = 1_000


def _all_match(values: pl.Series, pattern: str) -> bool:
    if values.len() > _SAMPLE_ROWS and not bool(values.head(_SAMPLE_ROWS).str.contains(pattern).all()):
        return False
    return bool(values.str.contains(pattern).all())


def _all_boolean(values: pl.Series) -> bool:
    if values.len() > _SAMPLE_ROWS and not _all_boolean(values.head(_SAMPLE_ROWS)):
        return False
    return bool(values.str.to_lowercase().is_in(_BOOLEAN_TEXT).all())


def _from_text(column: pl.Series) -> pl.Series:
    values = column.drop_nulls()
    if values.is_empty():
        return column
    if _all_boolean(values):
        return column.str.to_lowercase() == "true"
    if _all_match(values, _INTEGER):
        return column.str.to_integer(strict=True)
    if (
        _all_match(values, _DECIMAL)
        and _all_match(values, _HAS_DIGIT)
        and not bool(values.str.contains(_LONG_DIGIT_RUN).any())
    ):
        return column.cast(pl.Float64, strict=True)
    if _all_match(values, _ISO_DATE):
        parsed = column.str.to_date("%Y-%m-%d", strict=False)
        if parsed.null_count() == column.null_count():
            return parsed
        return column
    if _all_match(values, _ISO_TIMESTAMP):
        parsed = column.str.replace("T", " ").str.to_datetime(time_unit="us", strict=False)
        if parsed.null_count() == column.null_count():
            return _midnights_to_date(parsed)
    return column


def _whole_floats_to_int(column: pl.Series) -> pl.Series:
    values = column.drop_nulls()
    if values.is_empty() or not bool(values.is_finite().all()):
        return column
    if bool((values == values.floor()).all()) and float(values.abs().max()) <= _MAX_EXACT_FLOAT:  # type: ignore[arg-type]
        return column.cast(pl.Int64)
    return column


def _midnights_to_date(column: pl.Series) -> pl.Series:
    values = column.drop_nulls()
    if not values.is_empty() and bool((values.dt.truncate("1d") == values).all()):
        return column.dt.date()
    return column
