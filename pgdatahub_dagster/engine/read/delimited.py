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
        scan = pl.scan_csv(
            utf8_path,
            has_header=False,
            separator=delimiter,
            skip_rows=skip + 1,
            schema={f"c{index}": pl.String for index in range(width)},
            truncate_ragged_lines=False,
            raise_if_empty=False,
        )
        yield RawTable(headers=headers, batches=_batches(scan, batch_rows, source_file))


def _batches(scan: pl.LazyFrame, batch_rows: int, source_file: str) -> Iterator[pl.DataFrame]:
    try:
        yield from scan.collect_batches(chunk_size=batch_rows)
    except pl.exceptions.PolarsError as error:
        reason = str(error).splitlines()[0]
        raise UnreadableFileError(source_file, f"cannot be parsed as delimited text: {reason}") from None
