from pathlib import Path

import polars as pl
import pytest

from pgdatahub_dagster.engine.errors import UnreadableFileError
from pgdatahub_dagster.engine.read import open_table
from pgdatahub_dagster_tests.files import write_csv


def _read(path: Path, **options: object) -> tuple[list[str], pl.DataFrame]:
    with open_table(path, path.name, **options) as table:  # type: ignore[arg-type]
        batches = list(table.batches)
        return table.headers, pl.concat(batches) if batches else pl.DataFrame()


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    quoted = f'"a{delimiter} b"'  # the delimiter inside quotes splits nothing
    lines = [["name", "city", "note"], ["Acme", "Oslo", quoted], ["Blue", "Rome", "plain"]]
    text = "".join(delimiter.join(line) + "\n" for line in lines)
    headers, frame = _read(write_csv(tmp_path / "f.csv", text))
    assert headers == ["name", "city", "note"]
    assert frame.rows() == [("Acme", "Oslo", f"a{delimiter} b"), ("Blue", "Rome", "plain")]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"])
def test_encodings(tmp_path: Path, encoding: str) -> None:
    text = "Straße;Café\nMüller;Crème brûlée\n"
    if encoding == "latin-1":
        text = "Straße;Café\nMüller;\x85 ok\n".replace("\x85", "½")
    headers, frame = _read(write_csv(tmp_path / "f.csv", text, encoding))
    assert headers == ["Straße", "Café"]
    assert frame.row(0)[0] == "Müller"
    assert frame.row(0)[1] == text.splitlines()[1].split(";")[1]


def test_header_row_skips_preamble_lines(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "f.csv", "Exported 2024-01-01\n\nid,name\n1,Acme\n2,Blue\n")
    headers, frame = _read(path, header_row=3)
    assert headers == ["id", "name"]
    assert frame.rows() == [("1", "Acme"), ("2", "Blue")]


def test_every_value_is_read_as_text(tmp_path: Path) -> None:
    _headers, frame = _read(write_csv(tmp_path / "f.csv", "zip,n\n01234,5\n"))
    assert frame.dtypes == [pl.String, pl.String]
    assert frame.row(0) == ("01234", "5")


def test_streams_in_batches(tmp_path: Path) -> None:
    body = "".join(f"{i},name {i}\n" for i in range(2500))
    path = write_csv(tmp_path / "f.csv", "id,name\n" + body)
    with open_table(path, "f.csv", batch_rows=1000) as table:
        sizes = [batch.height for batch in table.batches]
    assert sum(sizes) == 2500
    assert max(sizes) <= 1000 and len(sizes) >= 3


def test_ragged_lines_fail_with_the_file_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ragged.csv", "a,b\n1,2\n" + "3,4\n" * 100 + "5,6,7,8\n")
    with pytest.raises(UnreadableFileError, match=r"ragged\.csv: cannot be parsed"):
        _read(path)


def test_empty_file_has_no_rows(tmp_path: Path) -> None:
    headers, frame = _read(write_csv(tmp_path / "empty.csv", ""))
    assert headers == [] and frame.height == 0


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "notes.pdf", "x")
    with pytest.raises(UnreadableFileError, match=r"unsupported file type '\.pdf'"):
        _read(path)
