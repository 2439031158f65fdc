"""Delimited text (csv, tsv, txt) through Polars, streamed in batches.

The encoding is detected (UTF-8 with or without BOM, UTF-16 with BOM, else cp1252, else
latin-1) and the delimiter is sniffed among ``,`` ``;`` tab and ``|``. Every column is
read as text; normalising decides the honest types afterwards.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from pgdatahub_dagster.engine.errors import UnreadableFileError
from pgdatahub_dagster.engine.read.table import RawTable

DELIMITED_EXTENSIONS = frozenset({".csv", ".tsv", ".txt"})
DELIMITERS = (",", ";", "\t", "|")

_CHUNK_BYTES = 1024 * 1024
# Pieces parsed at once; memory holds about one piece's rows at a time.
_PIECE_BYTES = 8 * 1024 * 1024
_QUOTE = b'"'
_SNIFF_BYTES = 256 * 1024
_SNIFF_LINES = 50


def _detect_encoding(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
    for encoding in ("utf-8", "cp1252"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK_BYTES):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    return "latin-1"


@contextmanager
def _as_utf8(path: Path, encoding: str) -> Iterator[Path]:
    """Polars reads UTF-8 only: anything else is transcoded to a temporary file."""
    if encoding in ("utf-8", "utf-8-sig"):
        yield path
        return
    handle, temporary = tempfile.mkstemp(suffix=".csv", prefix="pgdatahub-")
    try:
        with (
            path.open("r", encoding=encoding, newline="") as source,
            os.fdopen(handle, "w", encoding="utf-8", newline="") as target,
        ):
            while chunk := source.read(_CHUNK_BYTES):
                target.write(chunk)
        yield Path(temporary)
    finally:
        os.unlink(temporary)


def _sniff_delimiter(lines: list[str], preferred: str | None) -> str:
    """The delimiter that splits the sample lines into the most consistent field count > 1."""
    best, best_score = preferred or ",", (0, 0, 0)
    for delimiter in DELIMITERS:
        counts = [len(row) for row in csv.reader(lines, delimiter=delimiter) if row]
        if not counts:
            continue
        width, agreeing = Counter(counts).most_common(1)[0]
        if width < 2:
            continue
        score = (agreeing, int(delimiter == preferred), width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _sample_lines(path: Path, skip: int) -> list[str]:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        text = handle.read(_SNIFF_BYTES)
    lines = io.StringIO(text).readlines()
    if len(text) == _SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off mid-way
    return lines[skip : skip + _SNIFF_LINES]


@contextmanager
def read_delimited(
    path: Path, source_file: str, header_row: int | None, batch_rows: int
) -> Iterator[RawTable]:
    skip = (header_row or 1) - 1
    encoding = _detect_encoding(path)
    with _as_utf8(path, encoding) as utf8_path:
        lines = _sample_lines(utf8_path, skip)
        if not lines:
            yield RawTable(headers=[], batches=iter(()))
            return
        preferred = "\t" if path.suffix.lower() == ".tsv" else None
        delimiter = _sniff_delimiter(lines, preferred)
        rows = list(csv.reader(lines, delimiter=delimiter))
        headers = rows[0] if rows else []
        width = max((len(row) for row in rows), default=0)
        headers = headers + [""] * (width - len(headers))
        schema: dict[str, pl.DataType] = {f"c{index}": pl.String() for index in range(width)}
        batches = _batches(utf8_path, skip, delimiter, schema, batch_rows, source_file)
        yield RawTable(headers=headers, batches=batches)


def _row_end(data: bytearray | bytes, end: int) -> int:
    """The end (after its newline) of the last complete row in ``data[:end]``, 0 if none.

    A newline ends a row when an even number of quote characters precede it: quoted fields
    hold their own newlines, and doubled quotes inside them keep the count even. Polars'
    own parser splits its work the same way, so a file it reads whole splits here alike.
    """
    quotes_after = 0
    position = end
    total = data.count(_QUOTE, 0, end)
    while (newline := data.rfind(b"\n", 0, position)) >= 0:
        quotes_after += data.count(_QUOTE, newline, position)
        if (total - quotes_after) % 2 == 0:
            return newline + 1
        position = newline
    return 0


def _row_ends_at_least(data: bytearray | bytes, end: int, wanted: int) -> bool:
    """Whether ``data[:end]`` holds at least ``wanted`` complete rows."""
    found, quotes, position = 0, 0, 0
    while found < wanted and (newline := data.find(b"\n", position, end)) >= 0:
        quotes += data.count(_QUOTE, position, newline)
        if quotes % 2 == 0:
            found += 1
        position = newline + 1
    return found >= wanted


def _pieces(path: Path, first_rows: int, lead: bytes) -> Iterator[bytes]:
    """The file in pieces of about ``_PIECE_BYTES`` that end where a row ends; the first
    holds at least ``first_rows`` rows when the file has them, every later one starts with
    the row ``lead``. Each piece is copied once."""
    buffer = bytearray()
    wanted, floor = first_rows, 0
    with path.open("rb") as handle:
        while block := handle.read(_PIECE_BYTES):
            buffer += block
            cut = _row_end(buffer, len(buffer))
            if cut <= floor or (wanted and not _row_ends_at_least(buffer, cut, wanted)):
                continue  # a row longer than a block, or the first rows not all there yet
            wanted = 0
            yield bytes(memoryview(buffer)[:cut])
            buffer[:cut] = lead
            floor = len(lead)
    if len(buffer) > floor:
        yield bytes(buffer)


def _batches(
    path: Path, skip: int, delimiter: str, schema: dict[str, pl.DataType], batch_rows: int, source_file: str
) -> Iterator[pl.DataFrame]:
    """Rows in batches of exactly ``batch_rows`` (the last one smaller).

    Each piece of the file is parsed on its own, so memory holds one piece and one batch
    however large the file (Polars' streaming scan reads hundreds of megabytes ahead). The
    first piece is parsed exactly as a scan of the whole file would be (skipped rows, and
    the check that the first data row is not short of columns); a later piece starts with
    a made-up row of empty fields so that Polars' first-row check passes as it would in
    the middle of the file, and that row is dropped.
    """
    options = {
        "has_header": False,
        "separator": delimiter,
        "schema": schema,
        "truncate_ragged_lines": False,
        "raise_if_empty": False,
    }
    filler = (delimiter * (len(schema) - 1) + "\n").encode()
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    try:
        for index, piece in enumerate(_pieces(path, skip + 2, filler)):
            if index == 0:
                frame = pl.read_csv(piece, skip_rows=skip + 1, **options)  # type: ignore[arg-type]
            else:
                frame = pl.read_csv(piece, **options).slice(1)  # type: ignore[arg-type]
            pending.append(frame)
            pending_rows += frame.height
            while pending_rows >= batch_rows:
                rows = pl.concat(pending, rechunk=False)
                yield rows.head(batch_rows)
                pending = [rows.slice(batch_rows)]
                pending_rows -= batch_rows
    except pl.exceptions.PolarsError as error:
        reason = str(error).splitlines()[0]
        raise UnreadableFileError(source_file, f"cannot be parsed as delimited text: {reason}") from None
    if pending_rows:
        yield pl.concat(pending, rechunk=False)
