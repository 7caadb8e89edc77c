"""One import, start to end: open every file first, then stream rows to the output.

All files are opened (format, encoding, sheet, header against the mapping)
before the first record is written, so a wrong column name in the third file
stops the import before anything was published, not half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.errors import MessageSizeTooLargeError

from chainwatch.importer.errors import FileBroken
from chainwatch.importer.outputs import KafkaOutput, ScenarioWriter
from chainwatch.importer.pipeline import Accepted, Importer, Rejected
from chainwatch.importer.tables import ImportFailed, Table, open_table
from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.import_mapping import ImportMapping
from schemas.text import shorten
from streams.topics import DEAD_LETTER, TopicNames

#: Columns named, and characters of each, in a "no column" error.
_SHOWN = 30
_NAME = 60

#: How long an interrupted import's producer may take to stop. Its stop sends what it
#: still holds; with Kafka away it retried that for the whole ack deadline (60 s), so
#: Ctrl-C waited a minute in silence. What it held may or may not reach Kafka.
INTERRUPTED_STOP_TIMEOUT_S = 5.0

OnRejected = Callable[[Rejected], None]
OnProgress = Callable[[Table], None]


def open_tables(
    paths: Sequence[Path], mapping: ImportMapping, importer: Importer, fmt: str | None = None
) -> list[Table]:
    """Open every file and check its header; `ImportFailed` (nothing left open) if any is bad."""
    tables: list[Table] = []
    try:
        for path in paths:
            table = open_table(path, mapping, fmt)
            tables.append(table)
            if table.header is not None:
                repeats = importer.mapper.header_repeats(table.header)
                if repeats:
                    raise ImportFailed(f"{path}: {'; '.join(repeats)}; rename all but one")
                problems = importer.mapper.header_problems(table.header)
                if problems:
                    raise ImportFailed(
                        f"{path}: {'; '.join(problems)} (columns: {shown_columns(table.header)}); "
                        "name the columns in a mapping file (--mapping)"
                    )
    except BaseException:
        for table in tables:
            table.close()
        raise
    return tables


def shown_columns(header: Sequence[str]) -> str:
    """The first columns of a header for an error line: bounded, whatever the file has."""
    names = [h for h in header if h]
    shown = ", ".join(repr(shorten(h, _NAME)) for h in names[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def import_to_file(
    importer: Importer,
    tables: Sequence[Table],
    writer: ScenarioWriter,
    on_rejected: OnRejected,
    on_progress: OnProgress | None = None,
) -> None:
    """Write every accepted row to the scenario; commit it only if all files were read."""
    try:
        for table in tables:
            for outcome in importer.outcomes(table, on_progress):
                if isinstance(outcome, Accepted):
                    writer.write(outcome)
                else:
                    on_rejected(outcome)
        writer.commit()
    except FileBroken as exc:
        raise ImportFailed(f"{exc}; {writer.not_written()}") from None
    finally:
        writer.discard()


async def import_to_kafka(
    importer: Importer,
    tables: Sequence[Table],
    output: KafkaOutput,
    names: TopicNames,
    on_rejected: OnRejected,
    on_progress: OnProgress | None = None,
) -> int:
    """Publish every accepted row to its input topic and every bad row as a dead letter.

    Returns how many dead letters were published. Ends with every record
    acknowledged, or raises `ImportFailed`.
    """
    dead = 0

    async def dead_letter(rejected: Rejected) -> None:
        nonlocal dead
        on_rejected(rejected)
        letter = rejected.dead_letter(datetime.now(UTC))
        await output.send(names(DEAD_LETTER), letter.dead_letter_id.encode(), letter.encode())
        dead += 1

    await output.start()
    interrupted = False
    try:
        for table in tables:
            for outcome in importer.outcomes(table, on_progress):
                if isinstance(outcome, Rejected):
                    await dead_letter(outcome)
                    continue
                try:
                    await output.send(names(outcome.topic), outcome.key.encode(), outcome.value)
                except MessageSizeTooLargeError as exc:
                    detail = ErrorDetail(loc="", msg=f"too large for Kafka: {exc}", type="size")
                    too_big = Rejected(
                        outcome.file,
                        outcome.row,
                        outcome.value,
                        ReasonCode.PROCESSING_ERROR,
                        [detail],
                        outcome.key,
                    )
                    importer.summary.files[-1].accepted -= 1
                    importer.summary.files[-1].rejected += 1
                    importer.summary.reasons["processing_error: too large for Kafka"] += 1
                    await dead_letter(too_big)
        await output.flush()
    except FileBroken as exc:
        await output.flush()  # so the count below is what Kafka has
        raise ImportFailed(
            f"{exc}; Kafka acknowledged {output.acknowledged} records and dead letters "
            "before. Re-running the import once the file is fixed is safe: the same rows "
            "get the same event ids"
        ) from None
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the import
        interrupted = True
        raise
    finally:
        await output.stop(INTERRUPTED_STOP_TIMEOUT_S if interrupted else None)
    return dead
