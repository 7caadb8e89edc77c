"""A module's shared gateways leave the process's logging as they found it.

uvicorn's `Config` stops `uvicorn.access` propagating to the root logger; started by a
module-scoped fixture (before the per-test fixture of logging_state records the state it
puts back), it stayed so after the module, for every later module of the session.
"""

from __future__ import annotations

import logging

import pytest
from gateway_harness import gateways

pytestmark = pytest.mark.integration


def _own(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if type(h).__name__ != "LogCaptureHandler"]


def test_the_gateway_fixtures_put_back_what_uvicorn_changed(kafka_bootstrap: str) -> None:
    access = logging.getLogger("uvicorn.access")
    access.propagate = True  # as a fresh process has it (the per-test fixture puts it back)
    before = (access.propagate, _own(access), access.level, access.disabled)
    with gateways(kafka_bootstrap) as make:
        make()
        assert not access.propagate  # what uvicorn did: the state to put back
    assert (access.propagate, _own(access), access.level, access.disabled) == before
