"""The subscriptions file: who receives which alerts, where, signed with what.

A bad file stops `chainwatch notify` at start-up with the offending key named,
never with a secret in the message. Endpoint URLs must be http(s) and, when an
allow-list is configured, point at an allowed host: the file may come from a
less trusted place than the process that makes the requests. An address written
in the URL must be one the `TargetPolicy` permits (public, or an allowed
network); names are checked on what they resolve to, at each connection
(targets.py).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from standardwebhooks import Webhook

from schemas.alerts import Alert, AlertStatus, AlertType, Severity
from schemas.common import Identifier
from schemas.files import entry_lines, load_config_yaml, read_config_text
from schemas.plan import Tier
from schemas.urls import NUMERIC_HOST_REASON, UrlError, fixed_reason, split_url
from sinks.webhooks.formats import DEFAULT_LINK_TEMPLATE, PAGERDUTY_URL, check_link_template
from sinks.webhooks.targets import ALLOW_SETTING, TargetPolicy

MIN_SECRET_BYTES = 16

MAX_ENDPOINTS: Final = 100
"""Endpoints one subscriptions file may name. Each is its own pipeline (its own Kafka
consumer group on `alerts`, HTTP client, resolver and workers, notifier.py), so a
notifier's open files and memory grow with them: measured ~2 fds (4 at its start) and
~0.9 MB an endpoint before any delivery, 100 endpoints 310 fds at the peak of the start
and 154 MB (docs/sinks.md). 500 took 512 MB, 1,264 open files (past a default `ulimit
-n` of 1024, where a notifier fails at random) and over 60 s of warm-up. At 100 a
notifier stays well inside both; more endpoints go to more notifiers, a file each."""

_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")

_HTTPX_REASONS: tuple[tuple[str, str], ...] = (
    ("non-printable", "a control character (a tab, newline, NUL, DEL, ...)"),
    ("URL too long", "longer than 65,536 characters"),
    ("too long", "a part longer than 65,536 characters"),
    ("IPv4", NUMERIC_HOST_REASON),
    ("IPv6", "bad IPv6 literal in [...]"),
    ("IDNA", "a host that is no valid international domain name (IDNA)"),
    ("port", "port not a number"),
)
"""A fragment of `httpx.InvalidURL`'s message (httpx 0.29), and the reason said instead:
its message quotes the host, or a control character and its position, which may fall in
the password (`at position 15`)."""


class SubscriptionError(Exception):
    """The subscriptions file cannot be used; the message names the key."""


_FILTER_VALUES: dict[str, frozenset[str]] = {
    "types": frozenset(t.value for t in AlertType),
    "severities": frozenset(s.value for s in Severity),
    "statuses": frozenset(s.value for s in AlertStatus),
    "customer_tiers": frozenset(get_args(Tier)),
}


def only_known(values: list[str], known: frozenset[str], what: str) -> list[str]:
    """`values`, or a ValueError naming those no alert has and the ones there are: a
    filter or silence with a typo (`stage_overdu`) would match nothing, and say nothing."""
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(
            f"{', '.join(map(repr, unknown))} is no alert's {what}; use {', '.join(sorted(known))}"
        )
    return values


class Filters(BaseModel):
    """Every listed field must match (AND); a list matches any of its values (OR).

    An empty or absent list matches everything. `stages` never matches alerts
    without a stage (unit alerts); `customer_*` never match alerts without a customer;
    `units` matches an alert's unit or the unit whose downtime caused it (a floor's own
    endpoint), never an alert with neither (an order late before reaching any unit).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    types: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)
    statuses: list[str] = Field(default_factory=list)
    customer_tiers: list[str] = Field(default_factory=list)
    customer_ids: list[str] = Field(default_factory=list)
    stages: list[str] = Field(default_factory=list)
    units: list[Identifier] = Field(default_factory=list)

    @field_validator("types", "severities", "statuses", "customer_tiers")
    @classmethod
    def _known(cls, values: list[str], info: ValidationInfo) -> list[str]:
        """A value no alert can have (a typo: `stage_overdu`) would make the endpoint
        silently receive nothing: refused at load, naming the values there are."""
        return only_known(values, _FILTER_VALUES[str(info.field_name)], "value here")

    def matches(self, alert: Alert) -> bool:
        customer = alert.customer
        checks: Sequence[tuple[list[str], str | None]] = (
            (self.types, alert.type.value),
            (self.severities, alert.severity.value),
            (self.statuses, alert.status.value),
            (self.customer_tiers, None if customer is None else customer.tier),
            (self.customer_ids, None if customer is None else customer.customer_id),
            (self.stages, alert.stage),
        )
        return all(not wanted or value in wanted for wanted, value in checks) and (
            not self.units or not alert.units.isdisjoint(self.units)
        )


