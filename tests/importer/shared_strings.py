"""An openpyxl-written workbook in the form Excel saves: its texts as shared strings.

openpyxl writes every text as an inline string (`t="inlineStr"`); Excel writes them
to the shared strings part and refers to them by index (`t="s"`), which openpyxl
reads through another path.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
SHEET = "xl/worksheets/sheet1.xml"
_INLINE = re.compile(rb'<c ([^>]*)t="inlineStr"([^>]*)><is><t>(.*?)</t></is></c>')
_OVERRIDE = (
    b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.'
    b'openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
)


def saved_by_openpyxl(rows: list[list[str]], path: Path) -> Path:
    """`rows` (the header first) as the first sheet of a workbook openpyxl saves at `path`."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def with_shared_strings(path: Path, out: Path) -> Path:
    """`path` (written by openpyxl) with its first sheet's inline texts shared, as `out`."""
    strings: list[bytes] = []

    def shared(found: re.Match[bytes]) -> bytes:
        strings.append(found[3])
        return b'<c %st="s"%s><v>%d</v></c>' % (found[1], found[2], len(strings) - 1)

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == SHEET:
                data = _INLINE.sub(shared, data)
            elif info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", _OVERRIDE)
            dst.writestr(info.filename, data)
        items = b"".join(b"<si><t>%s</t></si>" % text for text in strings)
        dst.writestr("xl/sharedStrings.xml", b'<sst xmlns="%s">%s</sst>' % (MAIN.encode(), items))
    assert strings, "no inline text in the sheet"
    return out
