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


# The reader parses a file piece by piece to keep memory flat. Whatever the pieces, it
# must give exactly what one Polars scan of the whole file gives, batch for batch.
_TRICKY_FILES = {
    "plain": "id,name\n" + "".join(f"{i},name {i}\n" for i in range(300)),
    "quoted newlines": 'id,note\n1,"one\ntwo"\n2,"say ""hi""\nthere"\n3,plain\n' * 40,
    "crlf": "a,b\r\n" + "1,2\r\n" * 200,
    "no final newline": "a,b\n" + "1,2\n" * 100 + "3,4",
    "short rows later": "a,b,c\n1,2,3\n" + "4,5\n" * 100 + "6,7,8\n",
    "blank lines": "a,b\n1,2\n\n\n3,4\n" * 50,
    "semicolons": "a;b\n" + '"x;y";2\n' * 150,
    "one column": "a\n" + "x\n\ny\n" * 80,
    "header only": "a,b,c\n",
    "short first row": "a,b\n1,2\n3,4,5\n" * 30,
    "ragged late": "a,b\n" + "1,2\n" * 150 + "5,6,7,8\n",
    "utf-8 bom": "\ufeffa,b\n" + "é,ü\n" * 120,
    "quoted header rows": 'title "x\ny"\n\nid,name\n' + "1,Acme\n" * 90,
    "long rows": "a,b\n" + ("x" * 300 + ",y\n") * 40,
}


def _reference(path: Path, skip: int, batch_rows: int) -> list[list[tuple[object, ...]]] | str:
    """What the reader gave when it was one Polars scan of the whole file."""
    with open_table(path, path.name, header_row=skip + 1, batch_rows=batch_rows) as table:
        width = len(table.headers)
    delimiter = ";" if "semicolons" in path.name else ","
    scan = pl.scan_csv(
        path,
        has_header=False,
        separator=delimiter,
        skip_rows=skip + 1,
        schema={f"c{index}": pl.String for index in range(width)},
        truncate_ragged_lines=False,
        raise_if_empty=False,
    )
    try:
        return [batch.rows() for batch in scan.collect_batches(chunk_size=batch_rows)]
    except pl.exceptions.PolarsError:
        return "error"


@pytest.mark.parametrize("name", sorted(_TRICKY_FILES))
@pytest.mark.parametrize("piece_bytes", [7, 64, 1 << 20])
def test_pieces_read_like_one_scan_of_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, piece_bytes: int
) -> None:
    import pgdatahub_dagster.engine.read.delimited as delimited

    monkeypatch.setattr(delimited, "_PIECE_BYTES", piece_bytes)
    path = write_csv(tmp_path / f"{name.replace(' ', '_')}.csv", _TRICKY_FILES[name])
    skip = 2 if name == "quoted header rows" else 0
    for batch_rows in (1, 7, 100, 100_000):
        expected = _reference(path, skip, batch_rows)
        try:
            with open_table(path, path.name, header_row=skip + 1, batch_rows=batch_rows) as table:
                got: list[list[tuple[object, ...]]] | str = [batch.rows() for batch in table.batches]
        except UnreadableFileError:
            got = "error"
        assert got == expected, (name, batch_rows)