Format = Literal["standard", "slack", "teams", "pagerduty"]


class Endpoint(BaseModel):
    """One receiver.

    `format: standard` (the default; `json` is its former name) is Standard
    Webhooks, signed: `secret` inline or `secret_env` naming an environment
    variable is required. `slack`, `teams` and `pagerduty` post what those
    services take (formats.py); they verify no signature, so a secret is
    optional (given, the requests are signed all the same). `pagerduty` needs
    `routing_key_env` (or `routing_key`) and defaults `url` to the Events API v2.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    url: SecretStr
    """Secret-ish: Slack and Teams URLs carry a token; logs show only the host."""
    secret: SecretStr | None = None
    secret_env: str | None = None
    format: Format = "standard"
    routing_key: SecretStr | None = None
    routing_key_env: str | None = None
    """PagerDuty integration key (a secret: never logged nor dead-lettered)."""
    link_template: str = DEFAULT_LINK_TEMPLATE
    """The order drill-down link in slack/teams/pagerduty messages (formats.py)."""
    filters: Filters = Filters()
    concurrency: int = Field(default=1, ge=1, le=64)
    """Requests in flight; 1 keeps the endpoint's deliveries in alert order, and so holds
    every later alert behind one that is retried, up to the retry horizon (docs/sinks.md;
    `chainwatch_webhook_oldest_pending_seconds` shows it)."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("format") == "json":
                data["format"] = "standard"
            if data.get("format") == "pagerduty" and "url" not in data:
                data["url"] = PAGERDUTY_URL
        return data

    @model_validator(mode="after")
    def _url_and_secret(self) -> Endpoint:
        check_url(self.url.get_secret_value())
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("give only one of secret or secret_env")
        if self.format == "standard" and self.secret is None and self.secret_env is None:
            raise ValueError("format standard is signed: give exactly one of secret or secret_env")
        has_key = self.routing_key is not None or self.routing_key_env is not None
        if self.format == "pagerduty":
            if (self.routing_key is None) == (self.routing_key_env is None):
                raise ValueError(
                    "format pagerduty: give exactly one of routing_key or routing_key_env"
                )
        elif has_key:
            raise ValueError("routing_key and routing_key_env are for format pagerduty only")
        check_link_template(self.link_template)
        return self

    @property
    def signed(self) -> bool:
        return self.secret is not None or self.secret_env is not None

    def pagerduty_routing_key(self) -> str:
        """The routing key ('' for other formats); checked set and usable at load.

        An empty key (`routing_key: ''`), or one with whitespace or a control character
        (a file's newline), passed the load and PagerDuty then refused every alert (400)."""
        if self.routing_key is not None:
            value, source = self.routing_key.get_secret_value(), "routing_key"
        elif self.routing_key_env is None:
            return ""
        else:
            env = os.environ.get(self.routing_key_env)
            if not env:
                raise SubscriptionError(
                    f"endpoint {self.name!r}: environment variable {self.routing_key_env} "
                    "is not set"
                )
            value, source = env, f"environment variable {self.routing_key_env}"
        if not value or not value.isprintable() or any(c.isspace() for c in value):
            raise SubscriptionError(
                f"endpoint {self.name!r}: {source} is no PagerDuty routing key: it is empty "
                "or has whitespace or a control character"
            )
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url.get_secret_value()).hostname or ""

    def signing_secret(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        assert self.secret_env is not None
        value = os.environ.get(self.secret_env)
        if not value:
            raise SubscriptionError(
                f"endpoint {self.name!r}: environment variable {self.secret_env} is not set"
            )
        return value


def check_url(url: str) -> None:
    """Raise ValueError, never quoting `url` (Slack and Teams URLs carry a token), unless
    it is an http(s) URL the sender can use: a port in 1-65535, no control character, a
    host that is an address or a name of `[A-Za-z0-9_-]` labels once IDNA-encoded.

    Such a URL passed `notify --check` and then failed at every delivery: port 65536,
    `abc` or a NUL gave every alert up as a `processing_error` with a trace in the log;
    port 0 or a space in the host retried each one for the whole retry horizon."""
    try:
        parts, port = split_url(url, dotted_ipv4_only=True)
    except UrlError as exc:  # a fixed reason: urlsplit's own may quote the password
        raise ValueError(f"url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an http:// or https:// URL with a host")
    if port == 0:
        raise ValueError("url has port 0: give a port in 1-65535, or none")
    host = parts.hostname
    if literal_address(host) is None:
        try:
            encoded = host.rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:  # an empty label (`a..b`), one over 63 characters
            encoded = ""
        labels = encoded.split(".")
        # DNS's 253 characters count the name as sent (`xn--...`), not as written
        if len(encoded) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError(
                "url has a host that is no DNS name (letters, digits, `-` and `_` in "
                "dot-separated labels of 1-63 characters, at most 253 in all)"
            )
    try:  # last: our own reasons first, httpx's message names the host it refuses
        parsed = httpx.URL(url)  # what the sender parses: control characters, a bad IPv6 address
    except httpx.InvalidURL as exc:  # its text: a control character and its place, the host
        raise ValueError(
            f"url is not a valid URL ({fixed_reason(str(exc), _HTTPX_REASONS)})"
        ) from None
    try:  # every request decodes an `xn--` label (idna's IDNA 2008): `xn--ls8h` gave a trace
        parsed.host  # noqa: B018 (read for its check)
    except UnicodeError:  # per alert as a processing error; its text quotes the label
        raise ValueError(
            "url is not a valid URL (a host that is no valid international domain name (IDNA))"
        ) from None


NAMES_TWICE: Final = "endpoint_names_twice"
"""The pydantic error type of a name given to more than one endpoint; its context holds
`twice`: each such name and the indexes of its entries."""

NAMES_SHOWN: Final = 5
ENTRIES_SHOWN: Final = 3
"""How many names, and entries of each, the error lists: a file of thousands of entries
of one name (aliases of one anchor, a few bytes each) made one line of megabytes."""


def names_twice(twice: dict[str, list[int]], lines: Sequence[int] = ()) -> str:
    """`names must be unique: 'ops' in endpoints.0 (line 2) and endpoints.2 (line 8)`; an
    entry's line when `lines` (each entry's, in order) has it. Bounded, however many."""

    def entry(index: int) -> str:
        where = f" (line {lines[index]})" if index < len(lines) else ""
        return f"endpoints.{index}{where}"

    def entries(indexes: list[int]) -> str:
        shown = [entry(i) for i in indexes[:ENTRIES_SHOWN]]
        if len(indexes) > ENTRIES_SHOWN:
            return f"{', '.join(shown)} and {len(indexes) - ENTRIES_SHOWN} more"
        *others, last = shown
        return f"{', '.join(others)} and {last}"

    named = "; ".join(
        f"{name!r} in {entries(indexes)}" for name, indexes in list(twice.items())[:NAMES_SHOWN]
    )
    more = f"; and {len(twice) - NAMES_SHOWN} more names" if len(twice) > NAMES_SHOWN else ""
    return f"names must be unique: {named}{more} (rename or remove one)"


class Subscriptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    link_template: str | None = None
    """Default `link_template` of the endpoints that set none (your Grafana address)."""
    endpoints: list[Endpoint] = Field(min_length=1)

    @field_validator("link_template")
    @classmethod
    def _check_default_link(cls, template: str | None) -> str | None:
        """Checked here too, so a bad file-wide template is named where it is written:
        it was reported only through its copy in each endpoint, as `endpoints.0`'s fault."""
        if template is not None:
            check_link_template(template)
        return template

    @model_validator(mode="before")
    @classmethod
    def _default_link(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("link_template"), str):
            template = data["link_template"]
            endpoints = data.get("endpoints")
            if isinstance(endpoints, list):
                data = {
                    **data,
                    "endpoints": [
                        {"link_template": template, **e} if isinstance(e, dict) else e
                        for e in endpoints
                    ],
                }
        return data

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, endpoints: list[Endpoint]) -> list[Endpoint]:
        """Named with its entries: "endpoint names must be unique" left the search through
        the file to you. A name is a label (`[A-Za-z0-9._-]`, in logs and metrics), never
        a secret; the loader adds the entries' lines (`load_subscriptions`)."""
        indexes: dict[str, list[int]] = {}
        for index, endpoint in enumerate(endpoints):  # one pass: a count per name was n²
            indexes.setdefault(endpoint.name, []).append(index)
        twice = {name: found for name, found in indexes.items() if len(found) > 1}
        if twice:
            raise PydanticCustomError(
                NAMES_TWICE, "{text}", {"text": names_twice(twice), "twice": twice}
            )
        return endpoints


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Exact host, or `*.example.com` for any subdomain of example.com."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


