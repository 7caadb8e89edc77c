"""A topic routed by id with another partition count than `CHAINWATCH_KAFKA__PARTITIONS`
(chainwatch.topic_partitions): made by hand or by an earlier deployment, it was kept as
it was, and most of its records became dead letters (`wrong_partition`) without a word
at start. The worker and the sink now refuse to start, and `doctor` fails the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from kafka.errors import LeaderNotAvailableError, UnknownBrokerIdError, for_code

from chainwatch import topic_partitions
from chainwatch.doctor import partitions
from chainwatch.kafka_admin import (
    KafkaRefused,
    KafkaUnreachable,
    admin_client,
    create_missing_topics,
    kafka_call,
)
from chainwatch.runners import changelog_topics, prepare_worker_topics, worker_app
from chainwatch.settings import Settings, child_environment
from chainwatch.sink_runner import prepare_sink_topics
from chainwatch.topic_partitions import (
    PartitionsMismatch,
    check_partitions,
    engine_changelogs,
    mismatch,
    routed_topics,
    topic_errors,
)
from streams.engine.messages import INTERNAL_TOPICS
from streams.topics import ORDERS

WORKER_EXIT_S = 60.0


def test_topics_with_the_configured_count_are_no_mismatch() -> None:
    assert mismatch({"orders": 4, "scans": 4}, 4) is None
    assert mismatch({}, 4) is None


def test_a_mismatch_is_one_line_naming_the_topic_its_count_and_the_setting() -> None:
    line = mismatch({"orders": 8, "scans": 8}, 4)
    assert line is not None
    assert "\n" not in line
    assert line.startswith(
        "topic orders has 8 partitions, topic scans has 8 partitions but "
        "CHAINWATCH_KAFKA__PARTITIONS=4"
    )
    assert "set CHAINWATCH_KAFKA__PARTITIONS=8" in line  # every existing topic has 8


def test_a_count_only_the_wrong_topics_have_is_not_suggested() -> None:
    """Setting 8 for `orders` would have the worker refuse `scans`, with "set 4"."""
    line = mismatch({"orders": 8, "scans": 4}, 4)
    assert line is not None
    assert line.startswith("topic orders has 8 partitions but CHAINWATCH_KAFKA__PARTITIONS=4")
    assert "set CHAINWATCH_KAFKA__PARTITIONS=" not in line
    assert "the topics disagree (orders 8, scans 4)" in line


def test_topics_with_different_wrong_counts_are_all_named() -> None:
    line = mismatch({"orders": 8, "scans": 1}, 4)
    assert line is not None
    assert "topic orders has 8 partitions, topic scans has 1 partition but" in line
    assert "set CHAINWATCH_KAFKA__PARTITIONS=" not in line  # no one count fixes both
    assert "the topics disagree (orders 8, scans 1)" in line


def _existing(settings: Settings) -> set[str]:
    admin = admin_client(settings.kafka.bootstrap, request_timeout_s=15)
    try:
        listed = kafka_call(
            admin.list_topics, bootstrap=settings.kafka.bootstrap, what="list", timeout_s=20
        )
    finally:
        admin.close()
    return {name for name in listed if name.startswith(settings.kafka.topic(""))} | {
        name for name in listed if name.startswith(f"{settings.engine.app_id}-")
    }


@pytest.fixture
def two_partition_orders(settings_factory: Callable[..., Settings]) -> Settings:
    """Settings with 4 partitions whose `orders` topic was made by hand with 2."""
    settings = settings_factory()
    orders = settings.kafka.topic(ORDERS)
    create_missing_topics(
        settings.kafka.bootstrap, {orders: {}}, request_timeout_s=15, partitions=2
    )
    return settings


def test_doctor_fails_a_mismatch_and_creates_nothing(two_partition_orders: Settings) -> None:
    settings = two_partition_orders
    check = partitions(settings)
    assert not check.ok
    assert check.detail.startswith(
        f"topic {settings.kafka.topic(ORDERS)} has 2 partitions but CHAINWATCH_KAFKA__PARTITIONS=4"
    )
    assert _existing(settings) == {settings.kafka.topic(ORDERS)}  # a read path only


def test_doctor_passes_topics_not_made_yet_and_leaves_them_unmade(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    check = partitions(settings)
    assert check.ok
    assert check.detail == (
        "none of the topics routed by id exist yet: the first start makes them with 4 "
        "partitions (CHAINWATCH_KAFKA__PARTITIONS)"
    )
    assert _existing(settings) == set()


class _RefusingAdmin:
    """An admin client whose broker will not describe `refused` (an ACL without Describe):
    the local broker has no authorizer, so the answer is made here, in kafka-python's shape."""

    def __init__(self, refused: str, code: int) -> None:
        self.refused, self.code = refused, code

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [
            {"name": name, "error_code": self.code, "partitions": []}
            if name == self.refused
            else {"name": name, "error_code": 3, "partitions": []}  # UNKNOWN_TOPIC_OR_PARTITION
            for name in topics
        ]

    def list_topics(self) -> list[str]:
        return [self.refused]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("code", [29, 17])  # TOPIC_AUTHORIZATION_FAILED, INVALID_TOPIC_EXCEPTION
