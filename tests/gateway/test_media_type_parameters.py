"""A Content-Type's parameters are parted at the semicolons outside quoted strings.

RFC 9110 5.6.6: a parameter's value is a token or a quoted string, and a quoted
string may hold a `;`. Split at every `;`, `application/json; profile="urn:a;b"`
made a parameter named `b"`, no HTTP token, so a valid JSON post was refused (415)
once such names were refused; a `charset` after or inside such a value must still be
read as before.
"""

from __future__ import annotations

import pytest

from streams.ingest.media_type import UnsupportedMediaType, media_type


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ('application/json; profile="urn:example; v2"', "json"),
        ('application/ld+json; profile="https://example.com/a; b"', "json"),
        ('application/x-ndjson; note="say \\"hi\\"; then go"; charset=utf-8', "ndjson"),
        ('application/json; note="a;charset=utf-16"', "json"),  # quoted: no parameter
    ],
)
def test_a_semicolon_in_a_quoted_value_parts_no_parameter(content_type: str, kind: str) -> None:
    assert media_type(content_type) == kind


@pytest.mark.parametrize(
    "content_type",
    [
        'application/json; profile="urn:a;b"; charset=utf-16',
        'application/json; profile="urn:a;b";\xa0charset=utf-8',
        'application/json; note="unclosed; charset=utf-16',  # no quoted string: read as before
    ],
)
def test_the_parameters_after_a_quoted_value_are_read_as_before(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        media_type(content_type)
