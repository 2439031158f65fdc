import datetime as dt
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest

from pgdatahub_dagster.engine.errors import LimitExceededError, SheetNotFoundError, UnreadableFileError
from pgdatahub_dagster.engine.read import open_table
from pgdatahub_dagster.engine.settings import ReadLimits
from pgdatahub_dagster_tests.files import write_xlsx
from pgdatahub_dagster_tests.sheet_xml import write_sheet_xml_text


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


# -- workbooks that ask for more memory than they are worth ----------------------------------


def _values(rows: int, columns: int) -> str:
    return "".join("<row>" + "<c><v>1</v></c>" * columns + "</row>" for _ in range(rows))


def test_a_part_that_unpacks_past_the_limit_fails_before_reading(tmp_path: Path) -> None:
    """A zip bomb: 1,000 cells allowed, so no part may unpack to more than 128,000 bytes."""
    path = write_sheet_xml_text(tmp_path / "bomb.xlsx", _values(100, 100), dimension="A1:CV100")
    assert path.stat().st_size < 5_000
    with pytest.raises(
        LimitExceededError,
        match=r"^bomb\.xlsx: its part xl/worksheets/sheet1\.xml unpacks to 148 KB, more than the 125 KB "
        r"a sheet of 1,000 cells could need \(set PGDATAHUB_MAX_CELLS to raise it\)$",
    ):
        _read(path, limits=ReadLimits(max_cells=1_000))


def test_a_declared_dimension_within_the_limits_is_read(tmp_path: Path) -> None:
    path = write_sheet_xml_text(tmp_path / "fits.xlsx", _values(10, 10), dimension="A1:J10")
    headers, frame, _ = _read(path, limits=ReadLimits(max_cells=100, max_columns=10))
    assert len(headers) == 10 and frame.height == 9


def test_a_sheet_without_a_dimension_is_counted(tmp_path: Path) -> None:
    path = write_sheet_xml_text(tmp_path / "counted.xlsx", _values(30, 40))
    with pytest.raises(
        LimitExceededError,
        match=r"^counted\.xlsx: sheet 'Sheet1' holds at least 1,200 cells, more than the limit of 1,000 "
        r"\(set PGDATAHUB_MAX_CELLS",
    ):
        _read(path, limits=ReadLimits(max_cells=1_000))
    assert _read(path, limits=ReadLimits(max_cells=1_200))[1].height == 29


def test_cells_far_apart_fail_instead_of_aborting_the_process(tmp_path: Path) -> None:
    """Two values far apart make calamine allocate the whole grid between them: this
    600-byte workbook asked for 550 GB and aborted the process, and the run with it."""
    far = (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>name</t></is></c></row>'
        '<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>'
    )
    with pytest.raises(LimitExceededError, match=r"^far\.xlsx: sheet 'Sheet1' has 16,384 columns, more than"):
        _read(write_sheet_xml_text(tmp_path / "far.xlsx", far))
    # Within the column limit, still 27 million cells: over the default limit of 20 million.
    tall = far.replace("XFD1048576", "Z1048576")
    with pytest.raises(
        LimitExceededError,
        match=r"sheet 'Sheet1' has values from row 1 to 1,048,576 in 26 columns, a range of 27,262,976 cells",
    ):
        _read(write_sheet_xml_text(tmp_path / "tall.xlsx", tall))


