"""Delimited text (csv, tsv, txt) through Polars, streamed in batches.

The encoding is detected (``encoding.py``) and so are the line ending (LF, CRLF, or CR alone
as old Mac exports have it) and the delimiter (among ``,`` ``;`` tab and ``|``). Every column
is read as text; normalising decides the honest types afterwards. A line longer than
``ReadLimits.max_line_bytes`` or more columns than ``max_columns`` fail the file early.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from pgdatahub_dagster.engine.errors import UnreadableFileError
from pgdatahub_dagster.engine.read.encoding import as_utf8, detect_encoding
from pgdatahub_dagster.engine.read.limits import check_columns, line_too_long
from pgdatahub_dagster.engine.read.table import RawTable
from pgdatahub_dagster.engine.settings import ReadLimits

DELIMITED_EXTENSIONS = frozenset({".csv", ".tsv", ".txt"})
DELIMITERS = (",", ";", "\t", "|")

# Pieces parsed at once; memory holds about one piece's rows at a time.
_PIECE_BYTES = 8 * 1024 * 1024
_QUOTE = b'"'
_SNIFF_BYTES = 256 * 1024
_SNIFF_LINES = 50
# Python's csv module (used on the sample only) refuses fields over 128 KiB for its own
# safety; the reader bounds lines itself (ReadLimits.max_line_bytes), so csv need not.
csv.field_size_limit(2**31 - 1)
# The csv module ends a line at CR and at LF alike, where Polars ends it at the file's line
# ending only: the other one, inside a line, is data. In the sample it is swapped for a
# Unicode noncharacter (never in interchanged text) and swapped back in the header.
_CR_INSIDE, _LF_INSIDE = "\ufdd0", "\ufdd1"
_LONE_CR = re.compile("\r(?!\n)")


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


def _sample(path: Path, skip: int, source_file: str, limits: ReadLimits) -> tuple[bytes, bool]:
    """The file's first bytes, and whether they are all of it: at least ``_SNIFF_BYTES``, and
    on until the header line is whole (within the line limit)."""
    sample = bytearray()
    line_feeds = carriage_returns = 0
    with path.open("rb") as handle:
        while block := handle.read(_SNIFF_BYTES):
            sample += block
            line_feeds += block.count(b"\n")
            carriage_returns += block.count(b"\r")
            lines = max(line_feeds, carriage_returns)
            if lines > skip:
                return bytes(sample), False
            if len(sample) > (skip + 1) * limits.max_line_bytes:
                raise line_too_long(source_file, lines + 1, limits)
    return bytes(sample), True


def _line_ending(sample: bytes) -> str:
    """CR when it ends more lines than LF does (old Mac exports), else LF (CRLF included)."""
    lone_carriage_returns = sample.count(b"\r") - sample.count(b"\r\n")
    return "\r" if lone_carriage_returns > sample.count(b"\n") else "\n"


def _sample_lines(sample: bytes, whole: bool, eol: str, skip: int) -> list[str]:
    if not whole:
        sample = sample[: sample.rfind(eol.encode()) + 1]  # the last line may be cut off mid-way
    # A file with a UTF-8 BOM is not checked beforehand; Polars names a bad byte in it.
    text = sample.decode("utf-8-sig", errors="replace")
    text = _LONE_CR.sub(_CR_INSIDE, text) if eol == "\n" else text.replace("\n", _LF_INSIDE)
    lines = [line + eol for line in text.split(eol)]
    if lines[-1] == eol:
        lines.pop()  # what followed the last line ending
    return lines[skip : skip + _SNIFF_LINES]


@contextmanager
def read_delimited(
    path: Path, source_file: str, header_row: int | None, batch_rows: int, limits: ReadLimits
) -> Iterator[RawTable]:
    skip = (header_row or 1) - 1
    encoding = detect_encoding(path, source_file)
    with as_utf8(path, encoding, source_file) as utf8_path:
        sample, whole = _sample(utf8_path, skip, source_file, limits)
        eol = _line_ending(sample)
        lines = _sample_lines(sample, whole, eol, skip)
        if not lines:
            yield RawTable(headers=[], batches=iter(()))
            return
        preferred = "\t" if path.suffix.lower() == ".tsv" else None
        try:
            delimiter = _sniff_delimiter(lines, preferred)
            rows = list(csv.reader(lines, delimiter=delimiter))
        except csv.Error as error:
            raise UnreadableFileError(source_file, f"cannot be parsed as delimited text: {error}") from None
        headers = [name.replace(_CR_INSIDE, "\r").replace(_LF_INSIDE, "\n") for name in rows[0]]
        width = max((len(row) for row in rows), default=0)
        check_columns(width, source_file, limits)
        headers = headers + [""] * (width - len(headers))
        schema: dict[str, pl.DataType] = {f"c{index}": pl.String() for index in range(width)}
        batches = _batches(utf8_path, skip, delimiter, eol, schema, batch_rows, source_file, limits)
        yield RawTable(headers=headers, batches=batches)


def _row_end(data: bytearray | bytes, end: int, eol: bytes) -> int:
    """The end (after its line ending ``eol``) of the last complete row in ``data[:end]``, 0 if none.

    A newline ends a row when an even number of quote characters precede it: quoted fields
    hold their own newlines, and doubled quotes inside them keep the count even. Polars'
    own parser splits its work the same way, so a file it reads whole splits here alike.
    """
    quotes_after = 0
    position = end
    total = data.count(_QUOTE, 0, end)
    while (newline := data.rfind(eol, 0, position)) >= 0:
        quotes_after += data.count(_QUOTE, newline, position)
        if (total - quotes_after) % 2 == 0:
            return newline + 1
        position = newline
    return 0


def _row_ends_at_least(data: bytearray | bytes, end: int, wanted: int, eol: bytes) -> bool:
    """Whether ``data[:end]`` holds at least ``wanted`` complete rows."""
    found, quotes, position = 0, 0, 0
    while found < wanted and (newline := data.find(eol, position, end)) >= 0:
        quotes += data.count(_QUOTE, position, newline)
        if quotes % 2 == 0:
            found += 1
        position = newline + 1
    return found >= wanted


def _pieces(
    path: Path, first_rows: int, lead: bytes, eol: bytes, source_file: str, limits: ReadLimits
) -> Iterator[bytes]:
    """The file in pieces of about ``_PIECE_BYTES`` that end where a row ends; the first
    holds at least ``first_rows`` rows when the file has them, every later one starts with
    the row ``lead``. Each piece is copied once. A row longer than the line limit fails the
    file as soon as the buffer holds that much of it."""
    buffer = bytearray()
    wanted, floor = first_rows, 0
    line = 1  # of the file, at the buffer's first row
    with path.open("rb") as handle:
        while block := handle.read(_PIECE_BYTES):
            buffer += block
            cut = _row_end(buffer, len(buffer), eol)
            if cut <= floor or (wanted and not _row_ends_at_least(buffer, cut, wanted, eol)):
                # A row longer than a block, or the first rows not all there yet.
                unfinished = max(cut, floor)
                if len(buffer) - unfinished > limits.max_line_bytes:
                    raise line_too_long(source_file, line + buffer.count(eol, floor, unfinished), limits)
                continue
            wanted = 0
            line += buffer.count(eol, floor, cut)
            yield bytes(memoryview(buffer)[:cut])
            buffer[:cut] = lead
            floor = len(lead)
    if len(buffer) > floor:
        yield bytes(buffer)


def _batches(
    path: Path,
    skip: int,
    delimiter: str,
    eol: str,
    schema: dict[str, pl.DataType],
    batch_rows: int,
    source_file: str,
    limits: ReadLimits,
) -> Iterator[pl.DataFrame]:
    """Rows in batches of exactly ``batch_rows`` (the last one smaller).

    Each piece of the file is parsed on its own, so memory holds one piece and one batch
    however large the file (Polars' streaming scan reads hundreds of megabytes ahead). The
    first piece is parsed exactly as a scan of the whole file would be (skipped rows); a
    later piece starts with a made-up row of empty fields, dropped, so that its first row
    is read as any row in the middle of the file is. A row short of fields has the rest
    empty, the first data row too (``missing_columns``: Polars would otherwise take the
    first row's width for the file's, and fail a file whose first row leaves its trailing
    empty fields out). A row wider than the widest of the sampled rows fails the file.
    """
    options = {
        "has_header": False,
        "separator": delimiter,
        "schema": schema,
        "missing_columns": "insert",
        "truncate_ragged_lines": False,
        "raise_if_empty": False,
        "eol_char": eol,
    }
    filler = (delimiter * (len(schema) - 1) + eol).encode()
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    try:
        for index, piece in enumerate(_pieces(path, skip + 2, filler, eol.encode(), source_file, limits)):
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
        raise UnreadableFileError(source_file, _parse_failure(error, delimiter, len(schema))) from None
    if pending_rows:
        yield pl.concat(pending, rechunk=False)


def _parse_failure(error: pl.exceptions.PolarsError, delimiter: str, width: int) -> str:
    """What Polars' refusal of a piece means, in the user's terms: which rule the file
    breaks and what fixes it; Polars' own first line for anything else."""
    message = str(error)
    if "more fields than defined" in message or "not specified in schema" in message:
        return (
            "cannot be parsed as delimited text: a row has more fields than any of the file's "
            f"first {_SNIFF_LINES} lines ({width}), which decide its columns; add the missing "
            f"column names to the header, or quote the fields that hold the delimiter {delimiter!r}"
        )
    if message.startswith('could not parse `"') or "CSV malformed" in message:
        return (
            "cannot be parsed as delimited text: its double quotes do not pair up (a field "
            'opens a " that does not close before the delimiter or the line end); double a '
            'quote inside a quoted field ("") or save the file again from its spreadsheet'
        )
    if "invalid utf-8" in message:
        return (
            "cannot be parsed as delimited text: it was read as UTF-8 (its byte-order mark "
            "says so) but holds bytes that are not valid UTF-8; save it again as UTF-8"
        )
    return f"cannot be parsed as delimited text: {message.splitlines()[0]}"
