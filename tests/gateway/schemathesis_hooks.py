"""Schemathesis hooks for tests/gateway/test_gateway_schemathesis.py (run by the CLI's own
environment, so only schemathesis is imported).

The partial operations (`POST /v1/partial/...`) take any body with at least one item:
an item that is not JSON is dead-lettered like any other unusable item, and with
`application/json` the body itself may then not be JSON (`[{...}, {not json]`, or a
lone `{not json`). JSON Schema describes JSON values only, so schemathesis's syntax
fuzzing (random bytes that are not JSON, sent as a JSON body) is schema-violating to it
and a documented 202 to the gateway. Nor does JSON Schema say all the contract says:
an EPCIS document with an empty `eventList` and an integer beyond 2^53 matches the
schema's "valid document with an empty eventList" (refused), but it is not a valid
document to the gateway, so it is one unusable item, dead-lettered (`unsafe_integer`).
The built-in `negative_data_rejection` is off for those operations (schemathesis.toml
beside the test) and this check stands in for it: a schema-violating request is
either refused (no items: `[]`, a valid EPCIS document with an empty `eventList`) or
answered 2xx with at least one item dead-lettered, never taken whole.

The all-or-nothing operations may refuse a schema-valid request with 422 (the contract's
rules beyond JSON Schema; schemathesis.toml lets that status through for them):
`schema_valid_requests_are_refused_only_for_their_items` checks that such a 422 is the
documented `invalid_items` with a reason for every refused item.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from ast_serialised import serialise_ast_parsing

serialise_ast_parsing()  # the CLI runs its engine in threads too (CPython 3.11.7 gh-106905)

PARTIAL_PREFIX = "/v1/partial/"
ALL_OR_NOTHING = {
    "/v1/scans",
    "/v1/unit-status",
    "/v1/orders",
    "/v1/customers",
    "/v1/epcis/capture",
}


@schemathesis.check
def partial_mode_refuses_requests_without_items(ctx: Any, response: Any, case: Any) -> None:
    if not case.operation.path.startswith(PARTIAL_PREFIX) or case.meta is None:
        return
    if not case.meta.generation.mode.is_negative or not 200 <= response.status_code < 300:
        return
    answer = response.json()
    if isinstance(answer, dict) and isinstance(answer.get("rejected"), int) and answer["rejected"]:
        return  # what made it schema-violating was dead-lettered (202), as documented
    raise AssertionError(
        f"schema-violating request accepted with {response.status_code} by "
        f"{case.operation.label} and nothing dead-lettered: {str(answer)[:300]}"
    )


@schemathesis.check
def schema_valid_requests_are_refused_only_for_their_items(
    ctx: Any, response: Any, case: Any
) -> None:
    if case.operation.path not in ALL_OR_NOTHING or case.meta is None:
        return
    if not case.meta.generation.mode.is_positive or response.status_code != 422:
        return
    body = response.json()
    items = body.get("items") if isinstance(body, dict) else None
    if (
        body.get("error") != "invalid_items"
        or not items
        or not all(item.get("reason_code") for item in items)
    ):
        raise AssertionError(
            f"schema-valid request refused by {case.operation.label} with a 422 that is not "
            f"`invalid_items` with a reason per item: {str(body)[:300]}"
        )
