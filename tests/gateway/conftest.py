"""The gateway tests' fixtures; their helpers are in gateway_harness (see why there)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from gateway_harness import GatewayProcess, Harness, gateways, running_gateway_process


@pytest.fixture(scope="module")
def gateway_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Harness]]:
    """Gateways on fresh topic prefixes; all stopped at the end of the module, and the
    logging uvicorn changed put back (`gateways`)."""
    with gateways(kafka_bootstrap) as make:
        yield make


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Harness]) -> Harness:
    """One gateway shared by a module (tests use unique ids, never shared state)."""
    return gateway_factory(max_items=50, max_body_bytes=64 * 1024, max_item_bytes=8192)


@pytest.fixture(scope="module")
def gateway_process(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with running_gateway_process(kafka_bootstrap, tmp_path_factory.mktemp("gw-process")) as gw:
        yield gw
