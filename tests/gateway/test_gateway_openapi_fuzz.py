"""schemathesis against the gateway's own OpenAPI document: no input makes it answer 5xx.

Runs against a gateway on a real port and the real broker (valid generated
records are really published, to this module's own topic prefix).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from gateway_harness import Harness, token_of
from hypothesis import HealthCheck, given, settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

schemathesis.openapi.media_type(
    "application/x-ndjson",
    st.lists(st.binary(max_size=200), max_size=5).map(lambda lines: b"\n".join(lines)),
)


@pytest.fixture(scope="module")
def fuzzed_gateway(gateway_factory: Callable[..., Harness]) -> Harness:
    return gateway_factory(max_items=20, max_body_bytes=32 * 1024)


def _content(kwargs: dict[str, Any]) -> bytes | None:
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    return data.encode() if isinstance(data, str) else data


def test_no_request_makes_the_gateway_fail(fuzzed_gateway: Harness) -> None:
    """Every operation, positive and negative examples (schemathesis' pytest plugin does not
    support this pytest yet, so the operations are driven with hypothesis directly)."""
    api = schemathesis.openapi.from_url(f"{fuzzed_gateway.base_url}/openapi.json")
    auth = {"Authorization": f"Bearer {token_of('admin')}"}
    operations = [result.ok() for result in api.get_all_operations()]
    client = fuzzed_gateway.client
    assert len(operations) >= 9

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            # schemathesis' own `requests` transport breaks on the urllib3 fork that
            # grafana-client's niquests installs here, so the request goes out through httpx.
            kwargs = case.as_transport_kwargs(base_url=fuzzed_gateway.base_url, headers=auth)
            response = client.request(
                kwargs["method"],
                kwargs["url"],
                params=kwargs.get("params"),
                headers=kwargs.get("headers"),
                content=_content(kwargs),
            )
            assert response.status_code < 500, case.as_curl_command(headers=auth)

        call()
