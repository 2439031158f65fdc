from pathlib import Path, PurePosixPath

import polars as pl
import pytest

from pgdatahub_dagster.engine.errors import LimitExceededError, UnreadableFileError
from pgdatahub_dagster.engine.read import SUPPORTED_EXTENSIONS, is_supported, open_table
from pgdatahub_dagster.engine.settings import ReadLimits
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
    with pytest.raises(
        UnreadableFileError,
        match=r"ragged\.csv: .*a row has more fields than any of the file.s first 50 lines \(2\)",
    ):
        _read(path)


def test_a_first_row_that_leaves_its_trailing_empty_fields_out_reads_them_empty(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "short.csv", "name,email,phone\nBob,bob@x.com\nAnn,ann@x.com,555\n")
    headers, frame = _read(path)
    assert headers == ["name", "email", "phone"]
    assert frame.rows() == [("Bob", "bob@x.com", None), ("Ann", "ann@x.com", "555")]


def test_quotes_that_do_not_pair_up_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "quotes.csv", 'id,note\n1,"one\n2,two\n')
    with pytest.raises(UnreadableFileError, match=r"quotes\.csv: .*double quotes do not pair up"):
        _read(path)


def test_empty_file_has_no_rows(tmp_path: Path) -> None:
    headers, frame = _read(write_csv(tmp_path / "empty.csv", ""))
    assert headers == [] and frame.height == 0


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "notes.pdf", "x")
    with pytest.raises(UnreadableFileError, match=r"unsupported file type '\.pdf'"):
        _read(path)


@pytest.mark.parametrize(
    "name",
    [
        "a.csv",
        "A.XLSX",
        "b.tsv",
        "a.b.ods",
        "a..csv",
        "a.",
        "a",
        ".csv",
        ".hidden.csv",
        "~$book.xlsx",
        "dir/b.csv",
        "dir/~$b.csv",
        "b.csv/c",
        "b.csv/",
        "a.xlsx ",
        "notes.pdf",
        "x.Csv",
        "a/.csv",
    ],
)
def test_is_supported_answers_as_the_path_suffix_does(name: str) -> None:
    """``is_supported`` reads the suffix by string (the sensor asks it of every file at every
    tick); its answer is the one ``pathlib`` gives."""
    by_path = PurePosixPath(name).suffix.lower() in SUPPORTED_EXTENSIONS and not name.startswith(("~$", "."))
    assert is_supported(name) == by_path


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
        missing_columns="insert",
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


# -- line endings, long fields, encodings, files that are not text -------------------------


@pytest.mark.parametrize("piece_bytes", [7, 1 << 20])
def test_cr_only_line_endings_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_bytes: int
) -> None:
    """Old Mac Excel exports end lines with CR alone."""
    import pgdatahub_dagster.engine.read.delimited as delimited

    monkeypatch.setattr(delimited, "_PIECE_BYTES", piece_bytes)
    path = tmp_path / "mac.csv"
    path.write_bytes(b'id,val\r1,a\r2,"b\rc"\r3,\r' + b"".join(b"%d,x\r" % i for i in range(4, 40)))
    headers, frame = _read(path)
    assert headers == ["id", "val"]
    assert frame.rows()[:3] == [("1", "a"), ("2", "b\rc"), ("3", None)]
    assert frame.height == 39


def test_a_carriage_return_inside_a_line_is_data(tmp_path: Path) -> None:
    path = tmp_path / "stray.csv"
    path.write_bytes(b"id,na\rme\r\n1,a\rb\r\n2,c\r\n")
    headers, frame = _read(path)
    assert headers == ["id", "na\rme"]
    assert frame.rows() == [("1", "a\rb"), ("2", "c")]


def test_a_line_feed_inside_a_line_of_a_cr_file_is_data(tmp_path: Path) -> None:
    path = tmp_path / "mac.csv"
    path.write_bytes(b"id,val\r1,a\nb\r2,c\r3,d\r")
    headers, frame = _read(path)
    assert headers == ["id", "val"]
    assert frame.rows() == [("1", "a\nb"), ("2", "c"), ("3", "d")]


def test_cells_and_headers_over_128_kib_are_read_whole(tmp_path: Path) -> None:
    """Python's csv module refuses fields over 128 KiB; the sample is parsed with it."""
    long_header, long_value = "h" * 300_000, "v" * 200_000
    path = write_csv(tmp_path / "long.csv", f"id,{long_header}\n1,{long_value}\n2,b\n")
    headers, frame = _read(path)
    assert headers == ["id", long_header]
    assert frame.rows() == [("1", long_value), ("2", "b")]


_JAPANESE = "名前,都市,メモ\n山田太郎,東京,よろしくお願いします\n佐藤花子,大阪,電話してください\n"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("name,city\nAcme,Oslo\nBlue,Rome\n", "utf-16-le"),
        ("name,city\nAcme,Oslo\nBlue,Rome\n", "utf-16-be"),
        (_JAPANESE, "utf-16-le"),
        (_JAPANESE, "utf-16-be"),
        (_JAPANESE, "shift_jis"),
        ("Preis,Straße,Notiz\n5 €,Café Müller,Crème brûlée\n12 €,Größe,naïve „Zitat“\n", "cp1252"),
        ("nom,ville\nFrançois Lefèvre,Besançon\nHélène Dupré,Orléans\n", "cp1252"),
        ("Имя,Город\nИван Петров,Москва\nМария Иванова,Санкт-Петербург\n", "cp1251"),
    ],
)
def test_encodings_without_bom(tmp_path: Path, text: str, encoding: str) -> None:
    headers, frame = _read(write_csv(tmp_path / "f.csv", text, encoding))
    lines = [line.split(",") for line in text.splitlines()]
    assert headers == lines[0]
    assert frame.rows() == [tuple(line) for line in lines[1:]]


