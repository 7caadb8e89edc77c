"""Every 503 of the gateway's app carries a jittered `Retry-After` (streams/ingest/app.py).

`kafka_unavailable` and `shutting_down` sent `retry_after_s` itself: after a Kafka
outage or a stop every client refused came back in the same second.
"""

from __future__ import annotations

import pytest

from streams.ingest.admission import retry_after_bounds
from streams.ingest.app import HttpError, kafka_unavailable, publish_failed, shutting_down

BASE = 5


def _retry_afters(answers: list[HttpError]) -> set[int]:
    for answer in answers:
        assert answer.status == 503
        assert f"retry in {answer.headers['Retry-After']} s" in answer.detail  # says the same
    return {int(answer.headers["Retry-After"]) for answer in answers}


def _spread_within_bounds(seen: set[int]) -> None:
    least, most = retry_after_bounds(BASE)
    assert seen <= set(range(least, most + 1))
    assert len(seen) > 1  # not one second for every client


@pytest.mark.parametrize("outcome_unknown", [False, True])
def test_kafka_unavailable_has_a_jittered_retry_after(outcome_unknown: bool) -> None:
    answers = [
        kafka_unavailable(BASE, "Kafka did not take the request", outcome_unknown=outcome_unknown)
        for _ in range(200)
    ]
    assert {a.error for a in answers} == {"kafka_unavailable"}
    _spread_within_bounds(_retry_afters(answers))


@pytest.mark.parametrize("started", [False, True])
def test_shutting_down_has_a_jittered_retry_after(started: bool) -> None:
    answers = [shutting_down(BASE, started=started) for _ in range(200)]
    assert {a.error for a in answers} == {"shutting_down"}
    _spread_within_bounds(_retry_afters(answers))


def test_publish_failed_has_a_jittered_retry_after() -> None:
    answers = [publish_failed(BASE) for _ in range(200)]
    assert {a.error for a in answers} == {"publish_failed"}
    assert all("whether it was committed is not known" in a.detail for a in answers)
    _spread_within_bounds(_retry_afters(answers))
