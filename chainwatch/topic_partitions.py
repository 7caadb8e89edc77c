"""Whether the topics the engine routes by id have the partitions it routes with.

The engine keeps each id's state on partition `murmur2(id) % CHAINWATCH_KAFKA__PARTITIONS`
(its table's changelog record goes to that partition too), sends its internal join
messages there, and dead-letters an input record read from another partition
(`key_mismatch`, error type `wrong_partition`; the sink's mappers do the same).
`ensure_topics` keeps an existing topic as it is, so an input topic made by hand (or
by an earlier deployment) with another count made most of its records dead letters,
or mis-routed the joins, without a word at start; a changelog topic with fewer
partitions crashed the worker on its first table write (faust's "Unrecognized
partition", over and over under a supervisor). The worker and the sink therefore
check, before they create a missing topic, and refuse to start (`PartitionsMismatch`,
one line); `chainwatch doctor` reports the same. Reading only: a Metadata request that
never creates a topic. (Checked after the creation, a refused start had made every
other topic with the count it refused, and the next start's advice flipped to that
count.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kafka.errors import (
    BrokerResponseError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from chainwatch.errors import UserError
from chainwatch.kafka_admin import (
    UNREACHABLE_HINT,
    KafkaRefused,
    KafkaUnreachable,
    admin_call_timeout_s,
    admin_client,
    close_admin,
    kafka_call,
    not_now,
)
from chainwatch.settings import Settings
from schemas.kafka_security import Kafka
from streams.topics import INPUT_TOPICS

PARTITIONS_SETTING = "CHAINWATCH_KAFKA__PARTITIONS"
ROUTED_BY_ID = "the inputs, the <app_id>-*-inbox and the <app_id>-*-changelog topics"
"""Every kind of topic routed by id, as the advice names them: recreating some of them
only (the ones a line named) left a changelog with the old count, and the worker crashed
on its first table write (faust: "Unrecognized partition")."""


class PartitionsMismatch(UserError):
    """A topic routed by id has another partition count than `kafka.partitions`."""


def input_topics(settings: Settings) -> list[str]:
    """The contract's input topics under this deployment's names (what the sink checks)."""
    return [settings.kafka.topic(name) for name in INPUT_TOPICS]


def routed_topics(settings: Settings) -> list[str]:
    """The topics whose records go to their id's partition that the settings name: the
    inputs, and the engine's internal join topics (`<app_id>-...-inbox`). The tables'
    changelog topics are routed so too (a table's record goes to its key's partition);
    their names are faust's, so the worker takes them from its app (`runners.
    changelog_topics`) and doctor from the engine's table names (`engine_changelogs`)."""
    from streams.engine.messages import INTERNAL_TOPICS

    internal = [f"{settings.engine.app_id}-{name}" for name in INTERNAL_TOPICS]
    return [*input_topics(settings), *internal]


def engine_changelogs(settings: Settings) -> list[str]:
    """The engine's changelog topics under this deployment's app id, by name: doctor has
    no faust app to ask (`runners.changelog_topics` asks the worker's), and building one
    to read names is not worth it."""
    from streams.engine.tables import TABLES, changelog_topic

    return sorted(changelog_topic(settings.engine.app_id, table) for table in TABLES)


def partition_counts(
    bootstrap: Kafka, topics: Iterable[str], *, request_timeout_s: float
) -> dict[str, int]:
    """Each of `topics` that exists -> its partition count; a missing one is left out.

    One Metadata request within the admin calls' deadline (`kafka_call`); kafka-python
    asks it with `allow_auto_topic_creation` off, so it never creates a topic. Only
    `UNKNOWN_TOPIC_OR_PARTITION` means missing: a topic Kafka answers with another error
    (`TOPIC_AUTHORIZATION_FAILED`) was taken as missing too, so its count went unchecked
    and doctor said no topic existed yet. Such an answer is `topic_errors`' error.
    """
    wanted = list(topics)
    admin = admin_client(bootstrap, request_timeout_s=request_timeout_s)
    try:
        described = kafka_call(
            lambda: admin.describe_topics(wanted),
            bootstrap=bootstrap,
            what=f"describe {len(wanted)} topics",
            timeout_s=admin_call_timeout_s(request_timeout_s),
        )
    finally:
        close_admin(admin)
    failed = {
        str(topic["name"]): for_code(code)
        for topic in described
        if (code := topic.get("error_code", 0)) not in (0, UnknownTopicOrPartitionError.errno)
    }
    if failed:
        raise topic_errors(bootstrap, failed)
    return {
        str(topic["name"]): len(topic["partitions"])
        for topic in described
        if topic.get("error_code", 0) == 0
    }


def topic_errors(bootstrap: Kafka, failed: Mapping[str, type[BrokerResponseError]]) -> UserError:
    """One line naming each topic Kafka would not describe and its error: `KafkaUnreachable`
    (waited out by a starting process) when every error is a "not now", else `KafkaRefused`."""
    named = ", ".join(f"topic {name} ({error.__name__})" for name, error in sorted(failed.items()))
    if all(not_now(error) for error in failed.values()):
        return KafkaUnreachable(
            f"Kafka at {bootstrap} did not describe {named}, not now; {UNREACHABLE_HINT}"
        )
    acl = (
        "; grant this client Describe on them"
        if TopicAuthorizationFailedError in failed.values()
        else ""
    )
    return KafkaRefused(
        f"Kafka at {bootstrap} refused to describe {named}, so their partition counts "
        f"cannot be checked{acl}"
    )


def mismatch(counts: Mapping[str, int], expected: int) -> str | None:
    """One line naming every topic of `counts` without `expected` partitions, or None."""
    wrong = {name: count for name, count in sorted(counts.items()) if count != expected}
    if not wrong:
        return None
    topics = ", ".join(
        f"topic {name} has {count} partition{'' if count == 1 else 's'}"
        for name, count in wrong.items()
    )
    return (
        f"{topics} but {PARTITIONS_SETTING}={expected}: each id is routed to "
        f"murmur2(id) % {expected}, so most of their records would be dead letters "
        f"(wrong_partition), their joins or table writes mis-routed; {_fix(counts)}, or "
        f"recreate the topics with {expected} partitions (every topic routed by id has to "
        f"have it: {ROUTED_BY_ID})"
    )


def _fix(counts: Mapping[str, int]) -> str:
    """A count to set only when every existing topic has it: one that fits the wrong topics
    alone ("set 8" while the others had 4) would be refused again, with the other count."""
    found = set(counts.values())
    if len(found) == 1:
        return f"set {PARTITIONS_SETTING}={found.pop()}"
    listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return f"the topics disagree ({listed}): give them one count and set {PARTITIONS_SETTING} to it"


def check_partitions(
    bootstrap: Kafka, topics: Iterable[str], expected: int, *, request_timeout_s: float
) -> None:
    """`PartitionsMismatch` if one of `topics` that exists has another count than `expected`."""
    counts = partition_counts(bootstrap, topics, request_timeout_s=request_timeout_s)
    problem = mismatch(counts, expected)
    if problem is not None:
        raise PartitionsMismatch(problem)
