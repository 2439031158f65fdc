"""What normalising stores, through the whole import, the same on DuckDB and PostgreSQL.

Every test runs on both warehouses (``warehouse_url``) and expects the same rows there.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pgdatahub_dagster_tests.engine.test_importer import query, run_import, statuses
from pgdatahub_dagster_tests.files import ExcelDate, write_csv, write_xlsx

# Excel's serial numbers of 10000-01-01 and of noon that day: no Python date holds them.
YEAR_10000 = 2_958_466


def test_ids_like_exponents_stay_text(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "ids" / "a.csv", "code,n\nE1,1\ne5,2\nE100,3\nE000000001,4\n")
    write_xlsx(tmp_path / "ids" / "b.xlsx", {"S": [["code", "n"], ["E7", 5], ["e000000002", 6]]})
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT code, n FROM ids ORDER BY n") == [
        ("E1", 1),
        ("e5", 2),
        ("E100", 3),
        ("E000000001", 4),
        ("E7", 5),
        ("e000000002", 6),
    ]


def test_real_exponents_are_still_numbers(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "x" / "f.csv", "n,x\n1,1e3\n2,-2.5E-2\n3,.5e1\n4,0e5\n5,1e-310\n")
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT x FROM x ORDER BY n") == [
        (1000.0,),
        (-0.025,),
        (5.0,),
        (0.0,),
        (1e-310,),
    ]


def test_a_blank_header_names_its_own_column(warehouse_url: str, tmp_path: Path) -> None:
    """The blank column (``column_2``) keeps its own type, whatever the column to its right."""
    write_csv(tmp_path / "plain" / "f.csv", 'a,"",c\nx,e,1\n')
    write_csv(tmp_path / "csv" / "f.csv", 'a,"",c\nx,E1,1.5\ny,e5,2\n')
    write_xlsx(tmp_path / "xlsx" / "f.xlsx", {"S": [["a", None, "c"], ["x", "E1", 1.5], ["y", "e5", 2]]})
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT a, column_2, c FROM plain") == [("x", "e", 1)]
    for table in ("csv", "xlsx"):
        rows = query(warehouse_url, f"SELECT a, column_2, c FROM {table} ORDER BY a")
        assert rows == [("x", "E1", 1.5), ("y", "e5", 2.0)], table


def test_numbers_beyond_a_double_keep_their_text(warehouse_url: str, tmp_path: Path) -> None:
    """1e400 would be stored as infinity and 1e-400 as 0: the columns stay text instead."""
    write_csv(tmp_path / "t" / "f.csv", "n,big,tiny\n1,1e400,1e-400\n2,1.5,2.5\n3,-1E+999,-0.1e-999\n")
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT big, tiny FROM t ORDER BY n") == [
        ("1e400", "1e-400"),
        ("1.5", "2.5"),
        ("-1E+999", "-0.1e-999"),
    ]


def test_dates_outside_years_1_to_9999_keep_their_text(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(
        tmp_path / "text" / "f.csv",
        "n,day,moment\n1,0000-01-01,0000-01-01 10:00\n2,2024-01-31,2024-01-31T11:30:00\n",
    )
    write_xlsx(
        tmp_path / "excel" / "f.xlsx",
        {
            "S": [
                ["n", "day", "moment"],
                [1, ExcelDate(YEAR_10000), ExcelDate(YEAR_10000 + 0.5)],
                [2, dt.date(2023, 3, 15), dt.datetime(2023, 3, 15, 9, 30)],
            ]
        },
    )
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT day, moment FROM text ORDER BY n") == [
        ("0000-01-01", "0000-01-01 10:00"),
        ("2024-01-31", "2024-01-31T11:30:00"),
    ]
    assert query(warehouse_url, "SELECT day, moment FROM excel ORDER BY n") == [
        ("+10000-01-01", "+10000-01-01 12:00:00"),
        ("2023-03-15", "2023-03-15 09:30:00"),
    ]


def test_the_edges_of_the_date_range_are_dates(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "t" / "f.csv", "n,day\n1,0001-01-01\n2,9999-12-31\n")
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    assert query(warehouse_url, "SELECT day FROM t ORDER BY n") == [
        (dt.date(1, 1, 1),),
        (dt.date(9999, 12, 31),),
    ]


def test_nul_characters_are_removed_from_text(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "t" / "f.csv", "n,note,code\n1,a\x00b,\x007\n2,\x00,8\x00\n")
    write_xlsx(tmp_path / "t" / "g.xlsx", {"S": [["n", "note"], [3, "c\x00d"]]})
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    # A cell of NUL alone is empty; a column that is numbers once they are gone is numbers.
    assert query(warehouse_url, "SELECT n, note, code FROM t ORDER BY n") == [
        (1, "ab", 7),
        (2, None, 8),
        (3, "cd", None),
    ]


def test_system_column_names_are_renamed_on_every_warehouse(warehouse_url: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "t" / "f.csv", "ctid,XMIN,xmax,cmin,cmax,tableoid,oid\n1,2,3,4,5,6,7\n")
    assert set(statuses(run_import(warehouse_url, tmp_path)).values()) == {"success"}
    # oid is an ordinary name since PostgreSQL 12.
    assert query(warehouse_url, "SELECT ctid_2, xmin_2, xmax_2, cmin_2, cmax_2, tableoid_2, oid FROM t") == [
        (1, 2, 3, 4, 5, 6, 7)
    ]
