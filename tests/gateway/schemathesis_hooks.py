"""Schemathesis hooks for tests/gateway/test_gateway_schemathesis.py (run by the CLI's own
environment, so only schemathesis is imported).

The partial operations (`POST /v1/partial/...`) take any body with at least one item:
an item that is not JSON is dead-lettered like any other unusable item, and with
`application/json` the body itself may then not be JSON (`[{...}, {not json]`, or a
lone `{not json`). JSON Schema describes JSON values only, so schemathesis's syntax
fuzzing (random bytes that are not JSON, sent as a JSON body) is schema-violating to it
and a documented 202 to the gateway. The built-in `negative_data_rejection` is off for
those operations (schemathesis.toml beside the test) and this check stands in for it:
every other schema-violating request (no items: `[]`, an EPCIS document with an empty
`eventList`) must still be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.mutations import OperatorKind

PARTIAL_PREFIX = "/v1/partial/"


@schemathesis.check
def partial_mode_refuses_requests_without_items(ctx: Any, response: Any, case: Any) -> None:
    if not case.operation.path.startswith(PARTIAL_PREFIX) or case.meta is None:
        return
    if not case.meta.generation.mode.is_negative or not 200 <= response.status_code < 300:
        return
    mutations = getattr(case.meta.phase.data, "mutations", ()) or ()
    if mutations and all(m.operator == OperatorKind.SYNTAX_FUZZING for m in mutations):
        return  # a body that is not JSON: its item is dead-lettered (202), as documented
    raise AssertionError(
        f"schema-violating request accepted with {response.status_code} by "
        f"{case.operation.label} (only a body that is not JSON may be dead-lettered)"
    )
