"""Where imported records go: a replay scenario file, or the input topics of a Kafka.

`ScenarioWriter`: one `{"topic", "key", "value"}` line per accepted row (the
format `chainwatch replay` reads, CONTRACT.md), written to a temporary file
beside the target and renamed over it only when the import finished, so a
failed or interrupted import never leaves half a scenario behind.

`KafkaOutput`: an idempotent producer with `acks=all`, so a record counts
once every in-sync replica has it and a retried batch is not duplicated.
Every call has a deadline (start, each send, each batch's acknowledgements,
stop; `chainwatch.acked_sends`, shared with the replay); past one, or when
Kafka refuses, `ImportFailed` says how many records Kafka had acknowledged.
The deadlines are `schemas.deadline`s, not `wait_for`: Python 3.11's `wait_for`
returns the result of a call that finished in the turn it was cancelled and
drops the cancellation, so Ctrl-C during an import was often ignored; a bare
`asyncio.timeout` lets aiokafka's close swallow it instead.
Re-running the import after such a failure is safe: records sent twice change
nothing (docs/import.md).
Bad rows go to the `dead-letter` topic as `DeadLetter` envelopes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from chainwatch.acked_sends import AckedSends, kafka_failed
from chainwatch.errors import UsageError
from chainwatch.importer.pipeline import Accepted
from chainwatch.importer.tables import ImportFailed, is_one_of
from schemas.dead_letter import DeadLetter
from schemas.deadline import deadline
from schemas.files import create_beside, flush_to_disk, sync_directory
from schemas.kafka_security import Kafka, aiokafka_kwargs
from sinks.producer_start import stop_producer


def scenario_line(record: Accepted) -> bytes:
    """The scenario line of a record; its value bytes are spliced in as validated."""
    head = f'{{"topic":"{record.topic}","key":'.encode()
    key = _json_string(record.key)
    return head + key + b',"value":' + record.value + b"}\n"


def _json_string(text: str) -> bytes:
    import json

    return json.dumps(text, ensure_ascii=False).encode()


def check_out(path: str, inputs: Collection[tuple[int, int]] = ()) -> None:
    """What `ScenarioWriter` refuses of `--out`, found without creating anything: the
    import asks it before `--rejects` is opened, which truncates that file (a refused
    `--out` emptied the rejects of the run before)."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise ImportFailed(f"--out {path} is a directory")
    if target.exists() and not target.is_file():
        # the finished file is renamed over the target: a device or a pipe (`--out
        # /dev/null`) would be replaced by a regular file, not written to
        raise ImportFailed(
            f"--out {path} is not a regular file (a device, pipe or socket); "
            "name a file, or `--out -` for stdout"
        )
    if is_one_of(target, inputs):
        raise UsageError(f"--out {path} is one of the files to import; name another file")
    if not target.parent.exists():
        raise ImportFailed(f"--out {path}: no directory {target.parent}")


def check_rejects(path: Path, inputs: Collection[tuple[int, int]] = ()) -> None:
    """What `RejectsWriter` refuses of `--rejects` before it opens it, found creating nothing."""
    if is_one_of(path, inputs):  # "wb" would truncate it before its first row is read
        raise UsageError(f"--rejects {path} is one of the files to import; name another file")


class ScenarioWriter:
    """Writes accepted records as a scenario to `path` (`-`: stdout), atomically for files."""

    def __init__(self, path: str, inputs: Collection[tuple[int, int]] = ()) -> None:
        """`inputs`: the (device, inode) of the files being imported (never overwritten)."""
        self.path = path
        self.written = 0
        self._tmp: Path | None = None
        self._handle: IO[bytes]
        if path == "-":
            self._handle = sys.stdout.buffer
            return
        check_out(path, inputs)
        fd, self._tmp = create_beside(Path(path), 0o666)  # the umask's mode, as a plain write
        self._handle = os.fdopen(fd, "wb")

    def write(self, record: Accepted) -> None:
        try:
            self._handle.write(scenario_line(record))
        except BrokenPipeError:
            raise self._reader_gone() from None
        self.written += 1

    def commit(self) -> None:
        """Flush and put the file in place (the import finished)."""
        try:
            self._handle.flush()
        except BrokenPipeError:
            raise self._reader_gone() from None
        if self._tmp is not None:
            flush_to_disk(self._handle)  # a crash soon after must not keep an empty file
            self._handle.close()
            os.replace(self._tmp, self.path)
            self._tmp = None
            sync_directory(Path(self.path).parent)

    def _reader_gone(self) -> ImportFailed:
        """`--out -` piped into a reader that stopped (`| head`): one line saying so.

        click turned the broken pipe into a silent exit 1, and Python's flush of
        stdout at exit would fail again: stdout now goes to /dev/null.
        """
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return ImportFailed(
            "the output's reader stopped reading (a closed pipe): the import stopped, "
            f"having written at most {self.written} records"
        )

    def not_written(self) -> str:
        """What became of the output of an import that stopped: a file was not written
        (it is renamed into place only at the end); stdout has what went out, and
        "- was not written" said the opposite."""
        if self._tmp is None and self.path == "-":
            return f"{self.written} records were written to stdout: the output is incomplete"
        return f"{self.path} was not written"

    def discard(self) -> None:
        """Forget a partial file (the import failed or was interrupted)."""
        if self._tmp is not None:
            self._handle.close()
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


class RejectsWriter:
    """Dead-letter envelopes of bad rows, one JSON line each (`--rejects`)."""

    def __init__(self, path: Path, inputs: Collection[tuple[int, int]] = ()) -> None:
        self.path = path
        self.written = 0
        check_rejects(path, inputs)
        try:
            self._handle = path.open("wb")
        except OSError as exc:
            raise ImportFailed(f"--rejects {path}: {exc.strerror or exc}") from None

    def write(self, letter: DeadLetter) -> None:
        self._handle.write(letter.encode() + b"\n")
        self.written += 1

    def close(self) -> None:
        self._handle.close()


class KafkaOutput(AckedSends):
    """Publishes records and dead letters with deadlines; use inside one event loop."""

    def __init__(
        self,
        bootstrap: Kafka,
        *,
        connect_timeout_s: float = 15.0,
        ack_timeout_s: float = 60.0,
        batch: int = 2000,
    ) -> None:
        super().__init__(ack_timeout_s)
        self.bootstrap = bootstrap
        self.connect_timeout_s = connect_timeout_s
        self.batch = batch

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **aiokafka_kwargs(self.bootstrap),
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(min(self.timeout_s, 30) * 1000),
        )
        try:
            async with deadline(self.connect_timeout_s):
                await producer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await stop_producer(producer, timeout_s=5)
            raise ImportFailed(
                f"cannot reach Kafka at {self.bootstrap} within {self.connect_timeout_s:g}s "
                f"({type(exc).__name__}); nothing was published"
            ) from None
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record, acknowledged in batches of `batch`; `MessageSizeTooLargeError`
        for one Kafka would never take."""
        await super().send(topic, key, value)
        if self.pending >= self.batch:
            await self.flush()

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop the producer within `timeout_s` (default: the acknowledgements' deadline): its
        stop sends what it still holds, and with Kafka away retries that up to the deadline."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await stop_producer(producer, self.timeout_s if timeout_s is None else timeout_s)

    def _failed(self, exc: BaseException) -> ImportFailed:
        return ImportFailed(
            f"Kafka at {self.bootstrap} {kafka_failed(exc, self.timeout_s)}; "
            f"{self.acknowledged} records were acknowledged "
            "before. Re-running the import is safe: records sent twice change nothing"
        )
