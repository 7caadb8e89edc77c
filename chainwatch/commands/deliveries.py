"""`chainwatch deliveries given-up|resend`: the webhook deliveries the notifier gave up
(docs/alert-channels.md, "Re-sending what was given up"; `chainwatch.deliveries`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from chainwatch.cli_context import cell_text, err, out, settings

if TYPE_CHECKING:
    from chainwatch.deliveries import Run, Summary
    from sinks.webhooks.resend import GivenUp

deliveries_app = typer.Typer(
    help="Webhook deliveries the notifier gave up: list them, re-send them.",
    no_args_is_help=True,
)

SinceOption = Annotated[
    str,
    typer.Option("--since", help="How far back: a duration (30m, 24h, 7d) or an RFC 3339 time."),
]
EndpointOption = Annotated[
    list[str] | None,
    typer.Option(
        "--endpoint", help="Only this endpoint (its name in the subscriptions file); repeatable."
    ),
]


def _line(given_up: GivenUp) -> str:
    letter = given_up.letter
    verdict = "re-send" if given_up.resend else f"not re-sent: {given_up.why_not}"
    failed_at = letter.failed_at.isoformat().replace("+00:00", "Z")
    return cell_text(
        f"{failed_at}  {letter.endpoint}  {letter.alert_id}  reason: {letter.reason}  -> {verdict}"
    )


def _print(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def _progress(text: str) -> None:
    err.print(cell_text(text), markup=False, highlight=False)


def _run(since: str, endpoint: list[str] | None, *, sending: bool) -> Run:
    from chainwatch.deliveries import Run, parse_since

    when = parse_since(since)
    return Run(
        settings(), since=when, endpoints=endpoint or (), progress=_progress, sending=sending
    )


SHOWN_NAMES = 10
"""A warning lists at most this many of the file's endpoint names."""


def _warn_unknown(summary: Summary, since: str) -> None:
    shown = summary.configured_endpoints[:SHOWN_NAMES]
    more = len(summary.configured_endpoints) - len(shown)
    names = ", ".join(shown) + (f" and {more} more" if more else "")
    for name in summary.unknown_endpoints:
        err.print(
            cell_text(
                f"warning: --endpoint {name!r} is no endpoint of the subscriptions file "
                f"({names}) and gave up nothing since {since}"
            ),
            markup=False,
            highlight=False,
        )


def _skipped(summary: Summary) -> str:
    return (
        f"; {summary.skipped_records} records that are no log record skipped"
        if summary.skipped_records
        else ""
    )


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries_app, name="deliveries")

    @deliveries_app.command("given-up")
    def given_up(since: SinceOption = "24h", endpoint: EndpointOption = None) -> None:
        """List the deliveries given up, and whether resend would re-send each.

        Reads only, and needs none of the endpoints' secrets (their secret_env and
        routing_key_env may be unset) nor the notifier's address rules: resend does."""
        from chainwatch.deliveries import run_given_up

        summary = run_given_up(_run(since, endpoint, sending=False))  # no secret needed
        _warn_unknown(summary, since)
        for item in summary.given_up:
            _print(_line(item))
        err.print(
            f"given-up: {len(summary.given_up)} given up since {since}, "
            f"{len(summary.to_resend)} would be re-sent{_skipped(summary)}",
            markup=False,
            highlight=False,
        )

    @deliveries_app.command("resend")
    def resend(
        since: SinceOption = "24h",
        endpoint: EndpointOption = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Only say what would be re-sent.")
        ] = False,
    ) -> None:
        """Re-send the deliveries given up, each outcome logged; exit 1 if one fails again."""
        from chainwatch.deliveries import run_resend

        # --dry-run too checks the file as resend does: it says whether resend would run
        summary = run_resend(_run(since, endpoint, sending=True), dry_run=dry_run)
        _warn_unknown(summary, since)
        if dry_run:
            for item in summary.given_up:
                _print(_line(item))
        else:
            for item in summary.given_up:
                if not item.resend:
                    _progress(_line(item))
        tried = summary.delivered + summary.failed
        said = (
            f"{len(summary.to_resend)} would be re-sent (dry run: nothing sent)"
            if dry_run
            else f"{tried} re-sent: {summary.delivered} delivered, {summary.failed} given up again"
        )
        if summary.superseded:  # each said in its line as it came
            said += (
                f"; {summary.superseded} not re-sent: a later message of the alert was "
                "delivered after the read"
            )
        stopped = f"; stopped: {summary.not_tried} not re-sent" if summary.stopped else ""
        err.print(
            f"resend: {len(summary.given_up)} given up since {since}, "
            f"{len(summary.given_up) - len(summary.to_resend)} not to re-send; {said}"
            f"{stopped}{_skipped(summary)}",
            markup=False,
            highlight=False,
        )
        if summary.stopped:
            raise typer.Exit(130)
        if summary.failed:
            raise typer.Exit(1)
