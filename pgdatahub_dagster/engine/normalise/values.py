"""Honest column types.

Text stays text unless every value of the column says otherwise: ``"01234"`` is a zip
code, not the number 1234; a column of ``true``/``false`` is boolean; ISO dates are dates.
A float column whose values are all whole numbers (how Excel stores every number) becomes
an integer, and datetimes that are all at midnight become dates. A column with a value its
type cannot hold on every warehouse (``1e400``, the year 0 or 10000) stays text, so every
warehouse stores the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import polars as pl

from pgdatahub_dagster.engine.schema.types import SqlType, cast_to, fits_date_range

# Whole numbers without leading zeros; 18 digits always fit in a signed 64-bit integer,
# so anything longer (account numbers, ids) stays text instead of losing digits.
_INTEGER = r"^[+-]?(0|[1-9][0-9]{0,17})$"
# A mantissa with at least one digit: ids like E1 or e100 are text, not 10 and 1e100.
_DECIMAL = r"^[+-]?((0|[1-9][0-9]*)(\.[0-9]+)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# A mantissa that is not zero: such a value read as 0 was too small for a double.
_NONZERO_MANTISSA = r"^[^eE]*[1-9]"
_LONG_DIGIT_RUN = r"^[+-]?[0-9]{19,}$"
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?$"
_BOOLEAN_TEXT = ("true", "false")
# 2**53: above it a float no longer holds every whole number exactly.
_MAX_EXACT_FLOAT = 9_007_199_254_740_992.0


def normalise_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Trim text, drop empty rows and columns, and give every column its honest type."""
    frame = _without_nul(frame)
    frame = frame.with_columns(_trimmed(name, dtype) for name, dtype in frame.schema.items())
    frame = frame.select(name for name in frame.columns if frame[name].null_count() < frame.height)
    if frame.width == 0:
        return frame.clear()
    frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
    verdicts = _text_verdicts(frame)
    return frame.with_columns(
        _from_text(frame[name], verdicts[name]) if name in verdicts else _honest(frame[name])
        for name in frame.columns
    )


def _without_nul(frame: pl.DataFrame) -> pl.DataFrame:
    """Text without NUL characters: PostgreSQL cannot store them, and they are nothing
    anyone sees or types, so they go on every warehouse alike."""
    texts = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not texts:
        return frame
    # Finding them is a quarter of the cost of removing them, which most files never need.
    found = frame.select(pl.col(texts).str.contains("\x00", literal=True).any()).row(0)
    with_nul = [name for name, hit in zip(texts, found, strict=True) if hit]
    if not with_nul:
        return frame
    return frame.with_columns(pl.col(with_nul).str.replace_all("\x00", "", literal=True))


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
    if column.dtype.is_float():
        return _whole_floats_to_int(column)
    if isinstance(column.dtype, pl.Datetime):
        if column.dtype.time_zone is not None:
            column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        column = _midnights_to_date(column)
    if column.dtype == pl.Date or isinstance(column.dtype, pl.Datetime):
        return column if fits_date_range(column) else cast_to(column, SqlType.TEXT)
    return column


# What a text column's non-null values must all satisfy to take a type.
_ALL_TESTS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "boolean": lambda values: values.str.to_lowercase().is_in(_BOOLEAN_TEXT).all(),
    "integer": lambda values: values.str.contains(_INTEGER).all(),
    "decimal": lambda values: values.str.contains(_DECIMAL).all(),
    "iso_date": lambda values: values.str.contains(_ISO_DATE).all(),
    "iso_timestamp": lambda values: values.str.contains(_ISO_TIMESTAMP).all(),
}
# Most text columns fail every test on their first values, so every test runs first on
# these, and on a whole column only when its sample passed: all() of a column is false
# whenever it is false for a part of it.
_SAMPLE_ROWS = 1_000


@functools.lru_cache(maxsize=64)
def _sample_tests(names: tuple[str, ...]) -> list[pl.Expr]:
    """Every test on the first values of every column, and the columns' value counts;
    results are labelled "<column position>:<test>". Kept: files of a folder share columns."""
    sample = [
        test(pl.col(name).drop_nulls().head(_SAMPLE_ROWS)).alias(f"{index}:{key}")
        for index, name in enumerate(names)
        for key, test in _ALL_TESTS.items()
    ]
    return sample + [
        pl.col(name).drop_nulls().len().alias(f"{index}:count") for index, name in enumerate(names)
    ]


def _text_verdicts(frame: pl.DataFrame) -> dict[str, dict[str, bool]]:
    """For every text column, which tests its non-null values pass.

    All columns and tests are asked in one ``select`` (two with the sample), not one
    call per column and test: with small files the calls, not the data, were the cost.
    """
    names = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not names:
        return {}
    first = frame.select(_sample_tests(tuple(names))).row(0, named=True)
    verdicts = [{key: bool(first[f"{index}:{key}"]) for key in _ALL_TESTS} for index in range(len(names))]
    whole = [
        test(pl.col(name).drop_nulls()).alias(f"{index}:{key}")
        for index, name in enumerate(names)
        if first[f"{index}:count"] > _SAMPLE_ROWS
        for key, test in _ALL_TESTS.items()
        if verdicts[index][key]
    ]
    # Whole numbers of 19 digits and more stay text rather than turn into floats.
    whole += [
        pl.col(name).drop_nulls().str.contains(_LONG_DIGIT_RUN).any().alias(f"{index}:long_digits")
        for index, name in enumerate(names)
        if verdicts[index]["decimal"]
    ]
    if whole:
        for label, value in frame.select(whole).row(0, named=True).items():
            position, key = label.split(":")
            verdicts[int(position)][key] = bool(value)
    for index, passes in enumerate(verdicts):
        passes["empty"] = first[f"{index}:count"] == 0
        passes.setdefault("long_digits", False)
    return dict(zip(names, verdicts, strict=True))


def _from_text(column: pl.Series, passes: dict[str, bool]) -> pl.Series:
    if passes["empty"]:
        return column
    if passes["boolean"]:
        return column.str.to_lowercase() == "true"
    if passes["integer"]:
        return column.str.to_integer(strict=True)
    if passes["decimal"] and not passes["long_digits"]:
        return _doubles(column)
    if passes["iso_date"]:
        parsed = column.str.to_date("%Y-%m-%d", strict=False)
        if parsed.null_count() == column.null_count() and fits_date_range(parsed):
            return parsed
        return column
    if passes["iso_timestamp"]:
        parsed = column.str.replace("T", " ").str.to_datetime(time_unit="us", strict=False)
        if parsed.null_count() == column.null_count() and fits_date_range(parsed):
            return _midnights_to_date(parsed)
    return column


def _doubles(column: pl.Series) -> pl.Series:
    """Decimal text as doubles, unless a value is beyond a double's range: ``1e400`` would
    be stored as infinity and ``1e-400`` as 0, so the column keeps its text."""
    parsed = column.cast(pl.Float64, strict=True)
    zeros = column.filter(parsed == 0)
    if bool(parsed.is_infinite().any()) or bool(zeros.str.contains(_NONZERO_MANTISSA).any()):
        return column
    return parsed


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
