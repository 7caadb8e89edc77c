"""What an empty cell is: nothing, or blanks only (space, tab, CR, LF).

A cell left empty, or holding spaces a user typed, is empty: a row of such cells is a
blank row, skipped (sheets and CSV exports hold many), and such a cell in a column
the import reads is no value (the mapping's default, else the field is missing).
Other whitespace is no blank: a cell of only U+00A0 (a no-break space pasted from a
web page), a vertical tab or a form feed holds something nobody sees. `str.strip()`
took it for nothing, so a row of such cells was skipped without a trace; now its row
is no blank row, and such a cell the import reads is a bad value (`import_invisible`),
rejected with its reason like any other. One rule for CSV and XLSX rows and for the
mapper's cells.
"""

from __future__ import annotations

import unicodedata
from typing import Final

CELL_BLANKS: Final = " \t\r\n"
#: The most distinct characters an `invisible_cell` message names.
_NAMED: Final = 3


def blank_cell(value: object) -> bool:
    """Whether a cell (a CSV field, an XLSX value, an NDJSON value) is empty."""
    return value is None or (isinstance(value, str) and not value.strip(CELL_BLANKS))


def invisible_cell(value: object) -> str | None:
    """Why a cell of whitespace only, some of it no blank, is no value; None for any
    other cell (a blank one too)."""
    if not isinstance(value, str) or value.strip() or blank_cell(value):
        return None
    shown = sorted({c for c in value if c not in CELL_BLANKS})
    names = [f"U+{ord(c):04X} {unicodedata.name(c, '')}".rstrip() for c in shown[:_NAMED]]
    more = f" and {len(shown) - _NAMED} more" if len(shown) > _NAMED else ""
    return (
        f"the cell holds only invisible characters ({', '.join(names)}{more}), "
        "which are neither a value nor blank: empty the cell or write its value"
    )
