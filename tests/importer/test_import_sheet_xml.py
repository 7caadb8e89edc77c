"""`sheet_xml.row_elements`: rows of a sheet's XML, a row past the bound handed over
cut and read past as bytes, the rows after it parsed as before."""

from __future__ import annotations

import io

import pytest
from memory_peak import peak_memory

from chainwatch.importer import sheet_xml

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
ROW = f"{{{MAIN}}}row"


def document(rows: str, prefix: str = "") -> bytes:
    p = f"{prefix}:" if prefix else ""
    space = f'xmlns{":" + prefix if prefix else ""}="{MAIN}"'
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{p}worksheet {space}><{p}sheetData>'
        f"{rows}</{p}sheetData></{p}worksheet>"
    ).encode()


def read(xml: bytes, max_bytes: int) -> list[tuple[str | None, bool, int]]:
    return [
        (e.get("r"), whole, len(e))
        for e, whole in sheet_xml.row_elements(io.BytesIO(xml), ROW, max_bytes)
    ]


@pytest.mark.parametrize("prefix", ["", "x"])
@pytest.mark.parametrize("pad", range(24))
def test_the_end_of_a_row_past_the_bound_is_found_wherever_the_chunks_cut_it(
    monkeypatch: pytest.MonkeyPatch, prefix: str, pad: int
) -> None:
    """Chunks of 16 bytes and paddings of 0-23 put every byte of `</row  >` (or
    `</x:row>`) at a chunk's edge once; the row after it is read either way."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    p = f"{prefix}:" if prefix else ""
    text = "x" * 300 + "y" * pad
    rows = (
        f'<{p}row r="1"><{p}c r="A1"><{p}v>1</{p}v></{p}c></{p}row>'
        f'<{p}row r="2"><{p}c r="A2"><{p}v>2</{p}v></{p}c>'
        f'<{p}c r="B2" t="inlineStr"><{p}is><{p}t>{text}</{p}t></{p}is></{p}c></{p}row  >'
        f'<{p}row r="3"><{p}c r="A3"><{p}v>3</{p}v></{p}c></{p}row>'
    )
    # row 2 keeps A2, finished before the bound was passed, not the cell being read
    assert read(document(rows, prefix), 64) == [("1", True, 1), ("2", False, 1), ("3", True, 1)]


def test_rows_within_the_bound_are_whole() -> None:
    rows = "".join(f'<row r="{n}"><c r="A{n}"><v>{n}</v></c></row>' for n in range(1, 2001))
    got = read(document(rows), 64)
    assert got == [(str(n), True, 1) for n in range(1, 2001)]


def test_a_file_that_ends_inside_a_row_past_the_bound_is_broken_xml() -> None:
    xml = document('<row r="1"><c r="A1"><v>1</v></c></row><row r="2"><c r="A2"><v>')
    xml = xml[: xml.index(b"<v>") + 3] + b"9" * 200_000
    with pytest.raises(SyntaxError, match=r"the sheet ends inside the row \(</row> missing\)"):
        read(xml, 1000)


def test_rows_nested_in_a_row_do_not_restart_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `<row>` opened inside the row every few cells counted the bytes afresh: the
    outer row (all of them) was held whole, however large. Its rest is read past, and
    the row after it read."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    cell = '<c r="A1" t="inlineStr"><is><t>' + "x" * 10 + "</t></is></c>"
    rows = ('<row r="1">' + cell) * 50 + "</row>" * 50 + '<row r="2"/>'
    assert read(document(rows), 500) == [("1", False, 1), ("2", True, 0)]


LONG_CELL = '<c r="B2" t="inlineStr"><is><t>' + "x" * 300 + "</t></is></c>"


def four_rows(second: str) -> str:
    """Rows 1-4, row 2 written by `second` (its start tag, then `{}` for its cells)."""
    plain = '<row r="{0}"><c r="A{0}"><v>{0}</v></c></row>'
    return plain.format(1) + second.format(LONG_CELL) + plain.format(3) + plain.format(4)


@pytest.mark.parametrize(
    ("before", "second"),
    [
        # a default namespace declared on another element, before the rows, is not theirs
        ('<dimension xmlns="urn:other" ref="A1"/>', '<row r="2">{}</row>'),
        # a prefix bound on the row itself, to the namespace the default names too
        ("", f'<x:row xmlns:x="{MAIN}" r="2">{{}}</x:row>'),
        # the bound passed inside the row's end tag, in blanks that fill whole chunks
        ("", '<row r="2"><c r="A2"><v>2</v></c></row' + " " * 200 + ">"),
    ],
)
def test_the_rows_after_a_skipped_one_are_read_as_the_file_declares_them(
    monkeypatch: pytest.MonkeyPatch, before: str, second: str
) -> None:
    """The namespaces in scope where the row is, each end tag the file may write for
    it: rows 3 and 4 were dropped unseen (read in another namespace, or skipped as the
    rest of row 2)."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    xml = document(four_rows(second)).replace(b"<sheetData>", before.encode() + b"<sheetData>")
    got = [(r, whole) for r, whole, _ in read(xml, 64)]
    assert got == [("1", True), ("2", False), ("3", True), ("4", True)]


