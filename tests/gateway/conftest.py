"""The gateway tests' fixtures; their helpers are in gateway_harness (see why there)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gateway_harness import (
    EPCIS_EXAMPLE,
    GatewayProcess,
    Harness,
    ServerThread,
    gateway_settings,
    running_gateway_process,
    start_gateway,
)

from chainwatch.runners import prepare_topics
from schemas.epcis import load_epcis_mapping


@pytest.fixture(scope="module")
def gateway_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Harness]]:
    """Gateways on fresh topic prefixes; all stopped at the end of the module."""
    running: list[tuple[ServerThread, httpx.Client]] = []

    def make(**gateway: Any) -> Harness:
        settings = gateway_settings(kafka_bootstrap, **gateway)
        prepare_topics(settings)
        server, url = start_gateway(settings, load_epcis_mapping(EPCIS_EXAMPLE / "mapping.yaml"))
        client = httpx.Client(base_url=url, timeout=30)
        running.append((server, client))
        return Harness(url, settings, client)

    yield make
    for server, client in running:
        client.close()
        server.stop()


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
