"""The column types the importer creates, and how they widen.

Types only ever widen along INTEGER → BIGINT → DOUBLE PRECISION → TEXT and
DATE → TIMESTAMP → TEXT; any other pair meets at TEXT, which holds every value.
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl


class SqlType(StrEnum):
    """A warehouse-neutral column type; its value is the name written to the audit table."""

    BOOLEAN = "BOOLEAN"
    INTEGER = "INTEGER"
    BIGINT = "BIGINT"
    DOUBLE = "DOUBLE PRECISION"
    DATE = "DATE"
    TIMESTAMP = "TIMESTAMP"
    TEXT = "TEXT"


_CHAINS: tuple[tuple[SqlType, ...], ...] = (
    (SqlType.INTEGER, SqlType.BIGINT, SqlType.DOUBLE, SqlType.TEXT),
    (SqlType.DATE, SqlType.TIMESTAMP, SqlType.TEXT),
    (SqlType.BOOLEAN, SqlType.TEXT),
)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# The years a DATE or TIMESTAMP holds alike on every warehouse: PostgreSQL has no year 0
# (it refuses it, and counts earlier years as BC), and no Python client reads a year after
# 9999 as a date (DuckDB's hands it over as text).
_FIRST_YEAR, _LAST_YEAR = 1, 9999

POLARS_TYPE: dict[SqlType, pl.DataType] = {
    SqlType.BOOLEAN: pl.Boolean(),
    SqlType.INTEGER: pl.Int32(),
    SqlType.BIGINT: pl.Int64(),
    SqlType.DOUBLE: pl.Float64(),
    SqlType.DATE: pl.Date(),
    SqlType.TIMESTAMP: pl.Datetime("us"),
    SqlType.TEXT: pl.String(),
}


def widen(current: SqlType, incoming: SqlType) -> SqlType:
    """The narrowest type that holds every value of both types."""
    if current == incoming:
        return current
    for chain in _CHAINS:
        if current in chain and incoming in chain:
            return max(current, incoming, key=chain.index)
    return SqlType.TEXT


def fits_date_range(column: pl.Series) -> bool:
    """Whether every value of a date or datetime column lies in the years 1 to 9999."""
    years = column.dt.year()
    return bool(((years >= _FIRST_YEAR) & (years <= _LAST_YEAR)).all())


def sql_type_of(column: pl.Series) -> SqlType:
    """The type a normalised Polars column is stored as."""
    dtype = column.dtype
    if dtype == pl.Boolean:
        return SqlType.BOOLEAN
    if dtype.is_integer():
        low, high = column.min(), column.max()
        if low is None or (low >= _INT32_MIN and high <= _INT32_MAX):  # type: ignore[operator]
            return SqlType.INTEGER
        return SqlType.BIGINT
    if dtype.is_float():
        return SqlType.DOUBLE
    if dtype == pl.Date:
        return SqlType.DATE
    if isinstance(dtype, pl.Datetime):
        return SqlType.TIMESTAMP
    return SqlType.TEXT


def cast_to(column: pl.Series, target: SqlType) -> pl.Series:
    """Cast a column to a (wider) stored type, writing dates and times as ISO text."""
    if target == SqlType.TEXT:
        if column.dtype == pl.Date:
            return column.dt.to_string("%Y-%m-%d")
        if isinstance(column.dtype, pl.Datetime):
            return column.dt.to_string("%Y-%m-%d %H:%M:%S%.f")
        if column.dtype.is_float():
            # Write 7.0 as "7", as both databases do when they widen a column to text.
            whole = (column == column.floor()) & (column.abs() < 1e15)
            as_int = column.cast(pl.Int64, strict=False).cast(pl.String)
            return (
                pl.select(pl.when(whole).then(as_int).otherwise(column.cast(pl.String)))
                .to_series()
                .alias(column.name)
            )
    return column.cast(POLARS_TYPE[target])
