"""`chainwatch gateway`: the HTTP and EPCIS 2.0 ingest gateway, and its token helpers."""

from __future__ import annotations

import asyncio
import errno
import math
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chainwatch.cli_context import check_plan, err, out, settings
from chainwatch.commands.tokens import created_tokens_file, refuse_example_tokens
from chainwatch.errors import UserError
from chainwatch.stop_deadline import STOP_MARGIN_S

if TYPE_CHECKING:
    import uvicorn

    from chainwatch.settings import Settings
    from streams.ingest.auth import TokenRegistry
    from streams.ingest.settings import GatewaySettings

gateway_app = typer.Typer(
    help="HTTP and EPCIS 2.0 ingest gateway (docs/ingest.md).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@gateway_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: settings, 127.0.0.1).")
    ] = None,
    port: Annotated[
        # the setting's range: model_copy does not check an override, and 70000 bound 4464
        int | None,
        typer.Option(min=0, max=65535, help="Listen port (default: settings, 8088)."),
    ] = None,
    tokens: Annotated[
        Path | None,
        typer.Option(
            "--tokens",
            help="Tokens YAML (name, sha256, role, unit_id); default: settings, else "
            "<data_dir>/gateway-tokens.yaml, where `tokens create` writes.",
        ),
    ] = None,
    epcis_mapping: Annotated[
        Path | None, typer.Option("--epcis-mapping", help="EPCIS -> scan mapping YAML.")
    ] = None,
) -> None:
    """Serve the gateway until Ctrl-C (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    from chainwatch.gateway_topics import TopicsInBackground
    from chainwatch.ops_server import metrics_url
    from chainwatch.process import run_until_signalled
    from chainwatch.runners import prepare_topics
    from schemas.epcis import EpcisMappingError, load_epcis_mapping
    from schemas.plan import load_plan
    from streams.ingest.app import create_gateway_app
    from streams.ingest.auth import TokenRegistry, TokensFileError

    cfg = settings()
    overrides = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "tokens_file": tokens,
            "epcis_mapping": epcis_mapping,
        }.items()
        if v is not None
    }
    cfg = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update=overrides)})
    g = cfg.gateway
    tokens_file = g.tokens_file or created_tokens_file(cfg.data_path)
    if g.tokens_file is None and not tokens_file.is_file():
        raise UserError(
            "no tokens file: pass --tokens FILE (or CHAINWATCH_GATEWAY__TOKENS_FILE), or make "
            f"tokens with `chainwatch tokens create` (they go to {tokens_file})"
        )
    g = g.model_copy(update={"tokens_file": tokens_file})
    cfg = cfg.model_copy(update={"gateway": g})
    try:
        registry = TokenRegistry.load(tokens_file)
        mapping = load_epcis_mapping(g.epcis_mapping) if g.epcis_mapping else None
    except (TokensFileError, EpcisMappingError) as exc:
        raise UserError(str(exc)) from None
    refuse_example_tokens(g.host, tokens_file)
    check_plan(cfg)
    check_token_stages(registry, load_plan(cfg.engine.plan).stage_duration)
    # Before Kafka, the banner or uvicorn: an occupied port is one line and exit 1.
    sock = listen(g.host, g.port)
    try:
        # Served at once, ready once Kafka has answered and the topics are prepared (a
        # `kafka.unreachable` warning per failed attempt): a gateway that exited without
        # Kafka was restarted with a growing delay that could outlast Kafka's return.
        preparation = TopicsInBackground(lambda: prepare_topics(cfg), cfg.kafka.bootstrap)
        app = create_gateway_app(cfg, registry, mapping, preparation=preparation)
        bound = sock.getsockname()[1]
        err.print(
            f"gateway on http://{g.host}:{bound} ({len(registry)} tokens, "
            f"EPCIS {'on' if mapping else 'off'}); docs at /docs"
        )
        config = uvicorn_config(app, g)
        server = _quiet_server(config)
        run_until_signalled(
            "gateway",
            lambda stop: _serve(server, sock, stop),
            loop_factory=config.get_loop_factory(),  # uvloop when installed, as uvicorn's own
            metrics_url=metrics_url(g.host, bound),
            stop_timeout_s=stop_timeout_s(cfg),
        )
    finally:
        sock.close()


PUBLISHER_STOP_S = 15.0
"""The longest the publisher's stop takes after the requests ended (its readiness probe's
close, 5 s, then its producers' close, 10 s; streams/ingest/publisher.py)."""