def test_a_sheet_naming_its_ancestors_by_two_prefixes_is_read_past_a_long_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest of the file closes `<x:sheetData>` by the prefix it wrote: the parser
    that read it knows which (a new one opened after the row could not tell)."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    xml = document(four_rows('<x:row r="2">{}</x:row>'), "x")
    xml = xml.replace(b"<x:worksheet ", f'<x:worksheet xmlns="{MAIN}" '.encode())
    got = [(r, whole) for r, whole, _ in read(xml, 64)]
    assert got == [("1", True), ("2", False), ("3", True), ("4", True)]


def test_the_rows_after_a_skipped_one_are_read_in_the_encoding_the_file_declares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The new parser had no declaration: Latin-1 bytes were read as UTF-8 (`Ã©`
    became `é`, an `é` alone broke the XML)."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    third = '<row r="3"><c r="A3" t="inlineStr"><is><t>Ã© é</t></is></c></row>'
    rows = four_rows('<row r="2">{}</row>').replace(
        '<row r="3"><c r="A3"><v>3</v></c></row>', third
    )
    xml = document(rows).decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    found = sheet_xml.row_elements(io.BytesIO(xml.encode("latin-1")), ROW, 64)
    texts = {row.get("r"): [t.text for t in row.iter(f"{{{MAIN}}}t")] for row, _ in found}
    assert texts == {"1": [], "2": [], "3": ["Ã© é"], "4": []}


QUIET = [
    "<!--" + "x" * 400 + "-->",
    '<row r="2" a="' + "x" * 400 + '"/>',
    "<?pi " + "x" * 400 + "?>",
]


@pytest.mark.parametrize("between", QUIET)
def test_xml_past_the_bound_without_an_element_outside_a_row_is_refused(
    monkeypatch: pytest.MonkeyPatch, between: str
) -> None:
    """A comment, a start tag or a processing instruction between rows was held whole and
    rescanned at every chunk (32 MiB of comment: 13 s and 159 MiB; the sheet may hold 2 GB)."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    monkeypatch.setattr(sheet_xml, "MAX_QUIET_BYTES", 200)  # above the worksheet's tag
    rows = '<row r="1"/>' + between + '<row r="3"/>'
    with pytest.raises(SyntaxError, match="without an element or text"):
        read(document(rows), 64)


@pytest.mark.parametrize("inside", QUIET)
def test_xml_past_the_bound_without_an_element_in_a_row_read_past_is_refused(
    monkeypatch: pytest.MonkeyPatch, inside: str
) -> None:
    """The parser reading past a long row holds such a token as it would between rows."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    monkeypatch.setattr(sheet_xml, "MAX_QUIET_BYTES", 200)
    rows = '<row r="1">' + LONG_CELL + inside.replace('<row r="2"', "<c") + '</row><row r="2"/>'
    with pytest.raises(SyntaxError, match="without an element or text"):
        read(document(rows), 64)


def test_text_outside_a_row_is_read_past_whatever_its_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Text is reported in pieces and not kept outside a row: no token is held."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    monkeypatch.setattr(sheet_xml, "MAX_QUIET_BYTES", 200)
    rows = '<row r="1"/>' + " " * 4000 + '<row r="2"/>'
    assert read(document(rows), 64) == [("1", True, 0), ("2", True, 0)]


@pytest.mark.parametrize(
    "hidden",
    [
        "<!-- </row> -->",
        "<![CDATA[ </row> ]]>",
        "<?pi </row> ?>",
        '<c r="C2" s="/row>"/>',  # `<` is no character of an attribute value
    ],
)
@pytest.mark.parametrize("pad", range(0, 16, 3))
def test_an_end_tag_in_a_comment_cdata_or_attribute_of_a_skipped_row_is_not_its_end(
    monkeypatch: pytest.MonkeyPatch, hidden: str, pad: int
) -> None:
    """The rest of a long row was searched for `</row>` as bytes: one in a comment, a
    CDATA section or a processing instruction was taken for the row's end, the XML
    after it broke and the import stopped in one line."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    cdata = "<![CDATA[" in hidden  # only text may hold it
    where = '<c r="D2" t="inlineStr"><is><t>{}</t></is></c>' if cdata else "{}"
    second = '<row r="2">{}' + "y" * pad + where.format(hidden) + "</row>"
    got = [(r, whole) for r, whole, _ in read(document(four_rows(second)), 64)]
    assert got == [("1", True), ("2", False), ("3", True), ("4", True)]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_sheet_reads_on_after_a_skipped_row(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """`</row>` was searched for in UTF-8 bytes: never found in UTF-16, so the rest of
    the sheet was taken for the row and the import stopped ("ends inside the row")."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)
    text = document(four_rows('<row r="2">{}</row>')).decode()
    xml = ("\ufeff" + text.replace('encoding="UTF-8"', 'encoding="UTF-16"')).encode(encoding)
    got = [(r, whole) for r, whole, _ in read(xml, 200)]  # two bytes a character
    assert got == [("1", True), ("2", False), ("3", True), ("4", True)]


