"""One read statement at a time, checked by ClickHouse's own parser, run under limits.

`chainwatch sql`, `chainwatch status` and the loopback query server
(`query_server.py`) accept SQL typed by a person. A regex on the first word is
not enough: `SELECT 42 INTO OUTFILE '/path'` is a SELECT that writes files, and
chDB runs it in-process. So every statement goes through three gates:

1. **ClickHouse parses it** (`formatQuerySingleLine`, the statement passed as a
   bound parameter, never spliced): a syntax error or a second statement
   (`SELECT 1; DROP TABLE t`) is refused before anything runs. The parser's
   canonical text has no comments, one quoting style and no trailing `;`.
2. **A strict tokenizer checks the canonical text**: it must start with a read
   (`SELECT`, `WITH`, `SHOW`, `DESCRIBE`, `EXPLAIN`, `EXISTS`), and must not
   contain `INTO OUTFILE`, `SETTINGS`, `FORMAT`, a write keyword, or a call of a
   function that reaches files, URLs, object stores or other servers
   (`file`, `url`, `s3`, `remote`, ...; only local generators such as
   `numbers()` are allowed). Anything the tokenizer does not recognise is
   refused rather than guessed.
3. **The engine enforces it**: the client is set to `readonly = 1` after the
   limits below, so even a statement that slipped through can neither write
   nor change a setting, and a read stops at `max_execution_time`,
   `max_result_rows`, `max_result_bytes` and `max_memory_usage`. ClickHouse
   checks `max_result_bytes` only after each block, and lets the first one
   through whatever its size (one row of one huge array), so on embedded chDB
   the answer's bytes are also counted here before they are decoded into Python
   objects in the owning process.

Only the canonical text checked in 2 is executed (after a read of no rows, also
`DESCRIBE (<it>)`, to name its columns).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError, StreamFailureError

try:  # clickhouse-connect's internals, for `_bounded_answer`; pyproject allows <2, and a
    # release that moves them must not stop the sink importing: reads are then decoded
    # as `client.query` does (unbounded by bytes in their first block, as before)
    from clickhouse_connect.driver._chdbclient import ChdbClient
    from clickhouse_connect.driver.ctypes import RespBuffCls
    from clickhouse_connect.driver.transform import NativeTransform
except ImportError:  # pragma: no cover - the installed version has them
    ChdbClient = None  # type: ignore[misc,assignment]


class StatementRefused(Exception):
    """The statement is not one plain read; the message says why (shown to the user)."""


class ReadFailed(Exception):
    """ClickHouse refused or stopped the read (error, timeout, result too large)."""


@dataclass(frozen=True)
class ReadLimits:
    """Server-side limits of every read served to local tools."""

    max_execution_time_s: int = 30
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 << 20
    max_memory_usage: int = 1 << 30

    def settings(self) -> dict[str, str]:
        return {
            "max_execution_time": str(self.max_execution_time_s),
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
            "result_overflow_mode": "throw",
            "max_memory_usage": str(self.max_memory_usage),
        }


READ_STARTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
WRITE_WORDS = frozenset(
    {
        "INSERT", "ALTER", "CREATE", "DROP", "TRUNCATE", "RENAME", "ATTACH", "DETACH",
        "OPTIMIZE", "GRANT", "REVOKE", "DELETE", "UPDATE", "BACKUP", "RESTORE", "UNDROP",
        "EXCHANGE", "KILL", "SET", "USE",
    }
)  # fmt: skip
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
        "values", "view", "null", "primes", "generaterandom", "format",
    }
)  # fmt: skip
"""Table functions that only generate rows in memory or read local tables."""
OUTSIDE_FUNCTIONS = frozenset({"file", "catboostevaluate", "addresstoline", "addresstosymbol"})
"""Ordinary (scalar) functions that read files of the host."""

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
  | (?P<number>(?:0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<param>\{[A-Za-z_][A-Za-z0-9_]*:[^{}]*\})
  | (?P<op>->|::|\|\||<=|>=|!=|<>|==|[-+*/%=<>(),.\[\]{}?:^])
  | (?P<semicolon>;)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(sql: str) -> list[_Token]:
    found: list[_Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        if match is None:
            raise StatementRefused(f"unexpected character {sql[pos]!r} at position {pos}")
        kind = match.lastgroup or ""
        if kind != "space":
            found.append(_Token(kind, match.group()))
        pos = match.end()
    return found


_KNOWN_TABLE_FUNCTIONS = frozenset(
    name.lower()
    for name in re.findall(
        r"\S+",
        """
        arrowstream azureBlobStorage azureBlobStorageCluster bigquery cluster clusterAllReplicas
        cosn deltaLake deltaLakeAzure deltaLakeAzureCluster deltaLakeCluster deltaLakeLocal
        deltaLakeS3 deltaLakeS3Cluster dictionary eval executable file fileCluster filesystem
        fuzzJSON fuzzQuery gcs hdfs hdfsCluster hudi hudiCluster iceberg icebergAzure
        icebergAzureCluster icebergCluster icebergHDFS icebergHDFSCluster icebergLocal
        icebergLocalCluster icebergS3 icebergS3Cluster input jdbc loop merge
        mergeTreeAnalyzeIndexes mergeTreeAnalyzeIndexesUUID mergeTreeIndex mergeTreeProjection
        mongodb mysql odbc oss paimon postgresql prometheusQuery prometheusQueryRange python
        redis remote remoteSecure s3 s3Cluster sqlite timeSeriesData url urlCluster viewExplain
        viewIfPermitted ytsaurus
        """,
    )
)
"""Table functions of ClickHouse 26.x that are not in SAFE_TABLE_FUNCTIONS (the
engine's `system.table_functions` adds any newer ones at start, see `ReadOnlyQueries`)."""


def check_canonical(sql: str, table_functions: frozenset[str] = _KNOWN_TABLE_FUNCTIONS) -> None:
    """Refuse a canonical statement (ClickHouse's `formatQuerySingleLine`) that is not a plain read.

    Pure: the parser already guaranteed one statement without comments; this
    reads its tokens. String literals and quoted identifiers are single tokens,
    so a keyword inside them never counts.
    """
    tokens = _tokens(sql)
    if not tokens:
        raise StatementRefused("empty statement")
    first = tokens[0]
    if not (first.kind == "word" and first.text.upper() in READ_STARTS) and first.text != "(":
        raise StatementRefused(
            f"only read statements (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) are served "
            f"here, not {first.text.upper()}: this endpoint is read-only"
        )
    denied = (table_functions | OUTSIDE_FUNCTIONS) - SAFE_TABLE_FUNCTIONS
    for i, token in enumerate(tokens):
        if token.kind == "semicolon":
            raise StatementRefused("only one statement is served")
        if token.kind != "word":
            continue
        word = token.text.upper()
        calls = i + 1 < len(tokens) and tokens[i + 1].text == "("
        if calls:
            if token.text.lower() in denied:
                raise StatementRefused(
                    f"{token.text}() reads outside the store (files, URLs, other servers) "
                    "and is not served here"
                )
            continue
        if word in ("INTO", "OUTFILE"):
            raise StatementRefused("INTO OUTFILE is not served here: results go to the caller")
        if word == "SETTINGS":
            raise StatementRefused("SETTINGS is not served here: the server's read limits apply")
        if word == "FORMAT":
            raise StatementRefused("FORMAT is not served here: the client chooses the format")
        if word in WRITE_WORDS and not (i == 1 and word == "CREATE" and _shows(first)):
            # (`SHOW CREATE TABLE t` reads a table's definition: the one place CREATE reads)
            raise StatementRefused(f"{word} is not a read: this endpoint is read-only")


def _shows(first: _Token) -> bool:
    return first.kind == "word" and first.text.upper() == "SHOW"


_SYNTAX = re.compile(r"Syntax error(?: \((?P<why>[^)]*)\))?: (?P<where>.*?)(?:: In scope|$)")


def _syntax_reason(message: str) -> str:
    first = " ".join(message.split())
    if "Multi-statements are not allowed" in first:
        return "only one statement is served (multi-statements are not allowed)"
    if "Empty query" in first:
        return "empty statement"
    match = _SYNTAX.search(first)
    if match:
        return f"syntax error: {match['where'][:300]}"
    return first[:300]


SETTLED = "chainwatch:settled"
SETTLE_TRIES = 4


@dataclass(frozen=True)
class TypeName:
    name: str


@dataclass(frozen=True)
class EmptyAnswer:
    """A result of no rows with its columns, shaped as clickhouse-connect's results are
    read here (`column_names`, `column_types[i].name`, `result_rows`)."""

    column_names: tuple[str, ...]
    column_types: tuple[TypeName, ...]
    result_rows: tuple[()] = ()


class ReadOnlyQueries:
    """A ClickHouse client locked to reads, for statements typed by a person.

    Construction sets the limits, then `readonly = 1`, on the client: use a
    client (for embedded chDB: a handle) of its own, never the sink's. Threads
    may share it (the query server's do): they take turns on the client.
    """

    def __init__(self, client: Client, limits: ReadLimits | None = None) -> None:
        self.client = client
        self.limits = limits or ReadLimits()
        self._handle = threading.Lock()
        """Held for one statement and the clearing after its failure (`_query`): the query
        server's threads share this client."""
        for name, value in self.limits.settings().items():
            client.set_client_setting(name, value)
        client.set_client_setting("readonly", "1")
        try:
            names = client.query("SELECT lower(name) FROM system.table_functions").result_rows
            self._table_functions = _KNOWN_TABLE_FUNCTIONS | {str(r[0]) for r in names}
        except Exception:  # an old server without the table: the built-in list stands
            self._table_functions = _KNOWN_TABLE_FUNCTIONS

    def canonical(self, sql: str) -> str:
        """ClickHouse's own single-line form of `sql`, or `StatementRefused`."""
        if not sql.strip():
            raise StatementRefused("empty statement")
        try:
            rows = self._rows(
                "SELECT formatQuerySingleLine({statement:String})", {"statement": sql}
            )
        except Exception as exc:
            raise StatementRefused(_syntax_reason(str(exc))) from None
        return str(rows[0][0])

    def check(self, sql: str) -> str:
        """The canonical statement to run; raises `StatementRefused` with the reason."""
        canonical = self.canonical(sql)
        check_canonical(canonical, self._table_functions)
        return canonical

    def query(self, sql: str) -> Any:
        """Check, then run `sql` under the limits; `ReadFailed` when ClickHouse refuses it."""
        canonical = self.check(sql)
        started = time.monotonic()
        try:
            result = self._query(canonical, bounded=True)
        except Exception as exc:
            raise ReadFailed(_first_line(exc)) from None
        if result.column_names or result.result_rows:
            return result
        if time.monotonic() - started > self.limits.max_execution_time_s / 2:
            return result  # its DESCRIBE could take as long again: past the read's limit
        return self._header_of(canonical) or result

    def _header_of(self, canonical: str) -> EmptyAnswer | None:
        """The columns of a query that answered no rows: embedded chDB sends no header
        then, so `chainwatch sql` printed one blank line for "no rows", and a CSV had no
        header. `DESCRIBE (query)` names them for a SELECT or WITH; anything else
        (`SHOW`, `EXISTS`, ...) stays without. It evaluates the query's scalar
        subqueries again, so it is asked only after a read that took at most half of
        `max_execution_time`: the two stay within the one limit."""
        try:
            rows = self._query(f"DESCRIBE ({canonical})").result_rows
        except Exception:
            return None
        return EmptyAnswer(tuple(str(r[0]) for r in rows), tuple(TypeName(str(r[1])) for r in rows))

    def _rows(self, sql: str, parameters: dict[str, str]) -> list[Any]:
        return list(self._query(sql, parameters).result_rows)

    def _query(
        self, sql: str, parameters: dict[str, str] | None = None, *, bounded: bool = False
    ) -> Any:
        """`client.query`, read in full (`bounded`: `_bounded_answer`); after a failure
        the handle is settled first.

        On embedded chDB the rest of a result aborted mid-stream (a limit:
        `TOO_MANY_ROWS`) turned up in the next statement's stream: reproduced,
        the next statement failed with `StreamFailureError`, and leftover blocks
        could as well parse as rows of the wrong answer. So after any failure
        `_settle` reads until a statement of known answer comes back exactly, and
        the statement and its clearing hold the handle: a statement of another
        thread (the query server answers each request on its own) that ran in
        between read the rest of the cut result instead of its own answer.
        """
        with self._handle:
            try:
                if bounded and ChdbClient is not None and isinstance(self.client, ChdbClient):
                    result = self._bounded_answer(sql)
                else:
                    result = self.client.query(sql, parameters=parameters)
                result.result_rows  # noqa: B018 - the stream is read here, where it can fail
            except Exception as exc:
                # not after a connection failure: a server that is down would be asked again
                if not isinstance(exc, OperationalError) or isinstance(exc, StreamFailureError):
                    self._settle()
                raise
            return result

    def _bounded_answer(self, sql: str) -> Any:
        """The answer of `sql` on embedded chDB, refused past `max_result_bytes` before a
        byte of it is decoded. `client.query` decoded a first block of any size in the
        owning process: `SELECT arrayMap(x -> x, range(100000000))`, 0.4 GB of Native
        bytes, took the sink's process from 0.4 to 6.8 GB resident and held up its
        inserts 69 s. The answer's Native bytes (chDB hands them over whole, as for
        `client.query`; the engine's `max_memory_usage` bounds what it builds) are
        measured, then decoded by clickhouse-connect's own decoder, as `client.query`
        does. (chDB cannot stream the answer of a `SHOW`, so it is not streamed.)"""
        bound = self.limits.max_result_bytes
        data = self.client.raw_query(sql, fmt="Native")
        if len(data) > bound:
            raise ReadFailed(
                f"Limit for result exceeded: the answer is more than {_size(bound)} "
                "(max_result_bytes); ask for fewer rows or columns"
            )
        context = self.client.create_query_context(query=sql)
        source = RespBuffCls(_Answer(data))  # type: ignore[no-untyped-call]
        return NativeTransform.parse_response(source, context)

    def _settle(self) -> None:
        for _ in range(SETTLE_TRIES):
            with contextlib.suppress(Exception):  # leftovers of the failed statement: read on
                if self.client.query(f"SELECT '{SETTLED}'").result_rows == [(SETTLED,)]:
                    return

    def close(self) -> None:
        self.client.close()


class _Answer:
    """The bytes of one whole answer, as the decoder reads a response."""

    last_message: bytes | None = None
    exception_tag: str | None = None

    def __init__(self, data: bytes) -> None:
        self.gen = iter((data,))

    def close(self) -> None:
        return None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:2000] if text else type(exc).__name__
