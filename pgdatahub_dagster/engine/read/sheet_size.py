"""How much a workbook asks of the reader, found out before calamine reads it.

calamine holds the sheet it reads in memory whole, as a dense grid of its used range, so a
small file can ask for any amount: a compressed part that unpacks to gigabytes (a zip
bomb), or two cells far apart (a 600-byte xlsx asked for 550 GB and aborted the process).
Zip-based workbooks (xlsx, xlsm, xlsb, ods) are checked from their zip directory first: no
part may unpack to more than ``_BYTES_PER_CELL`` bytes per allowed cell. Then, in xlsx and
xlsm, the sheet to be read: its declared dimension (``<dimension ref="A1:L200001"/>``, which
Excel, LibreOffice and the usual libraries write) when it is within the limits, else its
values and the range they span, counted while its XML streams past. A declared dimension
within the limits is trusted: a sheet that declares less than it holds, like what no check
here can see (repeated ods cells, xls and xlsb sheets), meets the memory limit of the
process that reads workbooks (``reader_process``). These checks fail a file sooner and say
better why.
"""

from __future__ import annotations

import html
import posixpath
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO

from pgdatahub_dagster.engine.errors import UnreadableFileError
from pgdatahub_dagster.engine.read.limits import check_cells, check_columns, part_too_large
from pgdatahub_dagster.engine.settings import ReadLimits

# A cell takes 15 to 60 bytes of XML; 128 leaves room for long inline strings.
_BYTES_PER_CELL = 128
_HEAD_BYTES = 64 * 1024
_CHUNK_BYTES = 8 * 1024 * 1024
# The parts that say which part holds which sheet: small in any real workbook.
_INDEX_BYTES = 16 * 1024 * 1024
_SHEET = re.compile(rb"<(?:\w+:)?sheet\b[^>]*>")
_RELATIONSHIP = re.compile(rb"<(?:\w+:)?Relationship\b[^>]*>")
_ATTRIBUTE = re.compile(rb'([\w:]+)\s*=\s*"([^"]*)"')
_DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="([^"]*)"')
_CELL_REF = re.compile(rb"^([A-Z]{1,3})([0-9]{1,7})$")
# What a damaged zip raises while it is read (a multi-disk one: NotImplementedError; an
# encrypted part: RuntimeError). Then there is nothing to check: calamine says what is wrong.
DAMAGED_ZIP = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    KeyError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)
# The reference of a cell that is not empty: its start tag is not self-closing. (Cell
# attributes are r, s, t, cm, vm and ph, none of whose values holds a slash.)
_VALUE_CELL = re.compile(rb'<(?:\w+:)?c\s[^>]*?\br="([A-Z]{1,3})([0-9]{1,7})"[^>/]*>')


def check_workbook_size(path: Path, source_file: str, limits: ReadLimits) -> None:
    """Every part of a zip-based workbook unpacks to a bounded size. Not a zip: nothing to
    check here (xls), or not a workbook, which calamine reports."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except DAMAGED_ZIP:
        return
    allowed = limits.max_cells * _BYTES_PER_CELL
    for info in infos:
        if info.file_size > allowed:
            raise part_too_large(source_file, info.filename, info.file_size, allowed, limits)


# An xls is an OLE2 compound file; calamine sizes its tables from the header's counts.
_COMPOUND_SIGNATURE = bytes.fromhex("d0cf11e0a1b11ae1")
_COMPOUND_HEADER_BYTES = 512
# The header's sector counts, by offset: FAT, mini FAT and DIFAT sectors (directory sectors
# are counted only in version 4 files, and 0 in version 3).
_COMPOUND_COUNTS = {0x2C: "FAT", 0x40: "mini FAT", 0x48: "DIFAT", 0x28: "directory"}
_MINI_STREAM_CUTOFF = 4096


def _corrupt(source_file: str, why: str) -> UnreadableFileError:
    return UnreadableFileError(source_file, f"not a readable workbook (corrupt): {why}")


def check_compound_file(path: Path, source_file: str) -> None:
    """The header of an OLE2 compound file (xls) claims no more sectors than the file has,
    and the standard mini stream cutoff. The long fuzz test found both making calamine
    allocate gigabytes: a 610-byte xls whose header counted 2³² FAT sectors, one whose cutoff
    was 4 GB. The reader's memory limit stops those, and whatever else a damaged xls asks
    for; this check names the damage instead, from the header alone."""
    with path.open("rb") as stream:
        header = stream.read(_COMPOUND_HEADER_BYTES)
    if not header.startswith(_COMPOUND_SIGNATURE):
        return
    if len(header) < _COMPOUND_HEADER_BYTES:
        raise _corrupt(source_file, "its header is cut short")
    shift = struct.unpack_from("<H", header, 0x1E)[0]
    if shift not in (9, 12):
        raise _corrupt(source_file, f"its sector size 2^{shift} is not 512 or 4096")
    sectors = path.stat().st_size // (1 << shift)
    for offset, name in _COMPOUND_COUNTS.items():
        count = struct.unpack_from("<I", header, offset)[0]
        if count > sectors:
            raise _corrupt(
                source_file, f"its header counts {count:,} {name} sectors in a file of {sectors:,}"
            )
    if struct.unpack_from("<I", header, 0x38)[0] != _MINI_STREAM_CUTOFF:
        raise _corrupt(source_file, "its mini stream cutoff is not 4096 bytes")


def check_sheet_size(path: Path, sheet_index: int, sheet: str, source_file: str, limits: ReadLimits) -> None:
    """The sheet's cells (rows × columns of its used range) and columns are within the
    limits; xlsx and xlsm only, whose sheets are XML parts."""
    try:
        with zipfile.ZipFile(path) as archive:
            part = _sheet_part(archive, sheet_index)
            if part is None:
                return
            with archive.open(part) as stream:
                _check_sheet_xml(stream, f"sheet {sheet!r} ", source_file, limits)
    except DAMAGED_ZIP:
        return


def _attributes(element: bytes) -> dict[str, str]:
    return {
        name.decode().rpartition(":")[2]: html.unescape(value.decode("utf-8", "replace"))
        for name, value in _ATTRIBUTE.findall(element)
    }


def _sheet_part(archive: zipfile.ZipFile, sheet_index: int) -> str | None:
    """The part holding the workbook's ``sheet_index``-th sheet (calamine's order is the
    workbook's), from xl/workbook.xml and its relationships."""
    names = set(archive.namelist())
    if "xl/workbook.xml" not in names or "xl/_rels/workbook.xml.rels" not in names:
        return None
    with archive.open("xl/workbook.xml") as stream:
        sheets = _SHEET.findall(stream.read(_INDEX_BYTES))
    with archive.open("xl/_rels/workbook.xml.rels") as stream:
        relationships = [_attributes(found) for found in _RELATIONSHIP.findall(stream.read(_INDEX_BYTES))]
    if sheet_index >= len(sheets):
        return None
    wanted = _attributes(sheets[sheet_index]).get("id")
    target = next((r.get("Target") for r in relationships if r.get("Id") == wanted), None)
    if not target:
        return None
    part = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
    return part if part in names else None


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - ord("A") + 1
    return number