def test_a_topic_kafka_will_not_describe_is_reported_not_taken_for_missing(
    monkeypatch: pytest.MonkeyPatch, settings_factory: Callable[..., Settings], code: int
) -> None:
    """It was left out as missing: the check passed without reading its count, and doctor
    said no topic existed yet."""
    settings = settings_factory()
    orders = settings.kafka.topic(ORDERS)
    monkeypatch.setattr(
        topic_partitions, "admin_client", lambda _bootstrap, **_: _RefusingAdmin(orders, code)
    )
    with pytest.raises(KafkaRefused) as refused:
        check_partitions(settings.kafka.bootstrap, routed_topics(settings), 4, request_timeout_s=15)
    error = for_code(code).__name__
    assert f"refused to describe topic {orders} ({error})" in str(refused.value)
    check = partitions(settings)
    assert not check.ok
    assert "\n" not in check.detail
    assert check.detail.startswith(
        f"cannot read the topics' partitions: Kafka at {settings.kafka.bootstrap} refused to "
        f"describe topic {orders} ({error}), so their partition counts cannot be checked"
    )


def test_the_sink_refuses_input_topics_with_another_count_and_creates_none(
    two_partition_orders: Settings,
) -> None:
    settings = two_partition_orders
    with pytest.raises(PartitionsMismatch, match=r"has 2 partitions but .*PARTITIONS=4"):
        prepare_sink_topics(settings)
    assert _existing(settings) == {settings.kafka.topic(ORDERS)}


def test_a_refused_worker_creates_no_topic_so_its_advice_can_be_followed(
    two_partition_orders: Settings, settings_factory: Callable[..., Settings]
) -> None:
    """Checked after the creation, the refused start made every other topic with 4, and
    a start with the advised 2 was refused in turn, advising 4."""
    settings = two_partition_orders
    with pytest.raises(PartitionsMismatch, match="set CHAINWATCH_KAFKA__PARTITIONS=2,"):
        prepare_worker_topics(worker_app(settings)[0], settings, INTERNAL_TOPICS)
    assert _existing(settings) == {settings.kafka.topic(ORDERS)}
    advised = settings_factory(kafka={**settings.kafka.model_dump(), "partitions": 2})
    prepare_worker_topics(worker_app(advised)[0], advised, INTERNAL_TOPICS)  # no mismatch
    prepare_sink_topics(advised)


