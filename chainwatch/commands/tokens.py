"""`chainwatch tokens create`: a gateway token, shown once; only its digest is stored.

Also the start-up guard of the gateway: the example tokens of
`deploy/gateway/tokens.example.yaml` are public, so a gateway that listens beyond
loopback refuses to start while any of their digests is configured.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from chainwatch.cli_context import cell_text, err, settings
from chainwatch.errors import UsageError, UserError
from schemas.files import load_config_yaml, read_config_text, write_text_atomically

EXAMPLE_TOKEN_DIGESTS = frozenset(
    {  # sha256 of example-dye-token, example-orders-token, example-crm-token, example-admin-token
        "c9dd8629beaebc1e3437e19ed6f747d4468d55eb9ee5a15a01da7e33d191a11c",
        "9bb2480a8984a1b4fd778ecd5f7ddbb46d4cb70ea3281ccbe778de68bc1d591d",
        "66d11d765f2e4053efd7086108930900351024b63aeff2bc04c1f7cca5b6754d",
        "d2eadfb6e52d65b4bbf254e5046c0c495328b4d208f8b1591c229e62c5c6362f",
    }
)
"""The digests in `deploy/gateway/tokens.example.yaml` (a test keeps the two equal)."""

tokens_app = typer.Typer(help="Bearer tokens of the ingest gateway.", no_args_is_help=True)


def is_loopback(host: str) -> bool:
    """Only `localhost` and loopback addresses; anything else (0.0.0.0, a name) may be public."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_example_tokens(host: str, tokens_file: Path) -> None:
    """Raise `UserError` when a non-loopback gateway would accept a public example token."""
    if is_loopback(host):
        return
    try:
        data = load_config_yaml(read_config_text(tokens_file)) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # the tokens file's own loader reports this one
    entries = data.get("tokens") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        digest = str(entry.get("sha256", "")).lower() if isinstance(entry, dict) else ""
        if digest in EXAMPLE_TOKEN_DIGESTS:
            raise UserError(
                f"{tokens_file}: token {entry.get('name')!r} is a public example token "
                f"(deploy/gateway/tokens.example.yaml) and the gateway would listen on {host}; "
                "make your own with `chainwatch tokens create` or listen on 127.0.0.1"
            )


def _default_file() -> Path:
    cfg = settings()
    return cfg.gateway.tokens_file or created_tokens_file(cfg.data_path)


def created_tokens_file(data_path: Path) -> Path:
    """Where `tokens create` writes without `--file` or the setting, and so where the
    gateway looks without them."""
    return data_path / "gateway-tokens.yaml"


def _entry_yaml(entry: dict[str, Any]) -> str:
    lines = [f"  - name: {_scalar(entry['name'])}", f"    sha256: {entry['sha256']}"]
    lines.append(f"    role: {entry['role']}")
    if "unit_id" in entry:
        lines.append(f"    unit_id: {_scalar(entry['unit_id'])}")
    if "stages" in entry:
        lines.append("    stages: [" + ", ".join(_scalar(s) for s in entry["stages"]) + "]")
    return "\n".join(lines) + "\n"


def _scalar(value: str) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return dumped.strip().removesuffix("...").strip()


_OPTION_OF = {"role": "--role", "unit_id": "--unit", "stages": "--stages", "name": "NAME"}
"""The `tokens create` option that gave each field of a new entry."""
_ENTRY_OPTIONS = "--role, --unit, --stages"
"""What an error of the new entry as a whole (a unit token without its unit) blames."""


