"""The fenced `sh` blocks of README.md, examples/README.md and docs/*.md cannot rot.

Every block is listed below as RUN or CHECK (a new block fails the suite until it is
listed). Every `chainwatch` command line in any block is parsed against the real CLI
(subcommands and options exist), every `make` target exists and every file a command
names is in the repository. RUN blocks are executed as written, file by file in one
shell (so `DYE_TOKEN=...` carries over), from a scratch directory that links the
repository's `.venv`, `examples/` and `deploy/`, against the suite's Kafka broker.
Two liberties, both explicit: `chainwatch kafka start` is answered by the suite's
broker, and the gateway's port 8088 becomes a free port (other runs share the machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from docs_helpers import ROOT, user_env

from chainwatch.cli import app
from chainwatch.free_port import free_port

DOC_FILES = [
    ROOT / "README.md",
    ROOT / "examples" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
SHELL_LANGS = {"sh", "bash", "shell", "console"}

RUN = "run"
CHECK = "check"
#: (file, how the block's first command line starts) -> what the test does with it
BLOCKS: dict[tuple[str, str], str] = {
    (
        "README.md",
        "make demo",
    ): CHECK,  # runs until Ctrl-C; tests/status and the demo tests cover it
    ("README.md", ".venv/bin/chainwatch replay"): RUN,
    ("README.md", ". .venv/bin/activate"): RUN,
    ("README.md", "curl -sS -X POST http://127.0.0.1:8088/v1/scans"): RUN,
    ("README.md", "make install"): CHECK,  # the suite itself
    ("examples/README.md", ". .venv/bin/activate"): CHECK,  # the same replay as README's
    ("docs/ingest.md", "DYE_TOKEN=$(chainwatch tokens create"): CHECK,  # gateway in foreground
    ("docs/ingest.md", "curl -sS -X POST http://127.0.0.1:8088/v1/scans"): CHECK,  # as README's
    ("docs/simulator.md", "chainwatch simulate --out sim.ndjson"): RUN,  # the first line only
    ("docs/import.md", "chainwatch import examples/import/orders.csv"): RUN,
    ("docs/import.md", "chainwatch import examples/import/scans.csv"): CHECK,  # replay, Kafka
    ("docs/reliability.md", ".venv/bin/python bench/faults.py"): CHECK,  # ~40 min, own broker
    # two replays (~1 min): tests/backtest/test_backtest_replay.py runs the same backtest
    ("docs/backtest.md", "cat examples/example_*.ndjson > march.ndjson"): CHECK,
    # a receiver's outage to recover from: tests/sinks/test_webhook_resend.py runs both
    ("docs/alert-channels.md", "chainwatch deliveries given-up --since 24h"): CHECK,
    # writes silences to Kafka: tests/sinks/test_webhook_silences_e2e.py runs these commands
    ("docs/alert-channels.md", "chainwatch silences add --unit KNIT-03"): CHECK,
    ("README.md", "chainwatch backtest march.ndjson"): CHECK,  # as docs/backtest.md's
    # two replays; tests/foundation/test_replay_cli.py runs the --sink one on the same file
    ("docs/replay.md", "cat examples/example_*.ndjson > march.ndjson"): CHECK,
    # listing and deleting a kept run (it needs one): tests/foundation/test_runs_cli.py
    ("docs/replay.md", "chainwatch runs list"): CHECK,
    # deleting a failed run without chainwatch: a Kafka distribution's tools (not shipped here)
    ("docs/replay.md", "kafka-topics.sh --bootstrap-server 127.0.0.1:19092 --delete"): CHECK,
    # needs a sink's store with dead letters: tests/docs/test_store_docs.py runs both queries
    ("docs/dead-letters.md", "chainwatch sql"): CHECK,
    ("docs/scaling.md", "chainwatch plan-capacity --rate 500"): RUN,
    ("docs/scaling.md", ".venv/bin/python bench/fleet.py"): CHECK,  # tens of minutes
    # the reader's own secured cluster: tests/foundation/test_kafka_sasl.py runs one
    ("docs/scaling.md", "export CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=b-1.kafka"): CHECK,
    # an encrypted client key: tests/foundation/test_kafka_mtls.py runs doctor with one
    ("docs/scaling.md", "export CHAINWATCH_KAFKA__SECURITY_PROTOCOL=SSL"): CHECK,
}
#: what a RUN of each file must print (stdout and stderr together)
EXPECTED_OUTPUT = {
    "README.md": ["same: 3 alerts", '"accepted":2,"rejected":0'],
    "docs/simulator.md": ["scans"],
    "docs/import.md": ["import: 2 of 2 rows to orders.ndjson", "exit 3: some rows were rejected"],
    "docs/scaling.md": [
        "partitions per topic",
        "assumptions:",
        "records/s per worker",
        "86,420,000",  # the orders in state the page's prose quotes (20,000 in flight)
        "760.5 GB",
    ],
}


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    text: str

    @property
    def key(self) -> tuple[str, str] | None:
        """Its entry in BLOCKS (None when unlisted)."""
        first = _first_command(self.text)
        for file, start in BLOCKS:
            if file == self.file and first.startswith(start):
                return (file, start)
        return None


def _first_command(text: str) -> str:
    for line in text.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            return line
    return ""


def shell_blocks() -> list[Block]:
    found = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.S | re.M):
            if match.group(1) in SHELL_LANGS:
                line = text.count("\n", 0, match.start()) + 1
                found.append(Block(str(path.relative_to(ROOT)), line, match.group(2)))
    return found


def _logical_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    in_heredoc: str | None = None
    for line in joined.splitlines():
        if in_heredoc is not None:
            if line.strip() == in_heredoc:
                in_heredoc = None
            continue
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            in_heredoc = heredoc.group(1)
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _chainwatch_invocations(line: str) -> list[list[str]]:
    """The arguments of each `chainwatch` command of a shell line: a word `chainwatch` (or
    `.../chainwatch`) that starts a command (the line's start, after an operator such as
    `|`, `;`, `&&`, `$(`, or after `VAR=value` words) up to the next operator outside
    quotes, so a quoted SQL query keeps its `count()` and `>`."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    calls: list[list[str]] = []
    current: list[str] | None = None
    starts = True
    for token in lexer:
        operator = bool(token) and all(c in lexer.punctuation_chars for c in token)
        if operator:
            current, starts = None, True
        elif current is not None:
            current.append(token)
        elif starts and re.fullmatch(r"(?:\S*/)?chainwatch", token):
            current = []
            calls.append(current)
        else:
            starts = starts and bool(re.fullmatch(r"\w+=\S*", token))
    return calls


