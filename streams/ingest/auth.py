"""Bearer tokens of the gateway: who may post what.

The tokens file holds only SHA-256 digests, so a leaked file (or a config dump)
does not leak a credential. Lookup hashes the presented token and compares it
against *every* digest with `hmac.compare_digest`, so neither the comparison
nor an early exit tells a caller how close a guess was. Tokens are never
logged; a principal is logged by its `name`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.common import Identifier, StageName
from schemas.files import load_config_yaml, read_config_text
from schemas.http_whitespace import HTTP_WHITESPACE
from schemas.text import capped


class Role(StrEnum):
    UNIT = "unit"
    """A stage unit: scans, unit status and EPCIS capture for its own `unit_id` only."""
    ORDERS = "orders"
    """The order desk: `/v1/orders`."""
    CRM = "crm"
    """The CRM: `/v1/customers`."""
    ADMIN = "admin"
    """Everything (integration systems, operators)."""


class TokenEntry(BaseModel):
    """One caller; `sha256` is the hex digest of its token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
    """Logged with every request it makes: no control characters (a newline in it wrote
    a line of its own into the console log)."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    role: Role
    unit_id: Identifier | None = None
    stages: Annotated[list[StageName], Field(min_length=1)] | None = None
    """A unit token's stages: when set, it may post only records of these stages."""

    @model_validator(mode="after")
    def _unit_id_iff_unit(self) -> Self:
        if self.role is Role.UNIT and self.unit_id is None:
            raise ValueError("a token with role 'unit' needs a unit_id")
        if self.role is not Role.UNIT and self.unit_id is not None:
            raise ValueError("only tokens with role 'unit' have a unit_id")
        if self.role is not Role.UNIT and self.stages is not None:
            raise ValueError("only tokens with role 'unit' have stages")
        return self

    def foreign(self, unit_id: str | None, stage: str | None) -> str | None:
        """Why this token may not post a record claiming `unit_id` and `stage`, else None."""
        if self.role is not Role.UNIT:
            return None
        if unit_id is not None and unit_id != self.unit_id:
            return f"unit {capped(unit_id, quoted=True)}"
        if self.stages is not None and stage is not None and stage not in self.stages:
            return f"stage {capped(stage, quoted=True)}"
        return None


NAMED_MOST: Final = 5
"""Repeated token names, or foreign units and stages, a refusal lists (then how many more)."""


def named_first(names: Sequence[str]) -> str:
    """The first `NAMED_MOST` of `names`, then how many more: a refusal that named every
    foreign unit of a body of thousands repeated the body's ids in one answer."""
    more = f" and {len(names) - NAMED_MOST} more" if len(names) > NAMED_MOST else ""
    return ", ".join(names[:NAMED_MOST]) + more


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenEntry]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        counts = Counter(t.name for t in self.tokens)  # one pass: a count per name was n²
        digests = [t.sha256.lower() for t in self.tokens]
        if twice := sorted(name for name, n in counts.items() if n > 1):
            # named: in a file of dozens of callers "must be unique" left the search to you;
            # the first few only, or a file of thousands repeated made a line as long
            raise ValueError(
                f"token names must be unique: {named_first([repr(t) for t in twice])} in more "
                "than one entry "
                "(rename or remove one)"
            )
        if len(set(digests)) != len(digests):
            raise ValueError("two entries have the same sha256")
        return self


TOKENS_FILE_KEYS: Final = frozenset(TokensFile.model_fields) | frozenset(TokenEntry.model_fields)
"""The keys a tokens file may write: one of them written twice is named in the error."""


class TokensFileError(Exception):
    """A tokens file that cannot be used; the message names the key, never a digest."""


def hash_token(token: str) -> str:
    """The hex SHA-256 that goes into the tokens file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class TokenRegistry:
    """Resolves a presented bearer token to its entry in constant time per entry."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._entries = [(entry.sha256.lower().encode("ascii"), entry) for entry in entries]

    @classmethod
    def load(cls, path: Path) -> TokenRegistry:
        try:
            data = load_config_yaml(read_config_text(path), known_keys=TOKENS_FILE_KEYS)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            # never the file's text: a token pasted there by mistake must not reach a log
            why = getattr(exc, "private", None) or getattr(exc, "strerror", None)
            why = why or type(exc).__name__
            raise TokensFileError(f"cannot read tokens file {path}: {why}") from None
        if data is None:  # pydantic's words were "key '<file>': ... instance of TokensFile"
            raise TokensFileError(
                f"tokens file {path} is empty: add a token with "
                f"`chainwatch tokens create NAME --role ROLE --file {path}`"
            )
        if not isinstance(data, dict):
            raise TokensFileError(f"tokens file {path}: expected a mapping with a `tokens:` list")
        try:
            parsed = TokensFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "<file>"
            raise TokensFileError(f"tokens file {path}: key {where!r}: {first['msg']}") from None
        return cls(parsed.tokens)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[TokenEntry]:
        return [entry for _, entry in self._entries]

    def authenticate(self, token: str) -> TokenEntry | None:
        presented = hash_token(token).encode("ascii")
        found: TokenEntry | None = None
        for digest, entry in self._entries:
            if hmac.compare_digest(presented, digest):
                found = entry
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None.

    RFC 6750 2.1: `"Bearer" 1*SP b64token`, so spaces (only spaces) part the scheme
    from the token; around the field value HTTP's whitespace (space, tab) is no part
    of it (the HTTP server strips it already). Anything else around the token is
    part of it, so the token is unknown (401): `str.strip()` took
    `Bearer \xa0TOKEN` or `Bearer TOKEN\x0c` for TOKEN.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.strip(HTTP_WHITESPACE).partition(" ")
    token = token.lstrip(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token
