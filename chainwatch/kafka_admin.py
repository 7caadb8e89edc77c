"""Topic administration with kafka-python (tooling, not the hot path)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from kafka import KafkaAdminClient
from kafka.errors import (
    BrokerResponseError,
    KafkaError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnknownBrokerIdError,
)

from chainwatch.errors import UserError
from chainwatch.kafka_start import TlsHandshakeFailed, started
from chainwatch.logs import get_logger, silenced
from schemas.kafka_security import Kafka
from sinks.backoff import Backoff
from sinks.clickhouse.kafka_source import KafkaIdentity
from streams.settings import KafkaSettings
from streams.topics import APPEND_TIME_TOPICS, COMPACTED_TOPICS, TopicNames

T = TypeVar("T")

CREATE_TIMEOUT_MS = 30_000
"""How long the broker may take to create topics (CreateTopics' own timeout)."""
TOPICS_READY_TIMEOUT_MS = 90_000
"""How long new topics may take to show in the broker's metadata (kafka-python's own
wait gives them 10 s, which a loaded machine exceeded: a start-up failed there)."""


TIMESTAMP_TYPE = "message.timestamp.type"
LOG_APPEND_TIME = "LogAppendTime"

log = get_logger(__name__)


class KafkaDeadlineExceeded(UserError):
    """A Kafka call did not come back within its deadline."""


class KafkaUnreachable(UserError):
    """No connection to the bootstrap servers could be made, or Kafka did not answer a
    request in time or answered "not now" (what a long-running process waits out)."""


class KafkaRefused(UserError):
    """Kafka answered and said no in a way that trying again cannot change (a
    replication factor above the broker count, a missing ACL, a refused config)."""


class KafkaAuthenticationFailed(KafkaRefused):
    """Kafka refused this client's credentials (SASL user, password or mechanism)."""


AUTHENTICATION_HINT = (
    "check CHAINWATCH_KAFKA__SASL_USERNAME, CHAINWATCH_KAFKA__SASL_PASSWORD and "
    "CHAINWATCH_KAFKA__SASL_MECHANISM"
)


AUTHENTICATION_FAILED = "authentication failed"

TLS_HINT = (
    "check CHAINWATCH_KAFKA__SSL_CAFILE (the CA of the brokers' certificates) and, where "
    "the brokers require a client certificate, CHAINWATCH_KAFKA__SSL_CERTFILE and "
    "CHAINWATCH_KAFKA__SSL_KEYFILE"
)


def login_refused(exc: BaseException) -> str:
    """ "authentication failed (<the broker's reason>)": kafka-python's text of a refused
    login ends with the broker's reason, and never holds the password."""
    return f"{AUTHENTICATION_FAILED} ({str(exc).rsplit(': ', 1)[-1][:200] or type(exc).__name__})"


def authentication_failed(bootstrap: Kafka | str, exc: BaseException) -> KafkaAuthenticationFailed:
    """One line for a refused login."""
    return KafkaAuthenticationFailed(
        f"Kafka at {bootstrap}: {login_refused(exc)}; {AUTHENTICATION_HINT}"
    )


REFUSED_HINT = (
    "check CHAINWATCH_KAFKA__REPLICATION_FACTOR (at most the number of brokers), "
    "CHAINWATCH_KAFKA__MIN_INSYNC_REPLICAS and this client's ACLs"
)


def refusal(exc: BrokerResponseError, what: str) -> KafkaRefused:
    """One line for a broker's refusal: kafka-python's text holds the whole request and
    response (9 KB for the contract's topics); the broker's own message is what says why."""
    said = re.search(r"error_message=(['\"])(.*?)\1", str(exc))  # repr quotes either way
    why = said.group(2) if said else str(exc)[:300]
    return KafkaRefused(f"Kafka refused {what} ({type(exc).__name__}): {why}; {REFUSED_HINT}")


def retry_until_reachable(
    call: Callable[[], T],
    *,
    process: str,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wait: bool = True,
) -> T:
    """`call()`, tried again while Kafka cannot be reached (1 s doubling to 30 s).

    For long-running processes (worker, sink, notifier): started by a
    supervisor or at boot before the broker is up, they wait for it as they
    ride out a broker outage once running, instead of exiting at once (the
    `kill9` + broker fault bench found a sink restarted during a broker outage
    exiting with status 1). One-shot commands keep failing fast, and so does a
    long-running process's one-shot form (`wait=False`: `sink --drain`, `notify
    --drain`, run by a batch job that must end).
    """
    backoff = backoff or Backoff(initial_s=1.0, max_s=30.0)
    while True:
        try:
            with silenced("kafka"):  # our line per attempt, not kafka-python's three
                return call()
        except KafkaUnreachable as exc:
            if not wait:
                raise
            delay = backoff.next()
            log.warning(
                "kafka.unreachable",
                process=process,
                attempt=backoff.attempts,
                retry_in_s=round(delay, 1),
                error=str(exc),
            )
            sleep(delay)


def bounded(
    call: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    late: Callable[[T], object] | None = None,
) -> T:
    """`call()`, or `KafkaDeadlineExceeded` once `timeout_s` has passed.

    kafka-python's own timeouts do not cover every path: a replay once hung
    forever in `KafkaConsumer.end_offsets` (no `timeout_ms`) inside the client's
    selector. The call runs in a daemon thread, so a stuck client can neither
    stall the caller nor keep the process alive at exit. What a call given up on
    returns in the end goes to `late` (a client it started: closed there, where
    nothing else holds it, instead of left running with its sockets and thread).
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    given_up: list[bool] = []
    decided = threading.Lock()

    def run() -> None:
        try:
            value = call()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
            return
        with decided:
            if not given_up:
                outcome.append(value)
                return
        if late is not None:
            with contextlib.suppress(Exception):  # nobody is left to tell
                late(value)

    worker = threading.Thread(target=run, name=f"kafka-call:{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    with decided:
        if not outcome and not failure:
            given_up.append(True)
            raise KafkaDeadlineExceeded(f"Kafka did not answer {what} within {timeout_s:g} s")
    if failure:
        raise failure[0]
    return outcome[0]


CALL_MARGIN_S = 5.0
"""What an administrative call's deadline adds to its request's own timeout: a margin for
kafka-python to notice that timeout and say so before the call is given up on."""


def admin_call_timeout_s(request_timeout_s: float) -> float:
    """The deadline of one administrative call (a listing, a deletion) whose requests may
    take `request_timeout_s` (the `kafka.request_timeout_s` setting)."""
    return request_timeout_s + CALL_MARGIN_S


UNREACHABLE_HINT = (
    "check that it runs and answers there (`chainwatch kafka status` for the local one; "
    "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS names another)"
)


TRANSIENT_ERRORS: tuple[type[KafkaError], ...] = (UnknownBrokerIdError,)
"""Not retriable to kafka-python, yet only a broker (a controller) that moved meanwhile."""


def not_now(error: type[KafkaError] | KafkaError) -> bool:
    """Whether Kafka's error says "not now" (trying again may pass), not a refusal."""
    kind = error if isinstance(error, type) else type(error)
    return bool(getattr(kind, "retriable", False)) or issubclass(kind, TRANSIENT_ERRORS)


AUTHORIZATION_FAILED = "AuthorizationFailed"
CONTROLLER_MOVED = "Failed to find active controller"


def kafka_call(call: Callable[[], T], *, bootstrap: Kafka | str, what: str, timeout_s: float) -> T:
    """`call()` (a kafka-python request: an admin client's, a producer's flush) within
    `timeout_s` (`admin_call_timeout_s` for an admin call), its failures in our terms.

    kafka-python's own errors escaped as they were: `KafkaTimeoutError` and a
    connection error mid-start were no `KafkaUnreachable`, so a worker, sink or
    notifier whose broker dropped while it created its topics exited instead of
    waiting for it, and the CLI printed "internal error: KafkaTimeoutError". Now
    Kafka not answering, or answering "not now" (a retriable error: no controller
    yet), is `KafkaUnreachable` (waited out by `retry_until_reachable`); a refusal
    that trying again cannot change is `KafkaRefused`; both one line naming `what`.
    """
    try:
        return bounded(call, timeout_s=timeout_s, what=f"to {what}")
    except SaslAuthenticationFailedError as exc:
        raise authentication_failed(bootstrap, exc) from None
    except BrokerResponseError as exc:
        if not not_now(exc):
            raise refusal(exc, f"to {what}") from None
        said = f"{type(exc).__name__}, not now"
    except KafkaDeadlineExceeded:
        said = f"no answer within {timeout_s:g} s"
    except KafkaError as exc:
        text = _named(exc)
        if AUTHORIZATION_FAILED in text or not not_now(exc):
            # (a refusal may come inside a retriable error: `wait_for_topics` times out
            # listing each topic's reason, "TopicAuthorizationFailed" among them)
            raise KafkaRefused(f"Kafka at {bootstrap} refused to {what} ({text})") from None
        said = text
    except RuntimeError as exc:
        if CONTROLLER_MOVED not in str(exc):
            raise
        said = "no active controller found, not now"  # kafka-python, after NotController twice
    except OSError as exc:
        said = f"{type(exc).__name__}: {exc.strerror or exc}"
    raise KafkaUnreachable(f"Kafka at {bootstrap} did not {what} ({said}); {UNREACHABLE_HINT}")


def _named(exc: KafkaError) -> str:
    """`exc` as "Name: text" (kafka-python's own text often begins with the name)."""
    name, text = type(exc).__name__, str(exc)[:300]
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def started_admin(bootstrap: Kafka, *, request_ms: int) -> KafkaAdminClient:
    """A `KafkaAdminClient` of `bootstrap`, started once a broker there answers (within
    `request_ms`, as kafka-python's own bootstrap wait), or kafka-python's error: a
    client that cannot start leaves no socket or thread behind (`kafka_start.started`
    says why it would). Blocking: run it under `bounded`."""
    admin: KafkaAdminClient = started(
        KafkaAdminClient, bootstrap, start_ms=request_ms, request_timeout_ms=request_ms
    )
    return admin


def connected(
    start: Callable[[int], T],
    bootstrap: Kafka,
    *,
    close: Callable[[T], object],
    request_timeout_s: float,
    timeout_s: float | None = None,
) -> T:
    """The kafka-python client `start(start_ms)` makes (through `kafka_start.started`),
    started within `timeout_s` (default `admin_call_timeout_s(request_timeout_s)`), or
    `KafkaUnreachable`.

    kafka-python's own wait (`start_ms`: `request_timeout_s`, or half of a given
    `timeout_s`) is shorter: it gives up on its own before `bounded` abandons it to
    its thread, and a client that starts after all once abandoned goes to `close`."""
    limit = admin_call_timeout_s(request_timeout_s) if timeout_s is None else timeout_s
    start_ms = int((request_timeout_s if timeout_s is None else timeout_s / 2) * 1000)
    try:
        return bounded(lambda: start(start_ms), timeout_s=limit, what="a connection", late=close)
    except SaslAuthenticationFailedError as exc:
        raise authentication_failed(bootstrap, exc) from None
    except TlsHandshakeFailed as exc:
        raise KafkaUnreachable(f"Kafka at {bootstrap}: {exc}; {TLS_HINT}") from None
    except (KafkaError, OSError, KafkaDeadlineExceeded) as exc:
        raise KafkaUnreachable(
            f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); check that it runs "
            "there (`chainwatch kafka start` starts the local one; "
            "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS names another)"
        ) from None