def _declared_size(head: bytes) -> tuple[int, int] | None:
    """The columns and rows of the sheet's declared dimension, if it has one."""
    declared = _DIMENSION.search(head)
    if declared is None:
        return None
    corners = [_CELL_REF.match(corner) for corner in declared.group(1).split(b":")]
    if not all(corners):
        return None
    rows = [int(corner.group(2)) for corner in corners if corner]
    columns = [_column_number(corner.group(1)) for corner in corners if corner]
    return max(columns) - min(columns) + 1, max(rows) - min(rows) + 1


def _check_sheet_xml(stream: IO[bytes], where: str, source_file: str, limits: ReadLimits) -> None:
    """A declared dimension within the limits is enough. Without one, or with one over a
    limit, the cells decide: writers often declare the formatted range (``A1:XFD1048576``
    for a sheet of 11 × 2 values), and calamine keeps only cells that hold a value."""
    head = stream.read(_HEAD_BYTES)
    declared = _declared_size(head)
    if declared is not None:
        width, height = declared
        if width <= limits.max_columns and width * height <= limits.max_cells:
            return
    _count_cells(head, stream, where, source_file, limits)


def _count_cells(head: bytes, stream: IO[bytes], where: str, source_file: str, limits: ReadLimits) -> None:
    """The sheet's values (``<v>`` and inline ``<is>``, each an opening and a closing tag
    ending in ``v>`` or ``is>``) and the range their cells span, counted while the XML
    streams past; it stops as soon as either is over the limit."""
    values = 0
    first_row = first_column = 2**63
    last_row = last_column = 0
    carry, chunk = b"", head
    while chunk:
        data = carry + chunk
        cut = data.rfind(b"<")  # no tag is cut in two
        if cut <= 0:
            cut = len(data)
        data, carry = data[:cut], data[cut:]
        values += (data.count(b"v>") + data.count(b"is>")) // 2
        check_cells(values, f"{where}holds at least {values:,}", source_file, limits)
        # Cells without references (calamine places them one after another) need no search.
        references = _VALUE_CELL.findall(data) if b' r="' in data else []
        if references:
            columns = [_column_number(letters) for letters in {found[0] for found in references}]
            rows = [int(digits) for digits in {found[1] for found in references}]
            first_column, last_column = min(first_column, *columns), max(last_column, *columns)
            first_row, last_row = min(first_row, *rows), max(last_row, *rows)
            width, height = last_column - first_column + 1, last_row - first_row + 1
            check_columns(width, source_file, limits, where)
            check_cells(
                width * height,
                f"{where}has values from row {first_row:,} to {last_row:,} in {width:,} columns, "
                f"a range of {width * height:,}",
                source_file,
                limits,
            )
        chunk = stream.read(_CHUNK_BYTES)
