import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pgdatahub_dagster.engine.errors import SheetNotFoundError, UnreadableFileError
from pgdatahub_dagster.engine.read import open_table
from pgdatahub_dagster_tests.files import write_xlsx


def _read(path: Path, **options: object) -> tuple[list[str], pl.DataFrame, str | None]:
    with open_table(path, path.name, **options) as table:  # type: ignore[arg-type]
        return table.headers, pl.concat(list(table.batches)), table.sheet


def _book(tmp_path: Path) -> Path:
    return write_xlsx(
        tmp_path / "book.xlsx",
        {
            "Summary": [["note"], ["see Data"]],
            "Data": [["Name", "Name", "", "Zip", "When"], ["Acme", "x", 1, "01234", dt.date(2024, 1, 31)]],
        },
    )


def test_sheet_choice_configured_then_default_then_first(tmp_path: Path) -> None:
    path = _book(tmp_path)
    assert _read(path, sheet="Data")[2] == "Data"
    assert _read(path, default_sheet="Data")[2] == "Data"
    assert _read(path, default_sheet="Missing")[2] == "Summary"
    assert _read(path)[2] == "Summary"


def test_missing_configured_sheet_lists_the_sheets(tmp_path: Path) -> None:
    with pytest.raises(
        SheetNotFoundError,
        match=r"book\.xlsx: sheet 'Leads' does not exist; the workbook has: 'Summary', 'Data'",
    ):
        _read(_book(tmp_path), sheet="Leads")


def test_raw_headers_keep_blanks_and_repeats(tmp_path: Path) -> None:
    headers, frame, _ = _read(_book(tmp_path), sheet="Data")
    assert headers == ["Name", "Name", "", "Zip", "When"]
    assert frame.row(0)[3] == "01234"


def test_header_row_option(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "h.xlsx", {"S": [["Report of 2024"], [], ["id", "name"], [1, "Acme"]]})
    headers, frame, _ = _read(path, header_row=3)
    assert headers == ["id", "name"]
    assert frame.row(0) == (1.0, "Acme")


def test_mixed_kinds_fall_back_to_text(calamine_fixtures: Path) -> None:
    _headers, frame, _ = _read(calamine_fixtures / "date.xlsx")
    assert frame.height == 2
    assert frame.dtypes[0] == pl.String


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("pass_protected.xlsx", "password-protected"),
        ("too_small.xls", "not a readable workbook"),
        ("ptgexp-truncated-operand.xls", "corrupt"),
    ],
)
def test_broken_workbooks_fail_with_a_reason(calamine_fixtures: Path, name: str, reason: str) -> None:
    with pytest.raises(UnreadableFileError, match=reason) as failure:
        _read(calamine_fixtures / name)
    assert str(failure.value).startswith(name)