def stop_timeout_s(cfg: Settings) -> float:
    """The gateway's stop deadline: `engine.stop_timeout_s`, or more when its graceful
    stop may need it (`shutdown_grace_s` for the requests in flight, then the publisher's
    stop): a shorter one would cut requests that the grace lets finish."""
    graceful = math.ceil(cfg.gateway.shutdown_grace_s) + PUBLISHER_STOP_S + STOP_MARGIN_S
    return max(cfg.engine.stop_timeout_s, graceful)


def uvicorn_config(app: Any, g: GatewaySettings, **where: Any) -> uvicorn.Config:
    """How the gateway is served (the tests serve it the same way; `where`: host, port).

    A graceful shutdown waits for the requests in flight at most `shutdown_grace_s`,
    then cancels them: uvicorn's default waits for ever, and one client holding a
    request open kept a stopped gateway from exiting. A request's headers must
    arrive within `header_timeout_s` and have at most `max_header_bytes`
    (chainwatch.gateway_protocol). A close after an answer to a request not read in full
    lingers, at most `lingering_close_s` and `lingering_close_bytes`
    (chainwatch.lingering_close), and a kept connection drops at most
    `lingering_close_bytes` of the rest of a body answered early.
    """
    import uvicorn

    from chainwatch.gateway_protocol import with_header_deadline
    from chainwatch.lingering_close import Linger

    return uvicorn.Config(
        app,
        http=with_header_deadline(
            g.header_timeout_s,
            g.max_header_bytes,
            g.retry_after_s,
            _refusal_counter(app),
            Linger(g.lingering_close_s, g.lingering_close_bytes),
        ),
        log_config=None,
        access_log=False,
        # uvicorn counts the connection asking among its open ones: at N it serves N - 1,
        # and at 1 refused every request
        limit_concurrency=g.limit_connections + 1,
        timeout_graceful_shutdown=math.ceil(g.shutdown_grace_s),  # uvicorn takes whole seconds
        **where,
    )


def _refusal_counter(app: Any) -> Callable[[int, str], None] | None:
    """The gateway app's counter of what the HTTP protocol refuses before the app runs."""
    gateway = getattr(getattr(app, "state", None), "gateway", None)
    metrics = getattr(gateway, "metrics", None)
    return None if metrics is None else metrics.protocol_refused


def _quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server without its own SIGINT/SIGTERM handling: `run_until_signalled` has it
    (uvicorn's would also raise the signal again after its shutdown: SIGTERM killed the process)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


async def _serve(server: uvicorn.Server, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve on `sock` until `stop` is set (then shut down gracefully) or the server ends."""
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        stopping.cancel()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`, or a `UserError` saying why not (one line)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (another process listens there; pick another with --port)"
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def check_token_stages(registry: TokenRegistry, stages: Iterable[str]) -> None:
    """A token bound to a stage the SLA plan does not have could never post: say so at start."""
    known = set(stages)
    for entry in registry.entries():
        unknown = sorted(set(entry.stages or ()) - known)
        if unknown:
            raise UserError(
                f"token {entry.name!r}: stages {', '.join(unknown)} are not in the SLA plan "
                f"({', '.join(sorted(known))})"
            )


@gateway_app.command("hash-token")
def hash_token_command() -> None:
    """Read a token on stdin, print its sha256 for the tokens file (keeps it out of argv)."""
    from streams.ingest.auth import hash_token

    line = sys.stdin.buffer.readline()
    try:  # read as bytes: a binary stdin was an internal UnicodeEncodeError (a surrogate)
        token = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError("the token on stdin is not UTF-8 text") from None
    if not token:
        raise UserError("no token on stdin")
    out.print(hash_token(token))


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")