ADMIN_CLOSE_TIMEOUT_S = 5.0
"""How long `close_admin` waits for an admin client's close."""


def close_admin(admin: KafkaAdminClient, timeout_s: float = ADMIN_CLOSE_TIMEOUT_S) -> None:
    """`admin.close()`, left to finish on a daemon thread after `timeout_s`, with one
    warning line (`kafka.admin_close_timed_out`), so the command does not hang.

    kafka-python's close joins the client's I/O thread with no timeout, and that thread
    can be stuck: it resolves a broker's name there, and `getaddrinfo` has no timeout
    (a resolver that stopped answering held a close until it answered). What was
    still open then is released by the process's end. An error of the close itself
    is raised as before.
    """
    try:
        bounded(admin.close, timeout_s=timeout_s, what="the admin client's close")
    except KafkaDeadlineExceeded:
        log.warning("kafka.admin_close_timed_out", timeout_s=timeout_s)


def admin_client(
    bootstrap: Kafka, *, request_timeout_s: float, timeout_s: float | None = None
) -> KafkaAdminClient:
    """An admin client whose requests may take `request_timeout_s` (`kafka.request_timeout_s`),
    connected within `timeout_s` (default `admin_call_timeout_s(request_timeout_s)`)."""
    return connected(
        lambda start_ms: started_admin(bootstrap, request_ms=start_ms),
        bootstrap,
        close=KafkaAdminClient.close,
        request_timeout_s=request_timeout_s,
        timeout_s=timeout_s,
    )


