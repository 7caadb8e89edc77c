"""Structured logging for every long-running process.

structlog renders key=value pairs on a terminal and JSON lines in production
(`CHAINWATCH_LOG_FORMAT=json`). Standard-library loggers (faust, aiokafka,
uvicorn) are routed through the same renderer so one process writes one format.

The libraries (`streams`, `sinks`) take their loggers from structlog itself
(`structlog.stdlib.get_logger(__name__)`) and never configure anything; the
process that runs them configures logging here, once.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from schemas.log_throttle import LogThrottle

CLIENT_LIBRARIES = ("kafka", "aiokafka", "faust", "mode", "clickhouse_connect", "httpx", "uvicorn")
"""Loggers whose repeated messages are rate-limited (`RepeatFilter`)."""


class RepeatFilter(logging.Filter):
    """Rate-limits repeated client-library messages: the first of a kind passes, then
    at most one per `window_s`, saying how many like it were held back.

    A broker that is down makes aiokafka log the same connection error many
    times a second (~1,600 lines in 40 s); one line per kind and window says
    the same. "Of a kind" is the logger, the level and the message template
    (not its arguments, which carry addresses and attempt counts).
    """

    def __init__(
        self, window_s: float = 30.0, prefixes: tuple[str, ...] = CLIENT_LIBRARIES
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefixes = prefixes
        self._throttle = LogThrottle(window_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        held_back = self._throttle.admit((record.name, record.levelno, str(record.msg)))
        if held_back is None:
            return False
        if held_back:
            record.msg = f"{record.msg} [{held_back} like it in the last {self.window_s:g} s]"
        return True


class RetriableAsWarning(logging.Filter):
    """Logs aiokafka's errors that it retries by itself as warnings, as Kafka's Java client does.

    aiokafka logs a failed request at ERROR and then retries it when the broker's
    error is retriable (`KafkaError.retriable`): a group coordinator not yet
    elected, a partition whose leader is moving. Every worker's start on a new
    topic logged two such lines (`GroupCoordinatorNotAvailableError`,
    `NotLeaderForPartitionError`), so an alert on ERROR lines would fire at each
    start and each broker failover. What aiokafka gives up on (not retriable)
    stays an error; a retriable failure that persists still shows, as warnings
    (rate-limited by `RepeatFilter`), and as a worker that is not ready.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("aiokafka"):
            args = record.args if isinstance(record.args, tuple) else ()
            if any(_retried(arg) for arg in args) or record.msg in _RETRIED_MESSAGES:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class ShutdownCancelAsWarning(logging.Filter):
    """uvicorn logs its cancel of the requests still running at the end of a graceful
    shutdown's grace as an ERROR; it is the configured behaviour (`shutdown_grace_s`),
    and each request cut answers 503 and logs a line of its own: a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.ERROR
            and record.name == "uvicorn.error"
            and str(record.msg).startswith("Cancel %s running task(s)")
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_RETRIED_MESSAGES = frozenset(
    {
        "Unable to update metadata from %s",
        "Heartbeat session expired - marking coordinator dead",
    }
)
"""aiokafka's lines for failures it retries, whose arguments say nothing of it: its metadata
refresh runs again on its own schedule, and a consumer whose session expired (Kafka was
away longer than the session timeout) finds its coordinator and rejoins by itself."""


def _retried(arg: object) -> bool:
    """A broker error aiokafka retries, or a failed connection (refused, timed out): its
    client connects again by itself, and Kafka's Java client logs those as warnings too."""
    if isinstance(arg, ssl.SSLError):  # a TLS setup that is wrong stays wrong: an error
        return False
    return getattr(arg, "retriable", False) is True or isinstance(arg, OSError | TimeoutError)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Route structlog and stdlib logging to stderr in one format.

    Tracebacks are Python's plain ones in both formats (a JSON line carries it as
    `exception`): structlog's default console formatter is rich's, which prints every
    frame's local variables — request headers with bearer tokens, DSNs — and takes
    tens of milliseconds to a second per error under load; and a JSON renderer given
    no formatter wrote `"exc_info": true` and lost the traceback altogether.
    """
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        )
    )
    handler.addFilter(RetriableAsWarning())
    handler.addFilter(ShutdownCancelAsWarning())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":  # client libraries narrate every connection at INFO
        for noisy in ("kafka", "aiokafka", "faust.transport", "mode", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # these warn about each retry of a request whose failure is reported anyway
        for retrying in ("urllib3.connectionpool", "clickhouse_connect"):
            logging.getLogger(retrying).setLevel(logging.ERROR)


def _drop_color_message(
    _logger: object, _name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """uvicorn adds a copy of each message with terminal colour codes; the plain one suffices."""
    event_dict.pop("color_message", None)
    return event_dict


@contextmanager
def silenced(*names: str) -> Iterator[None]:
    """Mute these loggers for a probe whose outcome is reported in one line of our own.

    `chainwatch doctor` and the Kafka pre-flight of one-shot commands expect a broker
    that may be down; kafka-python would log every refused connection of the probe.
    Nothing is muted with CHAINWATCH_LOG_LEVEL=debug.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:  # children without a level of their own inherit this one
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, was in zip(loggers, before, strict=True):
            logger.setLevel(was)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The logger of `name` (as the libraries' `structlog.stdlib.get_logger(__name__)`)."""
    return structlog.stdlib.get_logger(name)


#: Client libraries whose retries and connection chatter mean nothing to a CLI user.
LIBRARY_LOGGERS = (
    "kafka",
    "aiokafka",
    "faust",
    "mode",
    "clickhouse_connect",
    "urllib3",
    "httpx",
)


def route_library_logs(path: Path) -> None:
    """Send client-library records to `path` instead of stderr (user-facing commands).

    A replay creates topics and then publishes at once, so aiokafka warns about
    `NotLeaderForPartitionError` retries on every run; the records stay useful
    for a bug report, so they go to a file rather than nowhere. `--verbose`
    skips this and keeps them on stderr.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.addFilter(RetriableAsWarning())
    root_handlers = logging.getLogger().handlers
    if root_handlers and root_handlers[0].formatter is not None:
        handler.setFormatter(root_handlers[0].formatter)
    logging.captureWarnings(True)  # a library's `warnings.warn` is library noise too
    for name in (*LIBRARY_LOGGERS, "py.warnings"):
        library = logging.getLogger(name)
        for old in library.handlers:
            old.close()
        library.handlers[:] = [handler]
        library.propagate = False
