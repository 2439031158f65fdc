"""Which text encoding a delimited file is in, and its text as UTF-8 for Polars.

UTF-8 (with or without BOM) and UTF-16/32 with a BOM are recognised at once, UTF-16 without
a BOM by where its NUL bytes sit; NUL bytes in anything else that is not UTF-8 make it
binary. Other text that is not UTF-8 goes to charset-normalizer, shown the lines that are
not ASCII; cp1252 (Excel on Windows) wins whenever it fits those lines as well as
charset-normalizer's best guess, and is the last resort when nothing else fits. A workbook
saved under a text name, binary data, and text that no encoding decodes fail the file with
a reason.
"""

from __future__ import annotations

import codecs
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from charset_normalizer import CharsetMatches, from_bytes

from pgdatahub_dagster.engine.errors import UnreadableFileError
from pgdatahub_dagster.engine.read.sheet_size import DAMAGED_ZIP

_HEAD_BYTES = 64 * 1024
_CHUNK_BYTES = 1024 * 1024
# Where the lines that are not ASCII are looked for, from the first byte that is not UTF-8,
# and how much of them charset-normalizer is shown.
_SCAN_BYTES = 4 * 1024 * 1024
_SAMPLE_BYTES = 64 * 1024
# Found by their NUL bytes before charset-normalizer is asked about other text.
_WIDE = ("utf_16", "utf_16_le", "utf_16_be", "utf_32", "utf_32_le", "utf_32_be")
_PREFERRED = "cp1252"
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    # UTF-32's little-endian BOM begins like UTF-16's, so it is looked for first.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_OLE = bytes.fromhex("d0cf11e0a1b11ae1")
_UNKNOWN = "cannot tell the text encoding of the file; save it as UTF-8"


def detect_encoding(path: Path, source_file: str) -> str:
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    _refuse_other_formats(path, head, source_file)
    nul = b"\x00" in head
    wide = _utf16_without_bom(head) if nul else None
    if wide is not None:
        return wide
    invalid_at = _first_byte_not_utf8(path)
    if invalid_at is None:
        return "utf-8"  # NUL characters included: normalising removes them
    if nul:
        raise UnreadableFileError(
            source_file, "holds binary data (NUL bytes), not text; if it is text, save it as UTF-8"
        )
    return _legacy_encoding(path, invalid_at, source_file)


def _refuse_other_formats(path: Path, head: bytes, source_file: str) -> None:
    """A workbook (or another kind of file) renamed to a text extension."""
    kind = None
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except DAMAGED_ZIP:
            names = set()
        if "xl/workbook.xml" in names:
            kind = ("an Excel workbook", ".xlsx")
        elif "xl/workbook.bin" in names:
            kind = ("an Excel binary workbook", ".xlsb")
        elif "content.xml" in names:
            kind = ("an OpenDocument spreadsheet", ".ods")
        else:
            raise UnreadableFileError(source_file, "is a zip archive, not delimited text")
    elif head.startswith(_OLE):
        kind = ("an Excel 97-2003 workbook", ".xls")
    if kind is not None:
        what, extension = kind
        raise UnreadableFileError(
            source_file, f"looks like {what}, not delimited text; rename it to {extension}"
        )


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 without a BOM, if that is what ``head`` is: its NUL bytes (the high bytes of
    ASCII characters, delimiters and line feeds included) nearly all sit at odd offsets
    (little-endian) or at even ones (big-endian), and charset-normalizer agrees."""
    odd, even = head[1::2].count(0), head[0::2].count(0)
    if max(odd, even) < 0.9 * (odd + even):
        return None
    # Cut the sample after its last line feed, on a code unit boundary: charset-normalizer
    # rejects an encoding whose last character is cut short.
    candidate = "utf_16_le" if odd > even else "utf_16_be"
    line_feed_unit = b"\n\x00" if odd > even else b"\x00\n"
    line_feed = head.rfind(line_feed_unit)
    while line_feed > 0 and line_feed % 2:  # two characters' bytes that only look like one
        line_feed = head.rfind(line_feed_unit, 0, line_feed + 1)
    end = line_feed + 2 if line_feed >= 0 and line_feed % 2 == 0 else len(head) // 2 * 2
    best = from_bytes(head[:end], cp_isolation=[candidate]).best()
    return best.encoding if best is not None else None


def _first_byte_not_utf8(path: Path) -> int | None:
    """The offset of about the first byte that is not UTF-8; ``None`` if the file is UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                # ASCII is UTF-8, and isascii() is five times faster than decoding.
                if not chunk.isascii() or decoder.getstate()[0]:
                    decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        # The decoder may hold up to three bytes of the previous chunk.
        return max(0, offset + error.start - 3)
    return None


def _legacy_encoding(path: Path, invalid_at: int, source_file: str) -> str:
    sample = _lines_not_ascii(path, invalid_at)
    matches = from_bytes(sample, cp_exclusion=list(_WIDE))
    chosen = _choose(matches)
    if chosen is not None:
        return chosen
    try:
        sample.decode(_PREFERRED)
    except UnicodeDecodeError:
        raise UnreadableFileError(source_file, _UNKNOWN) from None
    return _PREFERRED


def _lines_not_ascii(path: Path, invalid_at: int) -> bytes:
    """Whole lines that are not ASCII, from the line of the first byte that is not UTF-8 on:
    what tells one encoding from another. Lines end at 0x0A, which no ASCII-compatible
    encoding uses inside a character."""
    start = max(0, invalid_at - _SAMPLE_BYTES)
    with path.open("rb") as handle:
        handle.seek(start)
        window = handle.read(_SCAN_BYTES)
    whole = len(window) < _SCAN_BYTES
    line_start = window.rfind(b"\n", 0, invalid_at - start) + 1
    if line_start == 0 and start > 0:
        line_start = invalid_at - start  # a very long line: from the first byte that is not UTF-8
    lines = window[line_start:].split(b"\n")
    if not whole and len(lines) > 1:
        lines.pop()  # may be cut short
    sample, size = [], 0
    for line in lines:
        if line.isascii():
            continue
        sample.append(line)
        size += len(line) + 1
        if size >= _SAMPLE_BYTES:
            break
    return b"\n".join(sample)


def _choose(matches: CharsetMatches) -> str | None:
    """charset-normalizer's best guess, unless cp1252 reads the sample as well (as little
    chaos, nearly as coherent): short samples often fit several code pages equally, and cp1252
    is the one spreadsheets come in."""
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if (
            match.chaos <= best.chaos
            and match.coherence >= best.coherence - 0.05
            and _PREFERRED in match.could_be_from_charset
        ):
            return _PREFERRED
    return best.encoding


@contextmanager
def as_utf8(path: Path, encoding: str, source_file: str) -> Iterator[Path]:
    """Polars reads UTF-8 only: anything else is transcoded to a temporary file. A byte the
    encoding cannot decode fails the file."""
    if encoding in ("utf-8", "utf-8-sig"):
        yield path
        return
    handle, temporary = tempfile.mkstemp(suffix=".csv", prefix="pgdatahub-")
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
        offset = 0
        with path.open("rb") as source, os.fdopen(handle, "wb") as target:
            try:
                while chunk := source.read(_CHUNK_BYTES):
                    target.write(decoder.decode(chunk).encode())
                    offset += len(chunk)
                target.write(decoder.decode(b"", final=True).encode())
            except UnicodeDecodeError as error:
                reason = f"{_UNKNOWN} (it reads as {encoding} up to byte {offset + error.start:,}, then not)"
                raise UnreadableFileError(source_file, reason) from None
        yield Path(temporary)
    finally:
        os.unlink(temporary)