def _check_invocation(args: list[str]) -> None:
    command: Any = typer.main.get_command(app)  # typer vendors its own click: duck-typed
    ctx_path = ["chainwatch"]
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            break
        ctx_path.append(rest.pop(0))
        command = sub
    if (
        hasattr(command, "commands")
        and rest
        and not rest[0].startswith("-")
        and not getattr(command, "invoke_without_command", False)
    ):
        pytest.fail(f"`{' '.join(ctx_path)} {rest[0]}`: no such command")
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    known |= {opt for param in command.params for opt in getattr(param, "secondary_opts", [])}
    for token in rest:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            assert name in known, f"`{' '.join(ctx_path)}` has no option {name}"


def _check_block_statically(block: Block) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for line in _logical_lines(block.text):
        for call in _chainwatch_invocations(line):
            _check_invocation(call)
        make = re.match(r"^make\s+([\w-]+)", line)
        if make:
            assert re.search(rf"^{make.group(1)}:", makefile, re.M), (
                f"no make target {make.group(1)}"
            )
        for word in shlex.split(line.replace("$(", " ").replace(")", " ")):
            if re.match(r"^(examples|deploy|schemas|docs)/[\w./-]+\.\w+$", word):
                assert (ROOT / word).exists(), f"{block.file}:{block.line}: {word} does not exist"
        marker = re.search(r"pytest -m \"not (\w+)\"", line)
        if marker:
            pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
            assert f'"{marker.group(1)}:' in pyproject, f"no pytest marker {marker.group(1)}"


BLOCK_LIST = shell_blocks()


def test_every_shell_block_of_the_docs_is_listed() -> None:
    unlisted = [
        f"{b.file}:{b.line} {_first_command(b.text)!r}" for b in BLOCK_LIST if b.key is None
    ]
    assert not unlisted, "list these blocks in BLOCKS (RUN or CHECK): " + "; ".join(unlisted)
    stale = set(BLOCKS) - {b.key for b in BLOCK_LIST}
    assert not stale, f"BLOCKS lists blocks no document has any more: {sorted(stale)}"


