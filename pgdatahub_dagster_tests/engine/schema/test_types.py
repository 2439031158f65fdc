import datetime as dt

import polars as pl
import pytest

from pgdatahub_dagster.engine.schema import SqlType, sql_type_of, widen
from pgdatahub_dagster.engine.schema.types import cast_to, fits_date_range

T = SqlType


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (T.INTEGER, T.BIGINT, T.BIGINT),
        (T.BIGINT, T.INTEGER, T.BIGINT),
        (T.INTEGER, T.DOUBLE, T.DOUBLE),
        (T.DOUBLE, T.TEXT, T.TEXT),
        (T.DATE, T.TIMESTAMP, T.TIMESTAMP),
        (T.TIMESTAMP, T.DATE, T.TIMESTAMP),
        (T.DATE, T.INTEGER, T.TEXT),
        (T.BOOLEAN, T.INTEGER, T.TEXT),
        (T.TEXT, T.INTEGER, T.TEXT),
        (T.BOOLEAN, T.BOOLEAN, T.BOOLEAN),
    ],
)
def test_widening_never_narrows(current: SqlType, incoming: SqlType, expected: SqlType) -> None:
    assert widen(current, incoming) == expected


def test_integer_width_follows_the_values() -> None:
    assert sql_type_of(pl.Series([1, 2**31 - 1])) == T.INTEGER
    assert sql_type_of(pl.Series([1, 2**31])) == T.BIGINT
    assert sql_type_of(pl.Series([1.5])) == T.DOUBLE
    assert sql_type_of(pl.Series([dt.date(2024, 1, 1)])) == T.DATE
    assert sql_type_of(pl.Series([dt.datetime(2024, 1, 1, 1)])) == T.TIMESTAMP
    assert sql_type_of(pl.Series(["x"])) == T.TEXT


def test_casting_to_text_writes_iso_dates() -> None:
    assert cast_to(pl.Series([dt.date(2024, 1, 31)]), T.TEXT).to_list() == ["2024-01-31"]
    assert (
        cast_to(pl.Series([dt.datetime(2024, 1, 31, 9, 5)]), T.TEXT)
        .to_list()[0]
        .startswith("2024-01-31 09:05:00")
    )


def test_casting_whole_floats_to_text_matches_the_databases() -> None:
    assert cast_to(pl.Series([7.0, 7.5, None]), T.TEXT).to_list() == ["7", "7.5", None]


def test_the_date_range_every_warehouse_holds() -> None:
    assert fits_date_range(pl.Series([dt.date(1, 1, 1), dt.date(9999, 12, 31), None]))
    assert fits_date_range(pl.Series([dt.datetime(9999, 12, 31, 23, 59, 59)]))
    assert not fits_date_range(pl.Series(["0000-06-01"]).str.to_date())
    assert not fits_date_range(pl.Series([dt.datetime(9999, 12, 31, 23)]).dt.offset_by("1h"))
