"""`chainwatch simulate`: generate knitwear-chain traffic into a file, Kafka or the gateway.

Thin: parse options into a `SimConfig`, pick one destination, run. The
generation is `simulator.generate`; docs/simulator.md is the
user's guide.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError

from chainwatch.cli_context import cell_text, err, finite_number, float_option, settings
from chainwatch.errors import UsageError, UserError
from schemas.plan import PlanError, SlaPlan, load_plan
from schemas.urls import UrlError, split_url
from simulator import (
    DEFAULT_START,
    AnomalyRates,
    LiveResult,
    Progress,
    Publisher,
    SimConfig,
    Summary,
    format_ms,
    run_live,
    write_lines,
    write_scenario,
)
from simulator import (
    simulate as simulated_run,
)


def _parse_start(text: str | None, live: bool) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(microsecond=0) if live else DEFAULT_START
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--start {text!r} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        raise UsageError(f"--start {text!r} needs a UTC offset (e.g. 2027-03-01T00:00:00Z)")
    return value


def _anomalies(pairs: list[str], scale: float) -> AnomalyRates:
    base = AnomalyRates().model_dump()
    values = {name: min(1.0, rate * scale) for name, rate in base.items()}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in base:
            known = ", ".join(sorted(base))
            raise UsageError(f"--anomaly {pair!r}: expected NAME=RATE with NAME one of {known}")
        try:
            values[name] = finite_number(text)
        except ValueError as exc:
            raise UsageError(f"--anomaly {pair!r}: {exc}") from None
    try:
        return AnomalyRates(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"--anomaly {first['loc'][0]}: {first['msg']}") from None


def _option_error(exc: ValidationError) -> str:
    """SimConfig's first complaint as the option's: a field's error has the field as its
    `loc`, one across fields (`days` from `start`) names the field it blames first."""
    first = exc.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    field = str(first["loc"][0]) if first["loc"] else ""
    if not field:
        named, sep, rest = msg.partition(": ")
        if sep and named in SimConfig.model_fields:
            field, msg = named, rest
    return (f"--{field.replace('_', '-')}: " if field else "") + msg


def _check_gateway_url(url: str) -> None:
    """A URL httpx cannot post to is refused at once, never quoted (it may hold a password):
    it was retried seven times over half a minute, then 'gateway ... unreachable', exit 1."""
    try:
        parts, port = split_url(url)
    except UrlError as exc:
        raise UsageError(f"--gateway is not a valid URL ({exc}): like http://host:8088") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("--gateway must be an http(s) URL with a host, like http://host:8088")
    if port == 0:  # no connection is made to it: retried as the others were
        raise UsageError("--gateway has port 0: it must look like http://host:8088")


def _check_destination_options(
    out: Path | None,
    gateway: str | None,
    rate: float | None,
    duration: float | None,
    token: str | None,
    token_file: Path | None,
) -> None:
    """An option the chosen destination does not use is a usage error: it was ignored, so
    `--out sim.ndjson --duration 600` wrote the default 3 days without a word."""
    pacing = [
        name for name, value in (("--rate", rate), ("--duration", duration)) if value is not None
    ]
    if out is not None and pacing:
        raise UsageError(
            f"{' and '.join(pacing)}: only a live run (--kafka, --gateway) is paced; --out "
            "writes the file at once (bound it with --days or --max-events)"
        )
    if gateway is None and (token is not None or token_file is not None):
        raise UsageError("--token and --token-file are for --gateway only")


def _token(token: str | None, token_file: Path | None) -> str:
    """The bearer token, or a one-line usage error that never quotes it. An empty file was
    sent as `Bearer ` (no header can carry it): retried for half a minute, then reported
    as an unreachable gateway; a binary file was an internal UnicodeDecodeError."""
    if token_file is not None:
        where = f"--token-file {token_file}"
        try:
            text = token_file.read_bytes().decode("utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read {where}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{where} holds no token: it is not UTF-8 text") from None
    elif token is not None:
        where, text = "--token", token
    else:
        raise UsageError("--gateway needs --token or --token-file (an admin token of the gateway)")
    if not text:
        raise UsageError(f"{where} is empty: give an admin token of the gateway")
    if not text.isascii() or not text.isprintable() or len(text.split()) != 1:
        raise UsageError(
            f"{where} holds no token: it has whitespace, a control character "
            "or a character outside ASCII"
        )
    return text


def _plan(path: Path | None) -> SlaPlan:
    try:
        return load_plan(path if path is not None else settings().engine.plan)
    except PlanError as exc:
        raise UserError(str(exc)) from None


def _report_progress(progress: Progress) -> None:
    rate = progress.sent / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    err.print(
        f"[dim]simulate: {progress.sent} sent, {rate:.0f}/s, "
        f"simulated time {format_ms(progress.sim_ms)}[/]",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        out: Annotated[
            Path | None, typer.Option("--out", help="Write a scenario file ('-' = stdout).")
        ] = None,
        kafka: Annotated[
            bool, typer.Option("--kafka", help="Stream live to the configured Kafka.")
        ] = False,
        gateway: Annotated[
            str | None,
            typer.Option("--gateway", help="Stream live to the HTTP gateway at this base URL."),
        ] = None,
        token: Annotated[
            str | None, typer.Option("--token", help="Gateway bearer token (admin).")
        ] = None,
        token_file: Annotated[
            Path | None, typer.Option("--token-file", help="File holding the gateway token.")
        ] = None,
        days: Annotated[
            int | None,
            typer.Option(
                "--days", min=1, help="Days of orders (file default 3; live default endless)."
            ),
        ] = None,
        orders_per_day: Annotated[int, typer.Option("--orders-per-day", min=1)] = 40,
        seed: Annotated[int, typer.Option("--seed")] = 1,
        start: Annotated[
            str | None,
            typer.Option(
                "--start",
                help="First simulated instant (file default 2027-03-01T00:00:00Z; "
                "live default now).",
            ),
        ] = None,
        customers: Annotated[
            int | None, typer.Option("--customers", min=1, help="Customer pool size.")
        ] = None,
        invalid_share: Annotated[
            float,
            float_option("--invalid-share", min=0.0, max=0.5, help="Share of invalid records."),
        ] = 0.01,
        anomaly: Annotated[
            list[str] | None,
            typer.Option("--anomaly", help="Override one anomaly rate, NAME=RATE (repeatable)."),
        ] = None,
        anomaly_scale: Annotated[
            float,
            float_option("--anomaly-scale", min=0.0, max=1000, help="Multiply every anomaly rate."),
        ] = 1.0,
        plan_path: Annotated[
            Path | None, typer.Option("--plan", help="SLA plan YAML (default: the engine's).")
        ] = None,
        id_prefix: Annotated[
            str, typer.Option("--id-prefix", help="Prefix of order ids (keeps runs apart).")
        ] = "",
        rate: Annotated[
            float | None,
            float_option(
                "--rate", min=0.001, max=1e7, help="Events per second (live default 100)."
            ),
        ] = None,
        duration: Annotated[
            float | None,
            float_option("--duration", min=0.0, max=1e8, help="Stop live after N seconds."),
        ] = None,
        max_events: Annotated[
            int | None, typer.Option("--max-events", min=0, help="Stop after N records.")
        ] = None,
        summary: Annotated[
            bool, typer.Option("--summary", help="Print counts per topic and anomaly on stderr.")
        ] = False,
        verbose: Annotated[
            bool, typer.Option("--verbose", help="Show client-library logs on stderr.")
        ] = False,
    ) -> None:
        """Generate knitwear-chain traffic: a scenario file, or live to Kafka or the gateway."""
        targets = [out is not None, kafka, gateway is not None]
        if sum(targets) != 1:
            raise UsageError("choose exactly one of --out FILE, --kafka or --gateway URL")
        if gateway is not None:
            _check_gateway_url(gateway)
        _check_destination_options(out, gateway, rate, duration, token, token_file)
        live = out is None
        try:
            config = SimConfig(
                seed=seed,
                start=_parse_start(start, live),
                days=days if days is not None else (None if live else 3),
                orders_per_day=orders_per_day,
                customers=customers,
                invalid_share=invalid_share,
                id_prefix=id_prefix,
                anomalies=_anomalies(anomaly or [], anomaly_scale),
            )
        except ValidationError as exc:
            raise UsageError(_option_error(exc)) from None
        plan = _plan(plan_path)
        if out is not None:
            tally = _to_file(config, plan, out, max_events)
        else:
            tally = Summary()
            bearer = None if gateway is None else _token(token, token_file)  # errors first
            if not verbose:  # Kafka's and httpx's retries go to a file, not the terminal
                from chainwatch.logs import route_library_logs

                route_library_logs(settings().log_dir / "simulate.log")
            publisher = _publisher(kafka, gateway, bearer)
            with _sigterm_as_ctrl_c():
                result = run_live(
                    simulated_run(config, plan),
                    publisher,
                    tally,
                    rate=rate if rate is not None else 100.0,
                    max_events=max_events,
                    duration_s=duration,
                    progress=_report_progress,
                )
            _report_live(result, publisher)
        if summary:
            for line in tally.lines():
                err.print(line, highlight=False, markup=False)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`timeout`, `kill`, a supervisor's stop) ends a live run as Ctrl-C does: the
    publisher flushes what it holds and the run's line is said. It killed the process at
    once: records buffered for Kafka or the next gateway batch lost, no line, exit 143."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # someone else's handler
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _to_file(config: SimConfig, plan: SlaPlan, out: Path, max_events: int | None) -> Summary:
    if str(out) == "-":
        from itertools import islice

        tally = Summary()
        try:
            write_lines(islice(simulated_run(config, plan), max_events), sys.stdout, tally)
            sys.stdout.flush()
        except BrokenPipeError:
            raise  # the reader stopped (`| head`): the CLI says so
        except OSError as exc:  # `> /dev/full`, a disk full: was an internal error
            raise UserError(f"cannot write to stdout: {exc.strerror or exc}") from None
        return tally
    try:
        tally = write_scenario(out, config, plan, max_records=max_events)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    err.print(
        f"simulate: wrote {tally.records} records to {cell_text(out)}",
        highlight=False,
        markup=False,
    )
    return tally


def _publisher(kafka: bool, gateway: str | None, bearer: str | None) -> Publisher:
    if kafka:
        from chainwatch.simulator_outputs.kafka_out import KafkaPublisher

        return KafkaPublisher(settings())
    from chainwatch.simulator_outputs.http_out import HttpPublisher

    assert gateway is not None
    assert bearer is not None
    return HttpPublisher(gateway, bearer)


def _report_live(result: LiveResult, publisher: Publisher) -> None:
    rate = result.sent / result.elapsed_s if result.elapsed_s > 0 else 0.0
    err.print(
        f"simulate: {result.sent} records in {result.elapsed_s:.1f}s ({rate:.0f}/s), "
        f"stopped: {result.stopped_by}",
        highlight=False,
    )
    counts = getattr(publisher, "counts", None)
    if counts is not None:  # said before a refusal's error line, which then follows it
        refused = f", refused {counts.refused}" if counts.refused else ""
        cut = f", {counts.cut} cut by the stop (not known to be taken)" if counts.cut else ""
        err.print(
            f"simulate: gateway accepted {counts.accepted}, dead-lettered {counts.rejected}"
            f"{refused}{cut}, {counts.requests} requests",
            highlight=False,
        )
    failed = getattr(publisher, "failed", 0)
    if failed:
        raise UserError(f"{failed} records could not be published (see the log)")