_FILE_KEYS: Final = frozenset(
    key for model in (Subscriptions, Endpoint, Filters) for key in model.model_fields
)
"""The keys a subscriptions file may write: one of them written twice is named in the error."""


def too_many(count: int) -> str:
    """Why a file of `count` endpoints is refused (more than `MAX_ENDPOINTS`)."""
    return (
        f"{count:,} endpoints, more than the {MAX_ENDPOINTS} a notifier runs (each is its "
        "own Kafka consumer, HTTP client and workers: its open files and memory grow with "
        "them, docs/sinks.md); split them across notifiers, a subscriptions file each"
    )


def read_subscriptions(path: Path) -> Subscriptions:
    """Read the file as written (its keys, unique names, URLs' form, which secret each
    endpoint is signed with): nothing checked against the environment or the settings,
    so no secret is read (a listing that sends nothing: `deliveries given-up`)."""
    try:
        text = read_config_text(Path(path))
        data = load_config_yaml(text, known_keys=_FILE_KEYS)
    except OSError as exc:
        raise SubscriptionError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SubscriptionError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:  # what and where, never the file's text (its secrets)
        why = getattr(exc, "private", None) or "not valid YAML"
        raise SubscriptionError(f"{path}: {why}") from None
    listed = data.get("endpoints") if isinstance(data, dict) else None
    if isinstance(listed, list) and len(listed) > MAX_ENDPOINTS:  # before checking each
        raise SubscriptionError(f"{path}: endpoints: {too_many(len(listed))}")
    try:
        subs = Subscriptions.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<file>"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == NAMES_TWICE:  # with the entries' lines, read again only now
            msg = names_twice(first["ctx"]["twice"], entry_lines(text, "endpoints"))
        said = msg if msg.startswith(where) else f"{where}: {msg}"  # `link_template: ...`
        raise SubscriptionError(f"{path}: {said}") from None
    return subs


