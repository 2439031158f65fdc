"""Files the readers cannot or must not read, through the real import path: each fails
alone with a ``failed`` ledger row naming it and the reason, and the file after it is
imported. Limits are set small through the environment, as a user sets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgdatahub_dagster.engine.errors import ConfigError
from pgdatahub_dagster.engine.importer import Importer
from pgdatahub_dagster.engine.mapping import FolderMapping
from pgdatahub_dagster.engine.sources import LocalFolderSource
from pgdatahub_dagster.engine.warehouse import connect
from pgdatahub_dagster_tests.engine.test_importer import query, run_import, statuses
from pgdatahub_dagster_tests.files import write_xlsx
from pgdatahub_dagster_tests.sheet_xml import write_sheet_xml_text

# (name, bytes or a writer, the reason its failed ledger row gives; None: it imports)
_FAR_APART = (
    '<row r="1"><c r="A1" t="inlineStr"><is><t>id</t></is></c></row>'
    '<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>'
)


def _bad_and_good_files(root: Path) -> dict[str, str | None]:
    """A folder where every bad file is followed by a good one; what each must end as."""
    expected: dict[str, str | None] = {}

    def good(name: str, index: int) -> None:
        (root / name).write_text(f"id,name\n{index},file {index}\n")
        expected[name] = None

    def bad(name: str, content: bytes, reason: str | None) -> None:
        (root / name).write_bytes(content)
        expected[name] = reason

    bad("01-binary.csv", bytes(range(256)) * 40, "holds binary data (NUL bytes), not text")
    good("02-good.csv", 2)
    write_xlsx(root / "book.xlsx", {"Sheet1": [["id"], [1]]}).rename(root / "03-workbook.csv")
    expected["03-workbook.csv"] = "looks like an Excel workbook, not delimited text; rename it to .xlsx"
    good("04-good.csv", 4)
    bad("05-long-line.csv", b"id,name\n1," + b"x" * 50_000, "line 2 is longer than 10 KB")
    good("06-good.csv", 6)
    bad("07-wide.csv", (",".join(f"c{i}" for i in range(25)) + "\n").encode(), "has 25 columns")
    good("08-good.csv", 8)
    bad("09-garbled.csv", b"id,name\n1," + bytes(range(0x80, 0x100)) + b"\n", "cannot tell the text encoding")
    good("10-good.csv", 10)
    write_sheet_xml_text(root / "11-bomb.xlsx", "<row>" + "<c><v>1</v></c>" * 10_000 + "</row>")
    expected["11-bomb.xlsx"] = "its part xl/worksheets/sheet1.xml unpacks to 147 KB"
    good("12-good.csv", 12)
    write_sheet_xml_text(root / "13-far-apart.xlsx", _FAR_APART)
    expected["13-far-apart.xlsx"] = "sheet 'Sheet1' has 16,384 columns"
    write_xlsx(root / "14-good.xlsx", {"Sheet1": [["id", "name"], [14, "file 14"]]})
    expected["14-good.xlsx"] = None
    # Legitimate files that stopped the whole run before: read as they are.
    bad("15-mac.csv", b"id,name\r15,file 15\r", None)
    bad("16-stray-cr.csv", b"id,name\n16,file\r16\n", None)
    bad("17-long-cell.csv", b"id,name\n17," + b"n" * 9_000 + b"\n", None)
    bad("18-utf16.csv", "id,name\n18,fichier 18\n".encode("utf-16-le"), None)
    return expected


def test_each_bad_file_fails_alone_and_the_next_is_imported(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGDATAHUB_MAX_LINE_MB", str(10 / 1024))
    monkeypatch.setenv("PGDATAHUB_MAX_COLUMNS", "20")
    monkeypatch.setenv("PGDATAHUB_MAX_CELLS", "1000")
    root = tmp_path / "inbox"
    root.mkdir()
    expected = _bad_and_good_files(root)

    results = run_import(warehouse_url, root)

    assert statuses(results) == {
        name: "success" if reason is None else "failed" for name, reason in expected.items()
    }
    errors = dict(query(warehouse_url, "SELECT source_file, error FROM etl_imports WHERE status = 'failed'"))
    assert set(errors) == {name for name, reason in expected.items() if reason is not None}
    for name, error in errors.items():
        reason = expected[name]
        assert reason is not None and error.startswith(f"{name}: ") and reason in error, (name, error)
    rows = query(warehouse_url, "SELECT CAST(id AS TEXT), name, source_file FROM inbox ORDER BY source_file")
    assert rows == [
        ("2", "file 2", "02-good.csv"),
        ("4", "file 4", "04-good.csv"),
        ("6", "file 6", "06-good.csv"),
        ("8", "file 8", "08-good.csv"),
        ("10", "file 10", "10-good.csv"),
        ("12", "file 12", "12-good.csv"),
        ("14", "file 14", "14-good.xlsx"),
        ("15", "file 15", "15-mac.csv"),
        ("16", "file\r16", "16-stray-cr.csv"),
        ("17", "n" * 9_000, "17-long-cell.csv"),
        ("18", "fichier 18", "18-utf16.csv"),
    ]


@pytest.mark.parametrize(
    ("variable", "value", "kind"),
    [
        ("PGDATAHUB_MAX_CELLS", "lots", "a positive whole number"),
        ("PGDATAHUB_MAX_READ_MEMORY_MB", "-1", "a positive number"),
    ],
)
def test_a_broken_limit_stops_the_run_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, kind: str
) -> None:
    monkeypatch.setenv(variable, value)
    with (
        connect(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse,
        pytest.raises(ConfigError, match=f"^{variable} must be {kind}, not '{value}'$"),
    ):
        Importer(warehouse, LocalFolderSource(tmp_path), FolderMapping.parse(""))


def _future_zip(path: Path) -> bytes:
    """A workbook whose zip directory asks for a zip version Python's zipfile does not know
    (it raises NotImplementedError, not BadZipFile)."""
    data = bytearray(write_xlsx(path, {"Sheet1": [["id"], [1]]}).read_bytes())
    entry = data.find(b"PK\x01\x02")  # the first central directory entry
    data[entry + 6 : entry + 8] = (99).to_bytes(2, "little")  # the version needed to extract
    return bytes(data)


def test_a_zip_python_refuses_to_open_stops_nothing(warehouse_url: str, tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "1-future.csv").write_bytes(_future_zip(tmp_path / "a.xlsx"))
    (root / "2-future.xlsx").write_bytes(_future_zip(tmp_path / "b.xlsx"))
    (root / "3-good.csv").write_text("id\n3\n")
    results = run_import(warehouse_url, root)
    # calamine reads the workbook whose zip Python refused; the size checks stand aside for it.
    assert statuses(results) == {
        "1-future.csv": "failed",
        "2-future.xlsx": "success",
        "3-good.csv": "success",
    }
    errors = dict(query(warehouse_url, "SELECT source_file, error FROM etl_imports WHERE status = 'failed'"))
    assert errors == {"1-future.csv": "1-future.csv: is a zip archive, not delimited text"}
