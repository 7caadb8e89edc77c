"""How a failed send or flush is worded (chainwatch/acked_sends.py), for the import and
the replay alike."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from chainwatch.acked_sends import kafka_failed


def test_the_deadline_alone_says_within() -> None:
    assert kafka_failed(TimeoutError(), 60) == "did not answer within 60 s"


@pytest.mark.parametrize(
    "error",
    [
        LeaderNotAvailableError,  # a batch expired while its partition had no leader
        NotLeaderForPartitionError,  # ... and its leader was not even known
        KafkaConnectionError,
        KafkaTimeoutError,
    ],
)
def test_a_broker_gone_is_not_answering_not_a_refusal(error: type[Exception]) -> None:
    """A broker stopped mid-replay was said to have "refused the scenario's records
    (LeaderNotAvailableError ...)"."""
    assert kafka_failed(error(), 60) == f"stopped answering ({error.__name__})"


@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError, InvalidTopicError, RecordTooLargeError]
)
def test_what_trying_again_cannot_change_is_a_refusal(error: type[Exception]) -> None:
    assert kafka_failed(error(), 60) == f"refused the records ({error.__name__})"
