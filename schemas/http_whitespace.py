"""HTTP's whitespace: space and horizontal tab, nothing else.

HTTP's optional whitespace (OWS, RFC 9110 5.6.3) around a field value, a list
element or a media type's parameters is SP and HTAB only. `str.strip()` also
strips a form feed, a vertical tab, U+001C-U+001F, U+0085, U+00A0 and the other
Unicode spaces (a header's bytes arrive latin-1 decoded, so a 0xA0 byte is
U+00A0): `Authorization: Bearer \\xa0TOKEN` authenticated as TOKEN and
`Content-Type: application/json\\xa0` was read as JSON. Whatever else is around a
value is part of it, so such a token is no known token (401) and such a type no
known type (415).
"""

from __future__ import annotations

from typing import Final

HTTP_WHITESPACE: Final = " \t"
