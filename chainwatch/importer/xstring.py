"""A sheet's text as Excel means it: the `_xHHHH_` escapes of OOXML strings decoded.

XML 1.0 cannot hold most control characters, so Excel writes each character of a
cell's text that XML cannot carry as `_xHHHH_`, its UTF-16 code unit in hex
(ECMA-376 ST_Xstring): a vertical tab is `_x000B_`. Text that itself looks like an
escape has its underscore escaped (`_x005F_x000B_` is the literal `_x000B_`).
openpyxl decodes neither (of the shared strings it only deletes `x005F_`, which
makes `_x005F_x000B_` the same `_x000B_` a vertical tab is written as), so a
control character Excel wrote reached the mapper as the text `_x000B_` and was
imported as that, where the same value in CSV or NDJSON is refused by the
contract validation. Decoded, it meets the same validation.
"""

from __future__ import annotations

import re
from typing import Final

#: One escape: exactly four hex digits between `_x` and `_` (either case, as Excel reads).
_ESCAPE: Final = re.compile(r"_x([0-9A-Fa-f]{4})_")
_SURROGATES: Final = re.compile(r"[\ud800-\udfff]")


class LoneSurrogate(ValueError):
    """An escape of half a UTF-16 pair without its other half: no Unicode text."""


def decode_xstring(text: str) -> str:
    """`text` with its escapes decoded left to right (so `_x005F_` ends an escape).

    A character past U+FFFF written as two escapes (a UTF-16 pair, `_xD83D__xDE00_`)
    is that character; half a pair alone is `LoneSurrogate`: it would be no text a
    record or a dead letter (UTF-8) can hold.
    """
    if "_x" not in text:  # almost every cell
        return text
    decoded = _ESCAPE.sub(lambda found: chr(int(found[1], 16)), text)
    if _SURROGATES.search(decoded) is None:
        return decoded
    try:
        return decoded.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError as exc:
        unit = int.from_bytes(exc.object[exc.start : exc.start + 2], "little")
        raise LoneSurrogate(
            f"_x{unit:04X}_, half of a UTF-16 pair without its other half, "
            "which is not Unicode text"
        ) from None