def load_subscriptions(
    path: Path,
    allowed_hosts: Sequence[str] = (),
    targets: TargetPolicy | None = None,
    stages: Collection[str] | None = None,
) -> Subscriptions:
    """Read and check the file for sending: every endpoint's address against the rules,
    its secret checked to be set and usable, and its `stages` filter against the plan's
    `stages` when given."""
    subs = read_subscriptions(path)
    for endpoint in subs.endpoints:
        unknown = [] if stages is None else sorted(set(endpoint.filters.stages) - set(stages))
        if unknown:  # a typo (`dying`) would make the endpoint silently receive nothing
            raise SubscriptionError(
                f"{path}: endpoint {endpoint.name!r}: filters.stages: "
                f"{', '.join(map(repr, unknown))} is not a stage of the SLA plan "
                f"({', '.join(sorted(stages or ()))})"
            )
        if allowed_hosts and not host_allowed(endpoint.host, allowed_hosts):
            raise SubscriptionError(
                f"{path}: endpoint {endpoint.name!r}: host {endpoint.host} is not in "
                "CHAINWATCH_WEBHOOKS__ALLOWED_HOSTS"
            )
        address = literal_address(endpoint.host)
        if address is not None and not (targets or TargetPolicy()).permits(address):
            raise SubscriptionError(
                f"{path}: endpoint {endpoint.name!r}: {address} is not a public address "
                f"(private, loopback, link-local, multicast or reserved); allow it with "
                f"{ALLOW_SETTING}"
            )
        endpoint.pagerduty_routing_key()  # set, or a clear error naming the variable
        if not endpoint.signed:
            continue
        secret = endpoint.signing_secret()
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
            Webhook(secret)
            valid = len(key) >= MIN_SECRET_BYTES
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise SubscriptionError(
                f"{path}: endpoint {endpoint.name!r}: secret is not a valid signing secret "
                f"(whsec_ followed by base64 of at least {MIN_SECRET_BYTES} bytes)"
            ) from None
    return subs
