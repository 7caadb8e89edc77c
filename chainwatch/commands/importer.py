"""`chainwatch import FILE... --kind K [--mapping M] --to file --out PATH | --to kafka`.

History from spreadsheets and ERP exports (CSV, XLSX, NDJSON) into a replay
scenario or the input topics, through the same contract validation as every
other input path. Exit 0 when every row was imported, 3 when some rows were
rejected (each listed with file, row and reason; all of them in `--rejects`
and, with `--to kafka`, on the dead-letter topic), 1 for an error that
stopped the import, 2 for a bad command line (`UsageError`: an option's value,
options missing or in conflict).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from chainwatch.cli_context import cell_text, err, settings
from chainwatch.errors import UsageError, UserError

if TYPE_CHECKING:
    from chainwatch.importer.pipeline import Importer, Rejected
    from chainwatch.importer.tables import Table
    from chainwatch.settings import Settings

#: Bad rows listed on stderr when all of them are also kept elsewhere (file, topic).
SHOWN_REJECTS = 20
EXIT_REJECTED_ROWS = 3


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        files: Annotated[list[Path], typer.Argument(help="CSV, XLSX or NDJSON files.")],
        kind: Annotated[
            str | None, typer.Option(help="scans | orders | customers | unit-status")
        ] = None,
        mapping: Annotated[
            Path | None, typer.Option(help="Mapping file: columns, time format and zone, values.")
        ] = None,
        to: Annotated[str, typer.Option("--to", help="file | kafka")] = "file",
        out: Annotated[
            str | None, typer.Option(help="--to file: the scenario to write (- for stdout).")
        ] = None,
        rejects: Annotated[
            Path | None,
            typer.Option(help="Write bad rows as dead-letter envelopes (NDJSON) here."),
        ] = None,
        fmt: Annotated[
            str | None, typer.Option("--format", help="csv | xlsx | ndjson (default: by name)")
        ] = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", help="Show client-library logs on stderr.")
        ] = False,
    ) -> None:
        """Import rows as contract records: to a replay scenario or to Kafka."""
        code = run_import_command(
            files, kind, mapping, to=to, out=out, rejects=rejects, fmt=fmt, verbose=verbose
        )
        if code:
            raise typer.Exit(code)


def run_import_command(
    files: list[Path],
    kind: str | None,
    mapping_path: Path | None,
    *,
    to: str,
    out: str | None,
    rejects: Path | None,
    fmt: str | None,
    verbose: bool,
) -> int:
    from chainwatch.importer.mapper import RowMapper
    from chainwatch.importer.outputs import check_out, check_rejects
    from chainwatch.importer.pipeline import Importer
    from chainwatch.importer.run import open_tables
    from chainwatch.importer.tables import given_format
    from schemas.import_mapping import IMPORT_KINDS, ImportMapping, MappingError, load_mapping
    from schemas.plan import load_plan

    if kind is not None and kind not in IMPORT_KINDS:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(IMPORT_KINDS)}")
    if fmt is not None:
        given_format(fmt)
    _check_destinations(to, out, rejects)
    try:
        mapping = ImportMapping() if mapping_path is None else load_mapping(mapping_path, kind)
    except MappingError as exc:
        raise UserError(str(exc)) from None
    kind = kind or mapping.kind
    if kind is None:
        raise UsageError(f"--kind is required ({', '.join(IMPORT_KINDS)})")
    cfg = settings()
    plan = load_plan(cfg.engine.plan)
    importer = Importer(RowMapper(mapping, kind), plan)
    started = time.monotonic()
    tables = open_tables(files, mapping, importer, fmt)  # ImportFailed: a UserError
    try:  # the files are closed however it ends: a usage error found here left them open
        inputs = {t.identity for t in tables if t.identity is not None}
        if out is not None:  # before --rejects is opened: that truncates it
            check_out(out, inputs)
        if rejects is not None:
            check_rejects(rejects, inputs)
        if not verbose:  # once the command line is known good: this makes the log's directory
            from chainwatch.logs import route_library_logs

            route_library_logs(cfg.log_dir / "import.log")
        report = RejectReport(err, rejects, inputs, keep_all=to == "kafka" or rejects is not None)
        try:
            with ImportProgress(err) as progress:
                dead = 0
                if out is not None:
                    _to_file(importer, tables, out, report, progress)
                else:
                    dead = _to_kafka(importer, tables, cfg, report, progress)
        finally:  # ImportFailed (a UserError) goes on up: one line, its own exit status
            report.close()
    finally:
        for table in tables:
            table.close()
    summary = importer.summary
    elapsed = time.monotonic() - started
    for counts in summary.files:
        err.print(
            f"import: {cell_text(counts.file)}: {counts.rows} rows, {counts.accepted} "
            f"imported, {counts.rejected} rejected"
            + (f", {counts.derived_ids} event ids derived" if counts.derived_ids else ""),
            highlight=False,
            markup=False,
        )
    for reason, count in summary.reasons.most_common():
        err.print(f"import:   {count} x {cell_text(reason)}", highlight=False, markup=False)
    if summary.repeated_ids:
        err.print(
            f"import: {summary.repeated_ids} rows repeat an event_id of an earlier row "
            "(the engine processes the first only)",
            highlight=False,
        )
    where = cell_text(out) if to == "file" else f"Kafka {cfg.kafka.bootstrap}"
    err.print(
        f"import: {summary.accepted} of {summary.rows} rows to {where} in {elapsed:.1f}s"
        + (f"; {dead} dead letters published" if to == "kafka" else "")
        + (
            f"; rejected rows in {cell_text(rejects)}"
            if rejects is not None and summary.rejected
            else ""
        ),
        highlight=False,
        markup=False,
    )
    return EXIT_REJECTED_ROWS if summary.rejected else 0


def _to_file(
    importer: Importer,
    tables: list[Table],
    out: str,
    report: RejectReport,
    progress: ImportProgress,
) -> None:
    from chainwatch.importer.errors import ImportInterrupted
    from chainwatch.importer.outputs import ScenarioWriter
    from chainwatch.importer.run import import_to_file

    inputs = {t.identity for t in tables if t.identity is not None}
    writer = ScenarioWriter(out, inputs)
    try:
        import_to_file(importer, tables, writer, report, progress)
    except KeyboardInterrupt:
        raise ImportInterrupted(f"interrupted; {writer.not_written()}") from None


def _to_kafka(
    importer: Importer,
    tables: list[Table],
    cfg: Settings,
    report: RejectReport,
    progress: ImportProgress,
) -> int:
    from chainwatch.importer.errors import ImportInterrupted
    from chainwatch.importer.outputs import KafkaOutput
    from chainwatch.importer.run import import_to_kafka
    from chainwatch.kafka_admin import ensure_topics
    from chainwatch.topic_partitions import check_partitions, input_topics
    from streams.topics import DEAD_LETTER, TopicNames

    names = TopicNames(cfg.kafka.topic_prefix)
    # an input topic made with another count: the records went to partitions the engine
    # does not route their ids to, the import said it succeeded, and the worker and the
    # sink then refused the topic at their start. Checked as the sink checks (every input
    # topic, so the advice sees them all) and before the creation, so a refused import
    # creates and publishes nothing (docs/scaling.md).
    check_partitions(
        cfg.kafka.endpoint,
        input_topics(cfg),
        cfg.kafka.partitions,
        request_timeout_s=cfg.kafka.request_timeout_s,
    )
    ensure_topics(
        cfg.kafka.endpoint,
        names,
        (importer.mapper.topic, DEAD_LETTER),
        request_timeout_s=cfg.kafka.request_timeout_s,
        partitions=cfg.kafka.partitions,
        replication_factor=cfg.kafka.replication_factor,
        topic_configs=cfg.kafka.topic_configs(),
    )
    output = KafkaOutput(cfg.kafka.endpoint, connect_timeout_s=cfg.kafka.request_timeout_s)
    try:
        return asyncio.run(import_to_kafka(importer, tables, output, names, report, progress))
    except KeyboardInterrupt:
        raise ImportInterrupted(
            f"interrupted; Kafka acknowledged {output.acknowledged} records and dead letters "
            "before; records not acknowledged may or may not have reached it. Re-running the "
            "import is safe: records sent twice change nothing (docs/import.md)"
        ) from None


class RejectReport:
    """Lists bad rows on stderr (file:row: reason) and keeps them in `--rejects`.

    When every bad row is also kept elsewhere (the rejects file, the
    dead-letter topic) stderr shows the first `SHOWN_REJECTS`; otherwise it
    shows all of them, so none is only counted.
    """

    def __init__(
        self,
        console: Console,
        path: Path | None,
        inputs: Collection[tuple[int, int]],
        *,
        keep_all: bool,
    ) -> None:
        from chainwatch.importer.outputs import RejectsWriter

        self.console = console
        self.keep_all = keep_all
        self.shown = 0
        self.count = 0
        self.writer = None if path is None else RejectsWriter(path, inputs)

    def __call__(self, rejected: Rejected) -> None:
        from datetime import UTC, datetime

        self.count += 1
        if self.writer is not None:
            self.writer.write(rejected.dead_letter(datetime.now(UTC)))
        if not self.keep_all or self.shown < SHOWN_REJECTS:
            self.shown += 1
            self.console.print(
                f"[yellow]rejected[/] {escape(cell_text(rejected.file))}:{rejected.row}: "
                f"{escape(cell_text(rejected.reason))}",
                highlight=False,
                markup=True,
            )
        elif self.shown == SHOWN_REJECTS:
            self.shown += 1
            self.console.print("[dim]rejected: more bad rows, counted below[/]")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ImportProgress:
    """A rich bar per file (rows or bytes read); none without a terminal."""

    def __init__(self, console: Console) -> None:
        # rich's stopped display still ended in an empty line on a pipe or a file
        self._shown = console.is_terminal
        self._progress = Progress(
            TextColumn("[dim]import:[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ImportProgress:
        if self._shown:
            self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._shown:
            self._progress.stop()

    def __call__(self, table: Table) -> None:
        if not self._shown:
            return
        task = self._tasks.get(table.name)
        if task is None:
            task = self._tasks[table.name] = self._progress.add_task(
                table.name, total=table.total or None
            )
        self._progress.update(task, completed=table.done)


def _check_destinations(to: str, out: str | None, rejects: Path | None) -> None:
    if to not in ("file", "kafka"):
        raise UsageError(f"--to {to!r}: expected file or kafka")
    if to == "file" and out is None:
        raise UsageError("--to file needs --out PATH (a scenario for `chainwatch replay`)")
    if to == "kafka" and out is not None:
        raise UsageError("--out is for --to file; --to kafka publishes to the input topics")
    if out not in (None, "-") and rejects is not None and _same_file(Path(out), rejects):
        raise UsageError(f"--out and --rejects name the same file ({rejects}); name two files")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the scenario's rename would replace the rejects)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False
