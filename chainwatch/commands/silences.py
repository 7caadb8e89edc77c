"""`chainwatch silences add|list|expire|drop-held`: maintenance windows of the webhook
deliveries (docs/alert-channels.md, "Silencing during maintenance"; `chainwatch.silences`)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from chainwatch.cli_context import cell_text, err, out, settings

if TYPE_CHECKING:
    from chainwatch.silences import Pruned
    from sinks.webhooks.silences import Silence

silences_app = typer.Typer(
    help="Silences: alerts the notifier does not send during a maintenance window.",
    no_args_is_help=True,
)


def _many(flag: str, what: str) -> object:
    return typer.Option(flag, help=f"{what}; repeatable (OR within it, AND across options).")


def _at(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _line(silence: Silence, now: datetime) -> str:
    from chainwatch.silences import state_of

    matchers = [
        f"{name}={','.join(values)}"
        for name, values in (
            ("units", silence.units),
            ("stages", silence.stages),
            ("types", silence.types),
            ("orders", silence.order_ids),
            ("customers", silence.customer_ids),
            ("endpoints", silence.endpoints),
        )
        if values
    ]
    return cell_text(
        f"{silence.silence_id}  {state_of(silence, now)}  {_at(silence.starts_at)} .. "
        f"{_at(silence.ends_at)}  {' '.join(matchers)}  by: {silence.created_by or '-'}  "
        f"reason: {silence.reason}"
    )


SHOWN_NAMES = 10
"""A warning lists at most this many of the file's endpoint names."""


def _say(text: str) -> None:
    err.print(cell_text(text), markup=False, highlight=False)


def _say_pruned(pruned: Pruned) -> None:
    """One line when silences that ended long ago were tombstoned, or could not be."""
    from chainwatch.silences import SILENCE_RETENTION

    def ended(count: int) -> str:
        return f"{count} silence{'' if count == 1 else 's'} that ended more than " + (
            f"{SILENCE_RETENTION.days} days ago"
        )

    if pruned.failed:
        _say(
            f"warning: {ended(pruned.left)} not removed ({pruned.failed}); the next add or "
            "expire tries again"
        )
    elif pruned.removed:
        more = f"; {pruned.left} more at the next add or expire" if pruned.left else ""
        _say(f"removed: {ended(pruned.removed)} (a tombstone each){more}")


def register(app: typer.Typer) -> None:
    app.add_typer(silences_app, name="silences")

    @silences_app.command("add")
    def add(
        reason: Annotated[str, typer.Option("--reason", help="Why (shown in the listing).")],
        unit: Annotated[list[str] | None, _many("--unit", "A unit (its alerts and causes)")] = None,
        stage: Annotated[list[str] | None, _many("--stage", "A stage of the SLA plan")] = None,
        type_: Annotated[list[str] | None, _many("--type", "An alert type")] = None,
        order: Annotated[list[str] | None, _many("--order", "An order id")] = None,
        customer: Annotated[list[str] | None, _many("--customer", "A customer id")] = None,
        endpoint: Annotated[
            list[str] | None, _many("--endpoint", "Only to this endpoint (default: all)")
        ] = None,
        for_: Annotated[
            str | None, typer.Option("--for", help="How long: 90m, 4h, 2d (at most 30d).")
        ] = None,
        until: Annotated[
            str | None, typer.Option("--until", help="Its end, an RFC 3339 time.")
        ] = None,
        from_: Annotated[
            str | None, typer.Option("--from", help="Its start, an RFC 3339 time (default now).")
        ] = None,
        by: Annotated[
            str | None, typer.Option("--by", help="Who sets it (default: the login name).")
        ] = None,
    ) -> None:
        """Silence the alerts matching the options for a window; prints the silence's id."""
        from chainwatch import silences

        cfg = settings()
        when = silences.window(for_, until, from_)
        silence = silences.new_silence(
            cfg,
            {
                "units": unit or [],
                "stages": stage or [],
                "types": type_ or [],
                "order_ids": order or [],
                "customer_ids": customer or [],
                "endpoints": endpoint or [],
                "starts_at": when.starts_at,
                "ends_at": when.ends_at,
                "reason": reason,
                "created_by": by if by is not None else _login(),
            },
        )
        unseen = silences.unseen(cfg, silence)
        if unseen is not None and unseen.units:
            _say(
                f"warning: --unit {', '.join(unseen.units)}: no scan or status of it in the "
                "store; a misspelt unit silences nothing (the silence is added)"
            )
        if unseen is not None and unseen.orders:
            _say(
                f"warning: --order {', '.join(unseen.orders)}: no such order in the store; "
                "a misspelt order silences nothing (the silence is added)"
            )
        missing, names = silences.unknown_endpoints(cfg, silence)
        if missing:
            shown = ", ".join(names[:SHOWN_NAMES]) + (
                f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
            )
            _say(
                f"warning: --endpoint {', '.join(missing)}: no endpoint of the subscriptions "
                f"file ({shown}); a misspelt endpoint silences nothing (the silence is added)"
            )
        pruned = silences.add(cfg, silence)
        out.print(silence.silence_id, markup=False, highlight=False)
        _say(f"silenced: {_line(silence, datetime.now(UTC))}")
        _say_pruned(pruned)

    @silences_app.command("list")
    def list_(
        all_: Annotated[
            bool,
            typer.Option(
                "--all",
                help="Also the expired ones (add and expire remove those ended 7+ days ago).",
            ),
        ] = False,
    ) -> None:
        """The silences in force and ahead (with --all, also the expired ones)."""
        from chainwatch import silences

        shown = silences.listed(settings(), everything=all_)
        now = datetime.now(UTC)
        for silence in shown:
            out.print(_line(silence, now), markup=False, highlight=False, soft_wrap=True)
        _say(f"silences: {len(shown)} {'in all' if all_ else 'in force or ahead'}")

    @silences_app.command("expire")
    def expire(silence_id: Annotated[str, typer.Argument(help="The silence's id.")]) -> None:
        """End a silence now: an alert it held that is still open is sent then, once."""
        from chainwatch import silences

        silence, written, pruned = silences.expire(settings(), silence_id)
        said = "expired" if written else "had ended already"
        _say(f"{said}: {_line(silence, datetime.now(UTC))}")
        _say_pruned(pruned)

    @silences_app.command("drop-held")
    def drop_held(
        endpoint: Annotated[
            str, typer.Argument(help="An endpoint no longer in any subscriptions file.")
        ],
    ) -> None:
        """Drop what silences held for an endpoint removed from the subscriptions file (the
        notifier logs webhook_held_unknown_endpoint): says how many, then tombstones them."""
        from chainwatch import silences

        cfg = settings()
        keys = silences.held_of(cfg, endpoint)
        _say(f"held messages of endpoint {endpoint}: {len(keys)}")
        if keys:
            topic = silences.drop_held(cfg, keys)
            _say(f"dropped: {len(keys)} (a tombstone each on {topic})")


def _login() -> str:
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):  # no login name (a container's uid without a passwd entry)
        return ""
