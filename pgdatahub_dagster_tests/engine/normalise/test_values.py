import datetime as dt

import polars as pl

from pgdatahub_dagster.engine.normalise import normalise_frame


def _frame(**columns: list[object]) -> pl.DataFrame:
    return pl.DataFrame({name: pl.Series(values, dtype=pl.String) for name, values in columns.items()})


def test_text_is_trimmed_and_blank_means_null() -> None:
    out = normalise_frame(_frame(name=["  Acme ", " ", "Blue"], city=["Oslo", "Rome", " Bern"]))
    assert out["name"].to_list() == ["Acme", None, "Blue"]
    assert out["city"].to_list() == ["Oslo", "Rome", "Bern"]


def test_empty_rows_and_columns_are_dropped() -> None:
    out = normalise_frame(_frame(a=["1", None, "3"], empty=[None, " ", None], b=["x", None, "z"]))
    assert out.columns == ["a", "b"]
    assert out.height == 2


def test_leading_zeros_stay_text() -> None:
    out = normalise_frame(_frame(zip=["01234", "02115", "10001"]))
    assert out["zip"].dtype == pl.String
    assert out["zip"].to_list() == ["01234", "02115", "10001"]


def test_integers_decimals_and_booleans_are_inferred() -> None:
    out = normalise_frame(
        _frame(n=["1", "-2", "+3"], x=["1.5", "2", ".25"], flag=["TRUE", "false", None], big=["1" * 19] * 3)
    )
    assert out["n"].to_list() == [1, -2, 3]
    assert out["x"].dtype == pl.Float64
    assert out["flag"].to_list() == [True, False, None]
    # 19 digits may not fit in 64 bits: stays text rather than losing digits.
    assert out["big"].dtype == pl.String


def test_mixed_text_and_numbers_stay_text() -> None:
    out = normalise_frame(_frame(v=["1", "2", "n/a"]))
    assert out["v"].to_list() == ["1", "2", "n/a"]


def test_iso_dates_and_timestamps() -> None:
    out = normalise_frame(
        _frame(
            d=["2024-01-31", "2024-02-29"],
            ts=["2024-01-31 10:15:00", "2024-02-01T00:00:00"],
            bad=["2024-02-30"] * 2,
        )
    )
    assert out["d"].to_list() == [dt.date(2024, 1, 31), dt.date(2024, 2, 29)]
    assert out["ts"].to_list() == [dt.datetime(2024, 1, 31, 10, 15), dt.datetime(2024, 2, 1)]
    assert out["bad"].dtype == pl.String


def test_whole_floats_become_integers_and_midnights_become_dates() -> None:
    frame = pl.DataFrame(
        {
            "label": ["a", "b", "c"],
            "whole": [1.0, 2.0, None],
            "fraction": [1.0, 2.5, None],
            "day": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2), None],
            "moment": [dt.datetime(2024, 1, 1, 9, 30), dt.datetime(2024, 1, 2), None],
        }
    )
    out = normalise_frame(frame)
    assert out["whole"].dtype == pl.Int64 and out["whole"].to_list() == [1, 2, None]
    assert out["fraction"].dtype == pl.Float64
    assert out["day"].dtype == pl.Date
    assert isinstance(out["moment"].dtype, pl.Datetime)


def test_booleans_stay_booleans() -> None:
    out = normalise_frame(pl.DataFrame({"b": [True, False, None]}))
    assert out["b"].dtype == pl.Boolean


def test_a_late_value_decides_as_much_as_an_early_one() -> None:
    # Columns are first tested on their first values; a type holds only if every value,
    # however late, agrees.
    many = 2_500
    out = normalise_frame(
        _frame(
            n=[str(i) for i in range(many)] + ["n/a"],
            flag=["true"] * many + ["maybe"],
            when=["2024-01-02"] * many + ["soon"],
            x=[f"{i}.5" for i in range(many)] + ["1" * 19],
            ok=[str(i) for i in range(many)] + [None],
        )
    )
    assert [out[name].dtype for name in ("n", "flag", "when", "x")] == [pl.String] * 4
    assert out["ok"].dtype == pl.Int64 and out["ok"].to_list()[-2:] == [many - 1, None]


def test_exponent_without_a_mantissa_is_text() -> None:
    out = normalise_frame(_frame(id=["E1", "e5", "E100", "E000000001"], sign=["+e5", "-E2", None, None]))
    assert out["id"].to_list() == ["E1", "e5", "E100", "E000000001"]
    assert out["sign"].dtype == pl.String


def test_values_beyond_a_double_or_the_years_1_to_9999_stay_text() -> None:
    out = normalise_frame(
        _frame(
            big=["1e400", "1"],
            tiny=["1e-400", "1"],
            zero=["0.0e-400", "1"],
            day=["0000-01-01", "2024-01-01"],
            moment=["0000-12-31 23:00", "2024-01-01 10:00"],
        )
    )
    assert [out[name].dtype for name in ("big", "tiny", "day", "moment")] == [pl.String] * 4
    assert out["zero"].to_list() == [0.0, 1.0]  # a zero mantissa is an honest zero


def test_native_datetimes_past_9999_become_iso_text() -> None:
    late = pl.Series([dt.datetime(2024, 1, 1), None]).dt.offset_by("8000y")
    out = normalise_frame(pl.DataFrame({"n": [1, 2], "day": late, "moment": late.dt.offset_by("90m")}))
    assert out["day"].to_list() == ["+10024-01-01", None]
    assert out["moment"].to_list() == ["+10024-01-01 01:30:00", None]


def test_nul_characters_are_removed() -> None:
    out = normalise_frame(_frame(note=["a\x00b", "\x00", " \x00c"], n=["1\x00", "2", "3"]))
    assert out["note"].to_list() == ["ab", None, "c"]
    assert out["n"].to_list() == [1, 2, 3]