def test_a_worker_whose_topics_have_the_count_starts_and_doctor_agrees(
    settings_factory: Callable[..., Settings],
) -> None:
    """A replay or backtest passes its own count: its topics are made with it, so they match."""
    settings = settings_factory(kafka={**settings_factory().kafka.model_dump(), "partitions": 2})
    app, _engine = worker_app(settings)
    prepare_worker_topics(app, settings, INTERNAL_TOPICS)  # no PartitionsMismatch
    prepare_sink_topics(settings)
    check = partitions(settings)
    assert check.ok
    routed = len(routed_topics(settings)) + len(_changelogs(app, settings))
    assert check.detail.startswith(f"{routed} topics routed by id, 2 ")


def _changelogs(app: Any, settings: Settings) -> list[str]:
    """The worker's changelog topics, as it names them to create them."""
    return sorted(name for names in changelog_topics(app, settings).values() for name in names)


def test_doctor_names_the_changelogs_the_worker_names(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    app, _engine = worker_app(settings)
    worker = _changelogs(app, settings)
    assert len(worker) == len(app.tables) > 0
    assert engine_changelogs(settings) == worker


def test_another_apps_changelog_sharing_the_prefix_is_not_checked(
    settings_factory: Callable[..., Settings],
) -> None:
    """Found by prefix, an app id `cw` took `cw-b-orders-changelog` (app `cw-b`) for its
    own: doctor failed on a topic the worker never uses."""
    settings = settings_factory()
    other = f"{settings.engine.app_id}-b-orders-changelog"
    create_missing_topics(settings.kafka.bootstrap, {other: {}}, request_timeout_s=15, partitions=2)
    check = partitions(settings)
    assert check.ok, check.detail
    assert other not in check.detail


def test_a_changelog_topic_with_another_count_stops_the_worker_and_fails_doctor(
    settings_factory: Callable[..., Settings],
) -> None:
    """Recreating only the topics a line named left the changelogs with the old count:
    the check passed, and faust crashed on the first table write ("Unrecognized partition")."""
    settings = settings_factory()
    app, _engine = worker_app(settings)
    changelog = _changelogs(app, settings)[0]
    create_missing_topics(
        settings.kafka.bootstrap, {changelog: {}}, request_timeout_s=15, partitions=2
    )
    expected = mismatch({changelog: 2}, 4)
    assert expected is not None
    assert "<app_id>-*-changelog" in expected  # the advice names them
    with pytest.raises(PartitionsMismatch) as refused:
        prepare_worker_topics(app, settings, INTERNAL_TOPICS)
    assert str(refused.value) == expected
    check = partitions(settings)
    assert (check.ok, check.detail) == (False, expected)


def test_a_worker_exits_non_zero_with_one_line_when_an_input_topic_has_another_count(
    two_partition_orders: Settings,
) -> None:
    settings = two_partition_orders
    done = subprocess.run(
        [sys.executable, "-m", "chainwatch", "worker"],
        env={**child_environment(settings, os.environ), "CHAINWATCH_ENGINE__METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=WORKER_EXIT_S,
        check=False,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {mismatch({settings.kafka.topic(ORDERS): 2}, settings.kafka.partitions)}"
    ], done.stderr
    assert "Traceback" not in done.stderr


def test_a_topic_kafka_cannot_describe_now_is_waited_out_not_refused() -> None:
    """A "not now" (no leader yet) is `KafkaUnreachable`: a starting worker or sink waits."""
    error = topic_errors("b:9092", {"orders": LeaderNotAvailableError})
    assert isinstance(error, KafkaUnreachable)
    assert str(error).startswith(
        "Kafka at b:9092 did not describe topic orders (LeaderNotAvailableError), not now"
    )


def test_a_broker_id_kafka_no_longer_knows_is_waited_out_as_every_admin_call_does() -> None:
    """`kafka_call` waits out `UnknownBrokerIdError` (a controller that moved), which
    kafka-python does not call retriable; the partition check took it for a refusal."""
    error = topic_errors("b:9092", {"orders": UnknownBrokerIdError})
    assert isinstance(error, KafkaUnreachable)
