"""`Authorization` or `Content-Type` given twice is a 400 `bad_request`, whichever copy is
valid: the gateway read the first, a proxy in front may read the last (no broker: the
refusal comes before anything is published)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest
from gateway_harness import make_registry, token_of
from prometheus_client.parser import text_string_to_metric_families

from chainwatch.settings import Settings
from streams.ingest.app import create_gateway_app
from streams.ingest.publisher import GroupObserver
from streams.ingest.records import OutRecord, Placement
from streams.ingest.single_headers import repeated_header

ADMIN = f"Bearer {token_of('admin')}"
UNKNOWN = "Bearer not-a-token"
JSON = "application/json"
OPERATIONS = [("POST", "/v1/scans"), ("POST", "/v1/partial/scans"), ("DELETE", "/v1/customers/c1")]
REPEATS = {
    "unknown token first": [("Authorization", UNKNOWN), ("Authorization", ADMIN)],
    "valid token first": [("Authorization", ADMIN), ("Authorization", UNKNOWN)],
    "two content types": [
        ("Authorization", ADMIN),
        ("Content-Type", JSON),
        ("Content-Type", "application/x-ndjson"),
    ],
}


class Recorder:
    """A publisher that keeps what it is given: no Kafka is asked."""

    def __init__(self) -> None:
        self.published: list[OutRecord] = []

    def observe_groups(self, observer: GroupObserver) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ready(self) -> bool:
        return True

    async def publish(
        self, records: Sequence[OutRecord], within_s: float | None = None
    ) -> list[Placement]:
        self.published.extend(records)
        return [Placement(0, offset) for offset in range(len(records))]


def _ask(
    requests: list[tuple[str, str, list[tuple[str, str]]]], publisher: Recorder
) -> list[httpx.Response]:
    app = create_gateway_app(Settings(), make_registry(), producer=publisher)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            answers = []
            for method, path, headers in requests:
                # an invalid item: a request let through is answered 422, never published
                answer = await client.request(method, path, content=b"[{}]", headers=headers)
                await answer.aread()
                answers.append(answer)
            answers.append(await client.get("/metrics"))
            return answers

    return asyncio.run(run())


def test_a_repeated_authorization_or_content_type_is_a_400() -> None:
    requests = [
        (method, path, [*headers, ("X-Request-ID", f"repeat-{i}")])
        for i, (method, path, headers) in enumerate(
            (m, p, h) for m, p in OPERATIONS for h in REPEATS.values()
        )
    ]
    publisher = Recorder()
    *answers, metrics = _ask(requests, publisher)
    assert publisher.published == []
    for (method, path, headers), answer in zip(requests, answers, strict=True):
        assert answer.status_code == 400, (method, path, headers, answer.text)
        body = answer.json()
        assert body["error"] == "bad_request"
        assert body["request_id"] == dict(headers)["X-Request-ID"]
        name = headers[-2][0]  # the repeated one
        assert f"`{name}` header is given more than once" in body["detail"]
        assert ADMIN not in answer.text
        assert UNKNOWN not in answer.text
    counted = {
        sample.labels["endpoint"]: sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "chainwatch_gateway_errors_total" and sample.value
    }
    assert counted == {"scans": 6, "customers-delete": 3}


def test_each_header_once_is_answered_as_before() -> None:
    once = [("Authorization", ADMIN), ("Content-Type", JSON), ("Accept", JSON), ("Accept", "*/*")]
    publisher = Recorder()
    requests = [("POST", "/v1/scans", once), ("POST", "/v1/partial/scans", once[:1])]
    answers = _ask(requests, publisher)[:-1]
    assert [a.status_code for a in answers] == [422, 202], [a.text for a in answers]
    assert len(publisher.published) == 1  # the partial post's dead letter


@pytest.mark.parametrize(
    ("headers", "repeated"),
    [
        ([(b"authorization", b"a"), (b"content-type", b"b")], None),
        ([(b"accept", b"a"), (b"accept", b"b"), (b"x-a", b"1"), (b"x-a", b"2")], None),
        ([(b"content-type", b"a"), (b"accept", b"x"), (b"Content-Type", b"a")], "Content-Type"),
        ([(b"authorization", b"a"), (b"authorization", b"")], "Authorization"),
    ],
)
def test_repeated_header(headers: list[tuple[bytes, bytes]], repeated: str | None) -> None:
    assert repeated_header(headers) == repeated