def test_an_xls_whose_header_claims_more_sectors_than_it_holds_fails_as_corrupt(tmp_path: Path) -> None:
    """Found by the long fuzz test: a 610-byte xls whose header counts 0xFFFFFFFF FAT sectors
    made calamine allocate 16 GB (23 GB of RSS before the OOM killer ended the run)."""
    header = bytearray(b"\xff" * 512)
    header[:8] = bytes.fromhex("d0cf11e0a1b11ae1")
    header[8:0x18] = bytes(16)
    header[0x18:0x20] = bytes.fromhex("3e000300feff0900")  # version 3, little-endian, 512-byte sectors
    header[0x20:0x22] = bytes.fromhex("0600")
    path = tmp_path / "claims.xls"
    path.write_bytes(bytes(header) + b"\x00" * 98)
    with pytest.raises(
        UnreadableFileError,
        match=r"^claims\.xls: not a readable workbook \(corrupt\): its header counts 4,294,967,295 FAT",
    ):
        _read(path)
    # The next one it found: plausible counts, but a mini stream cutoff (and a stream size) of
    # about 4 GB, which calamine allocated.
    header[0x28:0x4C] = (
        bytes(4) + (1).to_bytes(4, "little") + bytes(4) + bytes(4) + b"\xd0\x0b\x12\xe0" + bytes(16)
    )
    path.write_bytes(bytes(header) + b"\x00" * 2048)
    with pytest.raises(UnreadableFileError, match=r"its mini stream cutoff is not 4096 bytes"):
        _read(path)


def test_a_declared_formatted_range_beyond_the_values_does_not_fail(tmp_path: Path) -> None:
    """Writers often declare the formatted range (A1:XFD1048576) around a few values; empty
    formatted cells take no memory, so the values decide."""
    sheet = (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>id</t></is></c><c r="XFD1" s="1"/></row>'
        '<row r="2"><c r="A2"><v>7</v></c></row><row r="1048576"><c r="XFD1048576" s="1"/></row>'
    )
    path = write_sheet_xml_text(tmp_path / "styled.xlsx", sheet, dimension="A1:XFD1048576")
    headers, frame, _ = _read(path)
    assert headers == ["id"] and frame.rows() == [(7.0,)]


def test_a_sheet_wider_than_the_column_limit_fails(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "wide.xlsx", {"Data": [[f"c{i}" for i in range(30)], list(range(30))]})
    with pytest.raises(
        LimitExceededError, match=r"^wide\.xlsx: sheet 'Data' has 30 columns, more than the limit of 20"
    ):
        _read(path, limits=ReadLimits(max_columns=20))


def test_the_chosen_sheet_is_the_one_checked(tmp_path: Path) -> None:
    """A big sheet beside the one configured does not fail the file."""
    path = write_xlsx(tmp_path / "two.xlsx", {"Big": [list(range(30))] * 40, "Small": [["a"], [1]]})
    assert _read(path, sheet="Small", limits=ReadLimits(max_cells=500))[0] == ["a"]
    with pytest.raises(LimitExceededError, match=r"sheet 'Big' holds at least 1,200 cells"):
        _read(path, sheet="Big", limits=ReadLimits(max_cells=500))


def test_a_sheet_whose_compressed_data_is_damaged_fails_as_corrupt(tmp_path: Path) -> None:
    """The size checks unpack the sheet's first bytes; a damaged stream is calamine's to report."""
    path = write_xlsx(
        tmp_path / "damaged.xlsx", {"Sheet1": [["id", "name"]] + [[i, f"n{i}"] for i in range(500)]}
    )
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        sheet = archive.getinfo("xl/worksheets/sheet1.xml")
    start = sheet.header_offset + 30 + len(sheet.filename) + len(sheet.extra)  # the local header's size
    data[start + 10 : start + 60] = bytes(byte ^ 0x5A for byte in data[start + 10 : start + 60])
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableFileError, match=r"^damaged\.xlsx: "):
        _read(path)


@pytest.mark.parametrize("name", ["any_sheets.ods", "date.ods", "date.xls", "date.xlsb"])
def test_the_column_limit_holds_for_every_workbook_kind(calamine_fixtures: Path, name: str) -> None:
    """ods, xls and xlsb sheets have no declared dimension to check: their width once read,
    also when mixed kinds make the sheet be read again as text (the date files)."""
    with pytest.raises(LimitExceededError, match=rf"^{re.escape(name)}: sheet '.+' has 2 columns, more than"):
        _read(calamine_fixtures / name, limits=ReadLimits(max_columns=1))
    assert len(_read(calamine_fixtures / name, limits=ReadLimits(max_columns=2))[0]) == 2