def append_token(
    path: Path, entry: dict[str, Any], before_write: Callable[[], None] | None = None
) -> None:
    """Add `entry` to the tokens file (created if missing), validated with the gateway's model.

    The text is appended so comments survive; if the file's layout does not allow that
    (a flow-style list, another key last), it is rewritten from its parsed content.
    """
    from pydantic import ValidationError

    from streams.ingest.auth import TOKENS_FILE_KEYS, TokensFile

    try:
        old_text = read_config_text(path) if path.exists() else ""
        if old_text.strip():
            data = load_config_yaml(old_text, known_keys=TOKENS_FILE_KEYS)
        else:
            data = {"tokens": []}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # never the file's text; an OSError's reason (it said only "OSError" for a directory)
        why = getattr(exc, "private", None) or getattr(exc, "strerror", None)
        why = why or type(exc).__name__
        raise UserError(f"cannot read tokens file {path}: {why}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tokens") or [], list):
        raise UserError(f"tokens file {path}: expected a mapping with a `tokens:` list")
    # compared one by one, not through a set: a hand-edited name may be a list (unhashable)
    if any(
        isinstance(t, dict) and t.get("name") == entry["name"] for t in data.get("tokens") or []
    ):
        # the option's fault, not the file's: it said "tokens file ...: names must be unique"
        raise UsageError(
            f"NAME: a token named {entry['name']!r} is already in {path}: pick another name, "
            "or remove its entry there (that revokes its token) and create it again"
        )
    tokens = [*(data.get("tokens") or []), entry]
    try:
        TokensFile.model_validate({**data, "tokens": tokens})
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        msg = first["msg"].removeprefix("Value error, ")
        loc = tuple(first["loc"])
        if loc[:2] == ("tokens", len(tokens) - 1):  # the new entry: the options' fault
            option = _OPTION_OF.get(str(loc[2]) if len(loc) > 2 else "", _ENTRY_OPTIONS)
            raise UsageError(f"{option}: {msg}") from None
        where = "".join(f"key '{'.'.join(str(p) for p in loc)}': " if loc else "")
        raise UserError(f"tokens file {path}: {where}{msg}") from None

    base = old_text if old_text.strip() else "tokens:\n"
    text = base + ("" if base.endswith("\n") else "\n") + _entry_yaml(entry)
    try:
        appended_ok = (load_config_yaml(text) or {}).get("tokens") == tokens
    except yaml.YAMLError:
        appended_ok = False
    if not appended_ok:
        text = yaml.safe_dump({**data, "tokens": tokens}, sort_keys=False)
    if before_write is not None:  # validated: the caller's last word before the file
        before_write()
    try:
        # strictly atomic (no in-place fallback): the gateway reads this file, and one cut
        # by a crash or a full disk mid-write would lock its callers out or be refused whole
        write_text_atomically(path, text, new_mode=0o600)
    except OSError as exc:  # a directory that cannot be written is named in `strerror`
        why = exc.strerror or type(exc).__name__
        raise UserError(f"cannot write tokens file {path}: {why}") from None


def _check_stages_in_plan(stages: list[str]) -> None:
    """A stage the SLA plan lacks is refused before the file is written: the gateway
    refuses to start with such a token (for every caller), and `tokens create` wrote it."""
    from schemas.plan import PlanError, load_plan

    try:
        known = load_plan(settings().engine.plan).stage_duration
    except PlanError as exc:
        raise UserError(str(exc)) from None
    # a name that is no stage name at all is the model's to refuse, with its pattern
    names = [stage for stage in stages if re.fullmatch(r"[a-z][a-z0-9_]{0,63}", stage)]
    unknown = sorted({stage for stage in names if stage not in known})
    if unknown:
        raise UsageError(
            f"--stages: {', '.join(unknown)} not in the SLA plan ({', '.join(sorted(known))}); "
            "the gateway would not start with such a token"
        )


@tokens_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who uses it (logged instead of the token).")],
    role: Annotated[str, typer.Option(help="unit | orders | crm | admin")],
    unit: Annotated[str | None, typer.Option(help="For role unit: its unit_id.")] = None,
    stages: Annotated[
        list[str] | None,
        typer.Option(help="For role unit: the only stages it may post (repeat or comma-separate)."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Tokens file to append to (default: CHAINWATCH_GATEWAY__TOKENS_FILE, "
            "else <data_dir>/gateway-tokens.yaml).",
        ),
    ] = None,
) -> None:
    """Make a random token: print it once on stdout, append only its SHA-256 to the file."""
    from streams.ingest.auth import hash_token, new_token

    path = file or _default_file()
    token = new_token()
    entry: dict[str, Any] = {"name": name, "sha256": hash_token(token), "role": role}
    if unit is not None:
        entry["unit_id"] = unit
    if stages:
        entry["stages"] = [s.strip() for item in stages for s in item.split(",") if s.strip()]
        _check_stages_in_plan(entry["stages"])

    def show_token() -> None:
        """The token goes out before its digest goes in: printed after, a stdout that took
        nothing (`> /dev/full`) left a digest in the file whose token nobody had, and its
        name taken, with an internal error."""
        try:
            sys.stdout.write(token + "\n")
            sys.stdout.flush()
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise UserError(
                f"cannot write the token to stdout ({why}): nothing was added to {path}"
            ) from None

    append_token(path, entry, before_write=show_token)
    err.print(
        f"added token {name!r} (role {role}) to {cell_text(path)}; the token above is shown "
        "once, the file holds only its SHA-256",
        highlight=False,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="tokens")