def settings_admin_client(kafka: KafkaSettings, timeout_s: float | None = None) -> KafkaAdminClient:
    """`admin_client` of `kafka`'s cluster, its requests given `kafka.request_timeout_s`."""
    return admin_client(
        kafka.endpoint, request_timeout_s=kafka.request_timeout_s, timeout_s=timeout_s
    )


def settings_call_timeout_s(kafka: KafkaSettings, timeout_s: float | None = None) -> float:
    """`timeout_s`, or the deadline of an admin call of `kafka`'s cluster."""
    return admin_call_timeout_s(kafka.request_timeout_s) if timeout_s is None else timeout_s


def create_missing_topics(
    bootstrap: Kafka,
    configs_by_name: Mapping[str, Mapping[str, str]],
    *,
    request_timeout_s: float,
    partitions: int,
    replication_factor: int = 1,
    partitions_by_name: Mapping[str, int] | None = None,
) -> None:
    """Create the topics of `configs_by_name` (full name -> topic configs) that are missing,
    with `partitions` each unless `partitions_by_name` gives a topic its own count.

    One connection, one listing and one CreateTopics request whatever the number
    of topics: a worker needs about 25, and on a loaded machine each admin
    connection cost seconds of its start-up. Existing topics keep their
    configuration; a concurrent creator winning the race is fine. Each request may take
    `request_timeout_s` (`kafka.request_timeout_s`).
    """
    call_s = admin_call_timeout_s(request_timeout_s)
    admin = admin_client(bootstrap, request_timeout_s=request_timeout_s)
    try:
        existing = set(
            kafka_call(
                admin.list_topics, bootstrap=bootstrap, what="list its topics", timeout_s=call_s
            )
        )
        wanted: dict[str, dict[str, object]] = {
            name: {
                "num_partitions": (partitions_by_name or {}).get(name, partitions),
                "replication_factor": replication_factor,
                "configs": dict(configs),
            }
            for name, configs in configs_by_name.items()
            if name not in existing
        }
        if wanted:
            kafka_call(
                lambda: _create(admin, wanted),
                bootstrap=bootstrap,
                what=f"create {len(wanted)} topics",
                timeout_s=CREATE_TIMEOUT_MS / 1000 + call_s,
            )
            kafka_call(
                lambda: admin.wait_for_topics(list(wanted), timeout_ms=TOPICS_READY_TIMEOUT_MS),
                bootstrap=bootstrap,
                what=f"list the {len(wanted)} topics it created within "
                f"{TOPICS_READY_TIMEOUT_MS / 1000:g} s",
                timeout_s=TOPICS_READY_TIMEOUT_MS / 1000 + call_s,
            )
    finally:
        close_admin(admin)