@pytest.mark.parametrize("block", BLOCK_LIST, ids=lambda b: f"{b.file}:{b.line}")
def test_every_command_in_the_docs_exists(block: Block) -> None:
    _check_block_statically(block)


PRELUDE = """\
set -eo pipefail
chainwatch() {  # the suite's broker answers for `chainwatch kafka start`
    if [ "${1-} ${2-}" = "kafka start" ]; then echo "kafka ready (the suite's broker)";
    else command chainwatch "$@"; fi
}
wait_http() {  # a condition with a deadline: the gateway answers /healthz
    for _ in $(seq 1 900); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no answer from $1 within 90 s" >&2; return 1
}
"""


def _script(blocks: list[Block], port: int) -> str:
    parts = [PRELUDE]
    doc = (ROOT / blocks[0].file).read_text(encoding="utf-8")
    if re.search(r"^> .*\. \.venv/bin/activate", doc, re.M):  # the doc's own set-up note
        parts.append(". .venv/bin/activate")
    for block in blocks:
        text = block.text.replace("127.0.0.1:8088", f"127.0.0.1:{port}")
        if block.key == ("docs/simulator.md", "chainwatch simulate --out sim.ndjson"):
            text = "\n".join(text.splitlines()[:2])  # the file destination only
        parts.append(f"echo '== {block.file}:{block.line}'\n{text}")
        if re.search(r"chainwatch gateway [^\n]*&\s*(#.*)?$", text, re.M):
            parts.append(f"wait_http http://127.0.0.1:{port}/healthz")
    return "\n".join(parts) + "\n"


RUN_FILES = sorted({key[0] for key, action in BLOCKS.items() if action == RUN})


@pytest.mark.integration
@pytest.mark.parametrize("doc", RUN_FILES)
def test_the_runnable_blocks_work_as_written(
    doc: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    work = tmp_path / "clone"
    work.mkdir()
    for name in (".venv", "examples", "deploy"):
        (work / name).symlink_to(ROOT / name)
    port = free_port()
    run = uuid.uuid4().hex[:8]
    env = user_env(
        tmp_path / "data",
        CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        CHAINWATCH_KAFKA__TOPIC_PREFIX=f"t{run}.",
        CHAINWATCH_ENGINE__APP_ID=f"cw-docs-{run}",
        CHAINWATCH_GATEWAY__PORT=str(port),
        CHAINWATCH_GATEWAY__TRANSACTIONAL_ID=f"cw-docs-{run}-gw",
    )
    blocks = [b for b in BLOCK_LIST if b.key is not None and b.file == doc and BLOCKS[b.key] == RUN]
    script = _script(blocks, port)
    log = tmp_path / "output.log"
    with log.open("w", encoding="utf-8") as sink:
        # its own session: the gateway it leaves in the background dies with the group
        proc = subprocess.Popen(
            ["bash", "-c", script], cwd=work, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    shown = log.read_text(encoding="utf-8")
    assert code == 0, f"{doc} failed (exit {code}, None = 240 s deadline):\n{shown[-3000:]}"
    for expected in EXPECTED_OUTPUT.get(doc, []):
        assert expected in shown, f"{doc}: {expected!r} not in the output:\n{shown[-3000:]}"


def _files_written_in_place(line: str) -> set[str]:
    """The files a command line writes in the directory it runs in: `> name`, `--out name`,
    `--rejects name`, `--file name` (a bare name: no directory, no variable)."""
    targets = re.findall(r"(?:>|--out|--rejects|--file)\s+([^\s;&|)]+)", line)
    return {t for t in targets if re.fullmatch(r"[\w.-]+\.\w+", t)}


def test_every_file_a_block_writes_in_the_clone_is_git_ignored() -> None:
    """A reader follows the docs from the clone's root: what a step leaves there must never
    show in `git status` nor be committed by the next `git add -A`."""
    ignored = set((ROOT / ".gitignore").read_text(encoding="utf-8").split())
    written = {
        (f"/{name}", f"{b.file}:{b.line}")
        for b in BLOCK_LIST
        for line in _logical_lines(b.text)
        for name in _files_written_in_place(line)
    }
    assert len(written) >= 5
    not_ignored = sorted(where + " " + name for name, where in written if name not in ignored)
    assert not not_ignored, f"add these to .gitignore: {not_ignored}"
