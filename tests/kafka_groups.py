"""What the broker holds of a consumer group, and a member of one, for tests of what
deletes one; and the removal of a killed process's members, for tests that restart it."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer
from kafka.admin import MemberToRemove

from chainwatch.kafka_admin import admin_client

JOIN_POLL_MS = 1000
"""A poll long enough for a whole join (JoinGroup and SyncGroup) on a busy machine."""


def group_on_broker(bootstrap: str, group: str) -> tuple[bool, dict[Any, Any]]:
    """Whether Kafka knows `group` (its description), and the offsets it has committed."""
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        described = admin.describe_groups([group])[group]
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return "GroupIdNotFound" not in str(described.get("error")), dict(offsets)


def joined_member(bootstrap: str, group: str, topic: str, timeout_s: float = 60) -> KafkaConsumer:
    """A kafka-python consumer in `group`, holding every partition of `topic`.

    kafka-python 3.0.12 can leave a consumer joined with no partitions for good: when
    its first join was answered before its metadata knew the topic (created just before,
    so the group's leader, the consumer itself, assigned nothing), the topic's arrival
    starts a second join; if that join is answered while no `poll` is waiting on it, the
    leader's assignment makes `need_rejoin()` false, so no later `poll` takes the answer
    and the assignment is never applied (its heartbeats stay off too). Seen as "no member
    in the run's group within 60 s" in a loaded run and reproduced by hand (2 joins in 30
    beside the suite). So the consumer knows the topic's partitions before it subscribes,
    and each poll lasts long enough for a whole join.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        while not (partitions := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"{topic} unknown to a consumer in {timeout_s} s"
            time.sleep(0.1)  # poll interval of the topic's metadata
        consumer.subscribe([topic])
        while len(consumer.assignment()) < len(partitions):
            assert time.monotonic() < deadline, f"no member in {group} within {timeout_s} s"
            consumer.poll(JOIN_POLL_MS)
    except BaseException:
        consumer.close()
        raise
    return consumer


def expel_members(bootstrap: str, group: str) -> list[str]:
    """Remove every member `group` has now (LeaveGroup on their behalf) and return their ids.

    For a test that kills a consumer by SIGKILL and restarts it: the coordinator would
    keep the killed member until its session ran out (aiokafka's 10 s, a replay worker's
    10 s) and hold the restarted one's join meanwhile; this does at once what the
    session's end does then. Nothing else changes: the killed process committed, flushed
    and released nothing, and the restarted one starts from what it left."""
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        described = admin.describe_groups([group])[group]
        ids = [m["member_id"] for m in described.get("members") or []]
        removed = admin.remove_group_members(group, [MemberToRemove(member_id=i) for i in ids])
    finally:
        admin.close()
    failed = {member: error for member, error in removed.items() if error.__name__ != "NoError"}
    assert not failed, failed
    return ids