LAUGHS = (  # 10 characters, each entity ten of the one before: 10 GB as `&j;`
    '<!DOCTYPE worksheet [<!ENTITY a "xxxxxxxxxx">'
    + "".join(
        f'<!ENTITY {b} "{f"&{a};" * 10}">' for a, b in zip("abcdefghi", "bcdefghij", strict=True)
    )
    + "]>"
)
EXTERNAL = '<!DOCTYPE worksheet [<!ENTITY e SYSTEM "file:///etc/hostname">]>'


@pytest.mark.parametrize(("declaration", "entity"), [(LAUGHS, "&j;"), (EXTERNAL, "&e;")])
def test_a_sheet_declaring_entities_is_refused_before_any_is_expanded(
    declaration: str, entity: str
) -> None:
    """Expat stopped the expansion at its amplification limit, after ~13 MB, with a
    message naming neither the sheet nor the cause; the external entity was read as
    nothing, an empty cell, unseen."""
    cell = f'<row r="1"><c r="A1" t="inlineStr"><is><t>{entity}</t></is></c></row>'
    xml = document(cell).replace(b"<worksheet", declaration.encode() + b"<worksheet", 1)
    with (
        peak_memory() as peak,
        pytest.raises(SyntaxError, match=r"declares a document type \(<!DOCTYPE worksheet>"),
    ):
        read(xml, 1 << 20)
    assert peak.bytes < 1_000_000, peak.bytes


class _Nested(io.RawIOBase):
    """A row past the bound, then `levels` elements each inside the one before, made
    as they are read: the test holds none of it."""

    def __init__(self, levels: int, where: str) -> None:
        start = '<row r="1"><c r="A1"><v>' + "1" * 200 + "</v></c>" if where == "in" else ""
        self.parts = iter(
            [document(start + "{}")[: -len("{}</sheetData></worksheet>")]]
            + [b"<a>" * 10_000] * (levels // 10_000)
            + [b"</a>" * 10_000] * (levels // 10_000)
            + [(b"</row>" if where == "in" else b"") + b'<row r="2"/></sheetData></worksheet>']
        )
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while len(self.buffer) < size:
            part = next(self.parts, None)
            if part is None:
                break
            self.buffer += part
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


@pytest.mark.parametrize("where", ["in", "out"])
def test_elements_nested_past_the_depth_bound_are_refused(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Expat holds every open element (~130 bytes each): a skipped row, read past with
    nothing built, or the XML outside rows, nested a million deep held 130 MB, and the
    sheet's 2 GB of `<a>` nested ~80 GB. No sheet nests deeper than a dozen."""
    monkeypatch.setattr(sheet_xml, "FEED", 16)  # the row is cut before its nesting
    rows = sheet_xml.row_elements(_Nested(1_000_000, where), ROW, 64)
    if where == "in":
        assert next(rows)[1] is False
    with pytest.raises(SyntaxError, match=r"elements nested more than 256 deep"):
        next(rows)


def test_elements_nested_to_the_depth_bound_are_read() -> None:
    cell = '<c r="A1" t="inlineStr"><is><t>1</t></is></c>'
    nest = "<a>" * 250 + "</a>" * 250  # worksheet, sheetData, row, c are 4 more
    rows = f'<row r="1">{cell}{nest}</row><row r="2"><c r="A2">{nest}</c></row>'
    assert read(document(rows), 1 << 20) == [("1", True, 2), ("2", True, 1)]


def test_the_rows_before_a_nesting_too_deep_are_read_before_it_is_refused() -> None:
    """As for any broken XML: the import says after which row the sheet broke."""
    rows = sheet_xml.row_elements(io.BytesIO(document('<row r="1"/>' + "<a>" * 300)), ROW, 64)
    assert next(rows)[0].get("r") == "1"
    with pytest.raises(SyntaxError, match="nested more than 256 deep"):
        next(rows)


# CPU-bound and outside the measured packages (chainwatch/importer): 16 s under the tracer, 5.6 s
# without; it covers no line of streams/, sinks/ or schemas/
@pytest.mark.no_cover
def test_names_are_not_kept_past_a_bound() -> None:
    """Each distinct name was kept twice (pyexpat's interned string, ours as ElementTree
    spells it), ~250 bytes over expat's own ~130: 100,000 rows of a name of their own
    and an attribute of their own took 75 MB, expat ~26 of it; 2 GB of them, ~100 GB."""
    names = "".join(f'<n{i}/><row r="{i + 1}"><c r="A1" a{i}="1"/></row>' for i in range(100_000))
    with peak_memory() as peak:
        assert len(read(document(names), 1 << 20)) == 100_000
    assert peak.bytes < 40_000_000, peak.bytes
