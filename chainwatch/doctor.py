"""`chainwatch doctor`: each check says what is wrong and how to fix it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from chainwatch.errors import USER_ERRORS, UserError
from chainwatch.settings import Settings
from sinks.daemon_executor import on_daemon_thread

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

TOOL_TIMEOUT_S = 30.0
"""How long a tool's version banner (`mvn -v`) may take: a JVM tool answers in seconds."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # ok, but worth acting on (printed WARN, exit code unaffected)


def _tool(name: str, args: list[str], fix: str) -> Check:
    path = shutil.which(name)
    if path is None:
        return Check(name, False, f"not found on PATH; {fix}")
    shown = " ".join([name, *args])
    try:
        result = subprocess.run(
            [path, *args], capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return Check(name, False, f"`{shown}` did not answer within {TOOL_TIMEOUT_S:g} s; {fix}")
    except OSError as exc:
        return Check(name, False, f"`{shown}` could not run ({exc.strerror or exc}); {fix}")
    text = _ANSI.sub("", result.stdout + result.stderr)  # Maven colours its banner
    first = text.strip().splitlines()
    return Check(name, result.returncode == 0, first[0] if first else path)


def _java() -> Check:
    """`java` on PATH and at least the version the local broker needs, from one banner
    (read whole: a JVM prints "Picked up JAVA_TOOL_OPTIONS: ..." before its version)."""
    from chainwatch.local_kafka import JAVA_HINT, JAVA_NEEDED, java_major, java_version_text

    path = shutil.which("java")
    if path is None:
        return Check("java", False, f"not found on PATH; {JAVA_HINT}")
    try:
        text = java_version_text(path)
    except UserError as exc:
        return Check("java", False, str(exc))
    major = java_major(text)
    if major is not None and major < JAVA_NEEDED:
        return Check(
            "java", False, f"Java {major} found, Kafka needs Java {JAVA_NEEDED}+; {JAVA_HINT}"
        )
    lines = text.strip().splitlines()
    shown = next((line for line in lines if 'version "' in line), lines[0] if lines else path)
    return Check("java", True, shown)


def _kafka(settings: Settings) -> Check:
    from chainwatch.kafka_admin import AUTHENTICATION_FAILED, AUTHENTICATION_HINT, TLS_HINT
    from chainwatch.kafka_watch import TLS_HANDSHAKE_FAILED
    from chainwatch.local_kafka import kafka_problem
    from chainwatch.logs import silenced

    bootstrap = settings.kafka.bootstrap
    with silenced("kafka", "aiokafka"):  # a refused probe is this check's FAIL line
        problem = kafka_problem(settings.kafka.endpoint, timeout_s=settings.kafka.probe_timeout_s)
    if problem is None:
        return Check("kafka", True, f"answering on {bootstrap}")
    if problem.startswith(AUTHENTICATION_FAILED):
        return Check("kafka", False, f"{problem} on {bootstrap}; {AUTHENTICATION_HINT}")
    if problem.startswith(TLS_HANDSHAKE_FAILED):
        return Check("kafka", False, f"{problem} on {bootstrap}; {TLS_HINT}")
    fix = (
        "run `chainwatch kafka start`"
        if settings.kafka.is_local
        else "check CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS, CHAINWATCH_KAFKA__SECURITY_PROTOCOL "
        "and that the brokers are up"
    )
    return Check("kafka", False, f"no answer from {bootstrap}; {fix}")


KAFKA_INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
LISTED = 5


def project_topic(name: str, settings: Settings) -> bool:
    """A topic of this deployment: contract and notifier topics, the engine's internal
    and changelog topics (`<app_id>-...`), and Kafka's own offsets/transactions logs."""
    from sinks.webhooks.records import NOTIFY_TOPICS
    from streams.topics import INPUT_TOPICS, OUTPUT_TOPICS

    kafka = settings.kafka
    contract = {kafka.topic(t) for t in (*INPUT_TOPICS, *OUTPUT_TOPICS, *NOTIFY_TOPICS)}
    return (
        name in contract
        or name in KAFKA_INTERNAL_TOPICS
        or name.startswith(f"{settings.engine.app_id}-")
    )


def replication_check(
    brokers: int, replication: Mapping[str, int], *, configured: int, min_insync: int
) -> Check:
    """The verdict on topic replication, from broker metadata.

    `replication`: each project topic's lowest replica count over its partitions.
    One broker: replication 1 is all there is. Several: a topic with one replica
    loses its data (or the engine its state) with that broker, so it is a warning.
    """
    if configured > brokers:
        return Check(
            "replication",
            False,
            f"CHAINWATCH_KAFKA__REPLICATION_FACTOR={configured} but the cluster has {brokers} "
            f"broker{'s' if brokers != 1 else ''}: topic creation fails; lower it or add brokers",
        )
    if brokers == 1:
        return Check(
            "replication", True, "1 broker: replication 1 (one box; docs/scaling.md for more)"
        )
    single = sorted(name for name, copies in replication.items() if copies < 2)
    hints = []
    if configured < 2:
        hints.append("set CHAINWATCH_KAFKA__REPLICATION_FACTOR=3 (and __MIN_INSYNC_REPLICAS=2)")
    elif min_insync < 2:
        hints.append("set CHAINWATCH_KAFKA__MIN_INSYNC_REPLICAS=2")
    if single:
        shown = ", ".join(single[:LISTED]) + (
            f" (+{len(single) - LISTED} more)" if len(single) > LISTED else ""
        )
        return Check(
            "replication",
            True,
            f"{brokers} brokers but {len(single)} topic{'s' if len(single) != 1 else ''} with "
            f"replication 1: {shown}; losing that broker loses them. Raise their replication "
            "(kafka-reassign-partitions) "
            + ("and " + hints[0] if hints else "")
            + " (docs/scaling.md)",
            warning=True,
        )
    if hints:
        return Check("replication", True, f"{brokers} brokers; {hints[0]}", warning=True)
    return Check(
        "replication",
        True,
        f"{brokers} brokers, {len(replication)} project topics with replication >= 2",
    )


def _replication(settings: Settings) -> Check:
    from chainwatch.kafka_admin import (
        bounded,
        close_admin,
        settings_admin_client,
        settings_call_timeout_s,
    )

    kafka = settings.kafka
    call_s = settings_call_timeout_s(kafka)
    try:
        admin = settings_admin_client(kafka)
    except USER_ERRORS as exc:
        return Check("replication", False, str(exc))
    try:
        cluster = bounded(admin.describe_cluster, timeout_s=call_s, what="describe_cluster")
        topics = bounded(admin.describe_topics, timeout_s=call_s, what="describe_topics")
    except Exception as exc:  # any failure is this check's FAIL line
        return Check("replication", False, f"cannot read the cluster metadata: {exc}")
    finally:
        close_admin(admin)
    replication = {
        t["name"]: min((len(p["replica_nodes"]) for p in t["partitions"]), default=0)
        for t in topics
        if project_topic(t["name"], settings)
    }
    return replication_check(
        len(cluster["brokers"]),
        replication,
        configured=settings.kafka.replication_factor,
        min_insync=settings.kafka.min_insync_replicas,
    )


def timestamp_check(types: Mapping[str, str | None], bootstrap: str) -> Check:
    """The verdict on whose clock stamps scans and orders (`APPEND_TIME_TOPICS`).

    `types`: each such topic that exists, by full name -> its `message.timestamp.type`
    (None: Kafka did not say, e.g. DescribeConfigs refused by an ACL). A missing topic
    is absent: the first start creates it with the broker's time. A topic made
    before Chainwatch set that (or by hand) keeps its producers' `CreateTime`: a live
    worker's held clock after a restart then follows the producers' clocks, and one
    running ahead makes deadlines fall due early.
    """
    from chainwatch.kafka_admin import LOG_APPEND_TIME, TIMESTAMP_TYPE

    unknown = sorted(name for name, kind in types.items() if kind is None)
    if unknown:
        return Check(
            "timestamps",
            True,
            f"cannot read {TIMESTAMP_TYPE} of {', '.join(unknown)} (DescribeConfigs "
            "refused?): it should be LogAppendTime (docs/rules.md, The clock)",
            warning=True,
        )
    producers = sorted(name for name, kind in types.items() if kind != LOG_APPEND_TIME)
    if not producers:
        return Check(
            "timestamps",
            True,
            f"{', '.join(sorted(types))}: the broker's time (LogAppendTime)"
            if types
            else "scans and orders get the broker's time (LogAppendTime) when first made",
        )
    fixes = "; ".join(
        f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
        f"--entity-name {name} --add-config {TIMESTAMP_TYPE}={LOG_APPEND_TIME}"
        for name in producers
    )
    return Check(
        "timestamps",
        True,
        f"{', '.join(producers)} keep their producers' timestamps (CreateTime): after a "
        "restart a live worker holds its clock at them, so a producer whose clock runs "
        f"ahead makes deadlines fall due early (docs/rules.md, The clock). Set: {fixes}",
        warning=True,
    )


def timestamps(settings: Settings) -> Check:
    """The `timestamps` line: how scans and orders of this deployment are stamped."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from chainwatch.kafka_admin import (
        TIMESTAMP_TYPE,
        bounded,
        close_admin,
        settings_admin_client,
        settings_call_timeout_s,
    )
    from streams.topics import APPEND_TIME_TOPICS

    kafka = settings.kafka
    names = sorted(kafka.topic(name) for name in APPEND_TIME_TOPICS)
    call_s = settings_call_timeout_s(kafka)
    try:
        admin = settings_admin_client(kafka)
    except USER_ERRORS as exc:
        return Check("timestamps", False, str(exc))
    try:
        existing = set(bounded(admin.list_topics, timeout_s=call_s, what="list_topics"))
        present = [name for name in names if name in existing]
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in present]
        described = (
            bounded(
                lambda: admin.describe_configs(resources, config_filter="all"),
                timeout_s=call_s,
                what="describe_configs",
            )
            if resources
            else {}
        )
    except Exception as exc:  # any failure is this check's FAIL line
        return Check("timestamps", False, f"cannot read the topics' configs: {exc}")
    finally:
        close_admin(admin)
    topics = described.get("topic", {}) if isinstance(described, dict) else {}
    types: dict[str, str | None] = {}
    for name in present:
        value = topics.get(name, {}).get(TIMESTAMP_TYPE, {}).get("value")
        types[name] = value if isinstance(value, str) else None
    return timestamp_check(types, kafka.bootstrap)


def partitions(settings: Settings) -> Check:
    """The `partitions` line: every topic routed by id that exists (the engine's changelog
    topics included) has `kafka.partitions` (chainwatch.topic_partitions; a
    worker or sink would refuse to start otherwise).
    Reads metadata only: a missing topic is not created, the first start makes it."""
    from chainwatch.topic_partitions import (
        PARTITIONS_SETTING,
        engine_changelogs,
        mismatch,
        partition_counts,
        routed_topics,
    )

    kafka = settings.kafka
    try:
        routed = [*routed_topics(settings), *engine_changelogs(settings)]
        counts = partition_counts(kafka.endpoint, routed, request_timeout_s=kafka.request_timeout_s)
    except Exception as exc:  # any failure is this check's FAIL line
        return Check("partitions", False, f"cannot read the topics' partitions: {exc}")
    problem = mismatch(counts, kafka.partitions)
    if problem is not None:
        return Check("partitions", False, problem)
    if not counts:
        return Check(
            "partitions",
            True,
            f"none of the topics routed by id exist yet: the first start makes them with "
            f"{kafka.partitions} partitions ({PARTITIONS_SETTING})",
        )
    return Check(
        "partitions",
        True,
        f"{len(counts)} topics routed by id, {kafka.partitions} partitions each "
        f"({PARTITIONS_SETTING})",
    )


def _clickhouse(settings: Settings) -> Check:
    from chainwatch.cli_context import plain_store_error
    from sinks.clickhouse.connection import embedded_engine_version, embedded_store_exists
    from sinks.clickhouse.readers import open_reader

    where = settings.clickhouse.redacted_url() or f"embedded chDB at {settings.clickhouse_dir}"
    try:
        if settings.clickhouse.is_embedded and not embedded_store_exists(settings):
            version = embedded_engine_version()
            where += " (no store yet: the sink or `chainwatch db migrate` makes it)"
        else:
            reader = open_reader(settings)
            try:
                version = reader.query("SELECT version()").rows[0][0]
            finally:
                reader.close()
    except USER_ERRORS as exc:
        return Check("clickhouse", False, plain_store_error(str(exc)))
    except Exception as exc:  # a check reports, it never crashes the others' report
        first = (str(exc).strip().splitlines() or [""])[0]
        return Check("clickhouse", False, f"{type(exc).__name__}: {first}")
    return Check("clickhouse", True, f"{where}, ClickHouse {version}")


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order printed. The Kafka probe runs in a thread beside the
    others: with no broker it waits out its 3 s deadline, which the tools' banners and
    the store's check (~1-2 s together) then no longer add to. A daemon thread: Ctrl-C
    ends the doctor at once, where a pool's thread was waited for (the whole probe
    deadline, `CHAINWATCH_KAFKA__PROBE_TIMEOUT_S`) before the process could exit."""
    probing = on_daemon_thread(_kafka, settings, thread_name="doctor-kafka")
    checks = []
    if settings.kafka.is_local:
        checks.append(_java())
        checks.append(_tool("mvn", ["-v", "-B"], "install Maven (apt install maven)"))
    # the store's check too: chDB's query may hold a SIGINT from the thread that runs
    # it (its own Ctrl-C listener), and a doctor signalled then waited out the Kafka
    # probe's whole deadline; the main thread only waits, where Python sees a Ctrl-C
    clickhouse = on_daemon_thread(_clickhouse, settings, thread_name="doctor-store").result()
    kafka = probing.result()
    checks.append(kafka)
    if kafka.ok:
        checks.append(_replication(settings))
        checks.append(timestamps(settings))
        checks.append(partitions(settings))
    checks.append(clickhouse)
    return checks