def test_cp1252_past_the_first_megabyte_is_found(tmp_path: Path) -> None:
    """The encoding is told from the lines that are not ASCII, wherever they are."""
    text = "id,name\n" + "".join(f"{i},plain\n" for i in range(200_000)) + "200000,5 € Café\n"
    _headers, frame = _read(write_csv(tmp_path / "late.csv", text, "cp1252"))
    assert frame.row(-1) == ("200000", "5 € Café")


def test_text_no_encoding_fits_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "garbled.csv"
    path.write_bytes(b"name,note\n1," + bytes(range(0x80, 0x100)) + b"\n")
    with pytest.raises(
        UnreadableFileError,
        match=r"^garbled\.csv: cannot tell the text encoding of the file; save it as UTF-8",
    ):
        _read(path)


def test_binary_data_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(bytes(range(256)) * 50)
    with pytest.raises(UnreadableFileError, match=r"^data\.csv: holds binary data \(NUL bytes\), not text"):
        _read(path)


def test_a_workbook_named_csv_fails_with_the_advice_to_rename_it(tmp_path: Path) -> None:
    from pgdatahub_dagster_tests.files import write_xlsx

    path = tmp_path / "export.csv"
    write_xlsx(tmp_path / "book.xlsx", {"Sheet1": [["a", "b"], [1, 2]]}).rename(path)
    with pytest.raises(
        UnreadableFileError,
        match=r"^export\.csv: looks like an Excel workbook, not delimited text; rename it to \.xlsx$",
    ):
        _read(path)


def test_an_xls_named_csv_fails_with_the_advice_to_rename_it(tmp_path: Path, calamine_fixtures: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_bytes((calamine_fixtures / "date.xls").read_bytes())
    with pytest.raises(UnreadableFileError, match=r"^old\.csv: looks like an Excel 97-2003 workbook.*\.xls$"):
        _read(path)


# -- limits ---------------------------------------------------------------------------------


def test_a_line_over_the_limit_fails_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pgdatahub_dagster.engine.read.delimited as delimited

    monkeypatch.setattr(delimited, "_PIECE_BYTES", 4096)  # so that the file is read in several pieces
    path = write_csv(tmp_path / "long.csv", "a,b\n1,2\n3," + "x" * 100_000)  # no newline at the end
    with pytest.raises(
        LimitExceededError,
        match=r"^long\.csv: line 3 is longer than 10 KB, the limit \(set PGDATAHUB_MAX_LINE_MB to raise it\)",
    ):
        _read(path, limits=ReadLimits(max_line_bytes=10 * 1024))


def test_a_quote_never_closed_fails_at_the_line_limit(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "quote.csv", 'a,b\n1,"open\n' + "2,3\n" * 5_000)
    with pytest.raises(LimitExceededError, match=r"line 2 is longer than 1 KB.*a quote that is never closed"):
        _read(path, limits=ReadLimits(max_line_bytes=1024))


def test_a_header_line_over_the_limit_fails(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "wide.csv", ",".join(f"column {i}" for i in range(50_000)) + "\n")
    with pytest.raises(LimitExceededError, match=r"^wide\.csv: line 1 is longer than 64 KB"):
        _read(path, limits=ReadLimits(max_line_bytes=64 * 1024))


def test_more_columns_than_the_limit_fail_before_reading_the_rows(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(21))
    path = write_csv(tmp_path / "wide.csv", header + "\n" + ",".join("1" * 21) + "\n")
    with pytest.raises(
        LimitExceededError,
        match=r"^wide\.csv: has 21 columns, more than the limit of 20 \(set PGDATAHUB_MAX_COLUMNS to raise",
    ):
        _read(path, limits=ReadLimits(max_columns=20))
    assert _read(path, limits=ReadLimits(max_columns=21))[0] == header.split(",")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 11, 12, 13])
def test_utf8_is_checked_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """ASCII chunks are not decoded, unless a character began in the chunk before."""
    import pgdatahub_dagster.engine.read.encoding as encoding

    monkeypatch.setattr(encoding, "_CHUNK_BYTES", chunk_bytes)
    assert _read(write_csv(tmp_path / "utf8.csv", "id,name\n1,Café\n2,plain\n"))[1].rows() == [
        ("1", "Café"),
        ("2", "plain"),
    ]
    cut = tmp_path / "cut.csv"
    cut.write_bytes(b"id,name\n1,Caf\xc3\n2,plain\n")  # a UTF-8 character begun, then ASCII
    assert encoding.detect_encoding(cut, "cut.csv") != "utf-8"


def test_nul_characters_in_utf8_text_are_text(tmp_path: Path) -> None:
    """Only UTF-16 has NUL bytes in a regular pattern; in UTF-8 they are characters, which
    normalising removes (PostgreSQL cannot store them)."""
    headers, frame = _read(write_csv(tmp_path / "nul.csv", "n,note,code\n1,a\x00b,\x007\n2,\x00,8\x00\n"))
    assert headers == ["n", "note", "code"]
    assert frame.rows() == [("1", "a\x00b", "\x007"), ("2", "\x00", "8\x00")]


def test_a_utf8_byte_order_mark_before_bytes_that_are_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n1,\xff\xfe\n")
    with pytest.raises(UnreadableFileError, match=r"bom\.csv: .*byte-order mark says so.*not valid UTF-8"):
        _read(path)