def _create(admin: KafkaAdminClient, wanted: dict[str, dict[str, object]]) -> None:
    with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won the race
        admin.create_topics(wanted, timeout_ms=CREATE_TIMEOUT_MS)


def ensure_named_topics(
    bootstrap: Kafka,
    full_names: Iterable[str],
    *,
    request_timeout_s: float,
    partitions: int,
    replication_factor: int = 1,
    topic_configs: Mapping[str, str] | None = None,
) -> None:
    """Create topics by their full names (the engine's internal topics) when missing."""
    create_missing_topics(
        bootstrap,
        {name: dict(topic_configs or {}) for name in full_names},
        request_timeout_s=request_timeout_s,
        partitions=partitions,
        replication_factor=replication_factor,
    )


def contract_topic_configs(
    names: TopicNames, contract_names: Iterable[str], topic_configs: Mapping[str, str] | None
) -> dict[str, dict[str, str]]:
    """Full name -> configs of the contract's topics: `topic_configs` (`min.insync.replicas`)
    on every one, compaction on the CRM topics, the broker's time on scans and orders."""
    result: dict[str, dict[str, str]] = {}
    for name in contract_names:
        configs = dict(topic_configs or {})
        if name in COMPACTED_TOPICS:
            configs["cleanup.policy"] = "compact"
        if name in APPEND_TIME_TOPICS:
            configs[TIMESTAMP_TYPE] = LOG_APPEND_TIME
        result[names(name)] = configs
    return result


def ensure_topics(
    bootstrap: Kafka,
    names: TopicNames,
    contract_names: Iterable[str],
    *,
    request_timeout_s: float,
    partitions: int,
    replication_factor: int = 1,
    topic_configs: Mapping[str, str] | None = None,
) -> None:
    """Create the contract's missing topics (CRM compacted); existing ones are kept."""
    create_missing_topics(
        bootstrap,
        contract_topic_configs(names, contract_names, topic_configs),
        request_timeout_s=request_timeout_s,
        partitions=partitions,
        replication_factor=replication_factor,
    )


def kafka_identities(
    bootstrap: Kafka, topics: Iterable[str], *, request_timeout_s: float
) -> dict[str, KafkaIdentity]:
    """The cluster id and each topic's id, from the broker (admin calls bounded by
    `admin_call_timeout_s`): what `sinks.clickhouse.kafka_source.resolve_offset_bases`
    compares with the store's."""
    wanted = list(topics)
    admin = admin_client(bootstrap, request_timeout_s=request_timeout_s)
    try:
        timeout_s = admin_call_timeout_s(request_timeout_s)
        cluster = bounded(admin.describe_cluster, timeout_s=timeout_s, what="describe_cluster")
        described = bounded(
            lambda: admin.describe_topics(wanted), timeout_s=timeout_s, what="describe_topics"
        )
    finally:
        close_admin(admin)
    cluster_id = str(cluster.get("cluster_id") or "")
    return {
        str(t["name"]): KafkaIdentity(cluster_id, str(t.get("topic_id") or ""))
        for t in described
        if t.get("error_code", 0) == 0
    }
