"""Small workbooks that unpack to huge sheets, written part by part (tests and bench): an ods
whose cells repeat, an xlsb written record by record, an xlsx declaring a dimension smaller
than it holds. Each is also a valid workbook when its sizes are small."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import IO

from pgdatahub_dagster_tests.sheet_xml import SHEET_XML_START, write_sheet_xml

_ODS_NAMESPACES = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
)
_ODS_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
    'manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" '
    'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    "</manifest:manifest>"
)


def ods_repeat_bomb(path: Path, rows: int, columns: int) -> Path:
    """An ods of one sheet: a header cell ``id``, then one row of ``columns`` cells holding 1,
    repeated ``rows`` times, written as two repeat counts (``number-rows-repeated``,
    ``number-columns-repeated``): under 1 KB whatever the sizes."""
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<office:document-content {_ODS_NAMESPACES} office:version="1.2">'
        '<office:body><office:spreadsheet><table:table table:name="Sheet1">'
        '<table:table-row><table:table-cell office:value-type="string"><text:p>id</text:p>'
        "</table:table-cell></table:table-row>"
        f'<table:table-row table:number-rows-repeated="{rows}">'
        f'<table:table-cell table:number-columns-repeated="{columns}" office:value-type="float" '
        'office:value="1"><text:p>1</text:p></table:table-cell></table:table-row>'
        "</table:table></office:spreadsheet></office:body></office:document-content>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            zipfile.ZipInfo("mimetype"),
            "application/vnd.oasis.opendocument.spreadsheet",
            compress_type=zipfile.ZIP_STORED,
        )
        archive.writestr("META-INF/manifest.xml", _ODS_MANIFEST)
        archive.writestr("content.xml", content)
    return path


_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XLSB_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="bin" ContentType="application/vnd.ms-excel.sheet.binary.macroEnabled.main"/>'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.bin" ContentType="application/vnd.ms-excel.worksheet"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_RELATIONSHIPS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE}/officeDocument" Target="xl/workbook.bin"/>'
        "</Relationships>"
    ),
    "xl/_rels/workbook.bin.rels": (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_RELATIONSHIPS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE}/worksheet" Target="worksheets/sheet1.bin"/>'
        "</Relationships>"
    ),
}
# BIFF12 record types ([MS-XLSB] 2.3.2).
_ROW_HEADER, _CELL_RK = 0x00, 0x02
_BEGIN_BOOK, _END_BOOK, _BEGIN_SHEETS, _END_SHEETS, _SHEET = 0x83, 0x84, 0x8F, 0x90, 0x9C
_BEGIN_SHEET, _END_SHEET, _BEGIN_SHEET_DATA, _END_SHEET_DATA, _DIMENSION = 0x81, 0x82, 0x91, 0x92, 0x94


def _record(kind: int, payload: bytes = b"") -> bytes:
    """A BIFF12 record: its type and size as variable-length integers, then its payload."""
    head = bytearray([kind] if kind < 0x80 else [(kind & 0x7F) | 0x80, kind >> 7])
    size = len(payload)
    while True:
        head.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    return bytes(head) + payload


def _row_header(row: int, columns: int) -> bytes:
    """Row number, style 0, height 13.2 pt, no flags, one span of columns."""
    return _record(_ROW_HEADER, struct.pack("<IIH3sIII", row, 0, 0x108, bytes(3), 1, 0, columns - 1))


def _wide_string(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode("utf-16-le")


def _rk_integer(value: int) -> int:
    return (value << 2) | 0x02


def xlsb_sheet(path: Path, rows: int, columns: int) -> Path:
    """An xlsb of one sheet: a header cell 0, then ``rows`` rows of ``columns`` cells holding
    1, as 14-byte records that deflate packs about 500 to 1 (10 million cells: 290 KB)."""
    book = b"".join(
        [
            _record(_BEGIN_BOOK),
            _record(_BEGIN_SHEETS),
            _record(_SHEET, struct.pack("<II", 0, 1) + _wide_string("rId1") + _wide_string("Sheet1")),
            _record(_END_SHEETS),
            _record(_END_BOOK),
        ]
    )
    cells = b"".join(
        _record(_CELL_RK, struct.pack("<IIi", column, 0, _rk_integer(1))) for column in range(columns)
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _XLSB_PARTS.items():
            archive.writestr(name, text)
        archive.writestr("xl/workbook.bin", book)
        with archive.open("xl/worksheets/sheet1.bin", "w", force_zip64=True) as sheet:
            sheet.write(
                _record(_BEGIN_SHEET) + _record(_DIMENSION, struct.pack("<IIII", 0, rows, 0, columns - 1))
            )
            sheet.write(_record(_BEGIN_SHEET_DATA))
            sheet.write(_row_header(0, columns))
            sheet.write(_record(_CELL_RK, struct.pack("<IIi", 0, 0, _rk_integer(0))))
            for row in range(1, rows + 1):
                sheet.write(_row_header(row, columns) + cells)
            sheet.write(_record(_END_SHEET_DATA) + _record(_END_SHEET))
    return path


def lying_dimension_xlsx(path: Path, rows: int, columns: int) -> Path:
    """An xlsx whose sheet declares the dimension ``A1:B2`` but holds a header and ``rows``
    rows of ``columns`` values."""
    row = b"<row>" + b"<c><v>1</v></c>" * columns + b"</row>"

    def sheet(stream: IO[bytes]) -> None:
        stream.write(SHEET_XML_START + b'<dimension ref="A1:B2"/><sheetData>')
        stream.write(b'<row><c t="inlineStr"><is><t>id</t></is></c></row>')
        for _ in range(rows):
            stream.write(row)
        stream.write(b"</sheetData></worksheet>")

    return write_sheet_xml(path, sheet)
