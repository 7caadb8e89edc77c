"""`split_url`: the one place a user's URL is split (webhooks, ClickHouse, Grafana); the
numeric-host check is the webhooks' only (`dotted_ipv4_only`)."""

from __future__ import annotations

import pytest

from schemas.urls import NUMERIC_HOST_REASON, UrlError, split_url


@pytest.mark.parametrize(
    "host",
    [
        "256.256.256.256", "1.2.3", "127.1", "0x7f.1", "2130706433", "017700000001", "123",
        "0x10", "1.1.1.0x1", "1.2.3.4.5", "a.1.2.3.4", "1.2.3.04", "1.2.3.4.",
        "\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11",
        "127\u30021", "127\uff611", "1\u30022\u30023\u30024\u30025",
    ],
)  # fmt: skip
def test_a_numeric_host_that_is_no_ipv4_address_is_refused_unquoted(host: str) -> None:
    """The resolver reads `127.1` as 127.0.0.1 and `1.2.3` as 1.2.0.3, past every check
    of the written host; `1.2.3.4.5` resolves to nothing and was retried for an hour.
    IDNA's other dots (`。`, `｡`: httpx sends `127。1` as `127.1`) separate labels too."""
    url = f"https://bot:SECRETPW@{host}:8443/T0/SECRETPATH"
    with pytest.raises(UrlError) as info:
        split_url(url, dotted_ipv4_only=True)
    assert str(info.value) == NUMERIC_HOST_REASON
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "db.2", "10.1"])
def test_a_numeric_host_is_split_unless_dotted_ipv4_only_is_asked(host: str) -> None:
    """A ClickHouse URL `http://127.1:8123` (or an /etc/hosts name `db.2`) connected before
    the webhooks' check was added, and stopped the sink at start once it applied to all."""
    parts, port = split_url(f"http://{host}:8123")
    assert (parts.hostname, port) == (host, 8123)


@pytest.mark.parametrize(
    "host",
    [
        "1.2.3.4", "203.0.113.9", "[::ffff:1.2.3.4]", "[2001:db8::1]", "1.2.3.4a", "1e3",
        "hooks.example.com", "example.com.", "0xab.example", "bücher.example",
    ],
)  # fmt: skip
def test_an_ipv4_address_a_name_or_an_ipv6_literal_is_split(host: str) -> None:
    parts, port = split_url(f"https://{host}:8443/x")
    assert (parts.scheme, port) == ("https", 8443)
