"""H4: tokens are made by `chainwatch tokens create` (shown once, only digests stored),
public example tokens never guard a gateway beyond loopback, compose publishes nothing
but the gateway on loopback, and the docs hand out no public tokens."""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docs_helpers import ROOT, run_cli, user_env
from read_only_dirs import refuse_new_files

from chainwatch.commands.tokens import EXAMPLE_TOKEN_DIGESTS, is_loopback
from streams.ingest.auth import TokenRegistry

EXAMPLE_FILE = ROOT / "deploy" / "gateway" / "tokens.example.yaml"


@pytest.mark.slow
def test_create_prints_the_token_once_and_stores_only_its_digest(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    env = user_env(tmp_path / "data")

    first = run_cli(
        "tokens", "create", "dye-house-01", "--role", "unit", "--unit", "DYE-01",
        "--file", str(tokens), env=env,
    )  # fmt: skip
    second = run_cli(
        "tokens", "create", "order-desk", "--role", "orders", "--file", str(tokens), env=env
    )

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    token_1, token_2 = first.stdout.strip(), second.stdout.strip()
    assert first.stdout == token_1 + "\n"  # stdout is the token alone: TOKEN=$(...) works
    assert len(token_1) >= 40
    assert token_1 != token_2
    text = tokens.read_text(encoding="utf-8")
    assert token_1 not in text
    assert token_2 not in text
    assert token_1 not in first.stderr
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    registry = TokenRegistry.load(tokens)
    dye = registry.authenticate(token_1)
    desk = registry.authenticate(token_2)
    assert dye is not None
    assert dye.name == "dye-house-01"
    assert dye.unit_id == "DYE-01"
    assert desk is not None
    assert desk.role == "orders"
    assert hashlib.sha256(token_1.encode()).hexdigest() in text


@pytest.mark.slow
def test_create_keeps_comments_and_refuses_what_the_gateway_would_refuse(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("# our callers\ntokens:\n", encoding="utf-8")
    env = user_env(tmp_path / "data")
    assert (
        run_cli(
            "tokens", "create", "crm", "--role", "crm", "--file", str(tokens), env=env
        ).returncode
        == 0
    )
    before = tokens.read_text(encoding="utf-8")
    assert before.startswith("# our callers\n")

    for args, blamed in (
        # the name is taken: named, with what to do (it blamed the file, named nothing)
        (
            ["crm", "--role", "crm"],
            f"error: NAME: a token named 'crm' is already in {tokens}: "
            "pick another name, or remove its entry",
        ),
        (["boss", "--role", "boss"], "error: --role: "),  # no such role (not the file's fault)
        (["dye", "--role", "unit"], "error: --role, --unit, --stages: "),  # a unit needs its unit
    ):
        refused = run_cli("tokens", "create", *args, "--file", str(tokens), env=env)
        assert refused.returncode == 2, args  # the command line's fault: a usage error
        assert refused.stdout == ""  # no token handed out for an entry never stored
        assert len(refused.stderr.strip().splitlines()) == 1
        assert blamed in refused.stderr, refused.stderr
        assert refused.stderr.rstrip().endswith("(see `chainwatch tokens create --help`)")
        assert tokens.read_text(encoding="utf-8") == before


@pytest.mark.slow
def test_a_unit_token_can_be_bound_to_stages(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    env = user_env(tmp_path / "data")
    made = run_cli(
        "tokens", "create", "dye", "--role", "unit", "--unit", "DYE-01",
        "--stages", "dyeing,knitting", "--file", str(tokens), env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    entry = TokenRegistry.load(tokens).authenticate(made.stdout.strip())
    assert entry is not None
    assert entry.stages == ["dyeing", "knitting"]
    bad = run_cli(
        "tokens", "create", "dye2", "--role", "unit", "--unit", "DYE-02",
        "--stages", "Bad Stage", "--file", str(tokens), env=env,
    )  # fmt: skip
    assert bad.returncode == 2  # --stages' value: a usage error
    assert "'^[a-z][a-z0-9_]{0,63}$'" in bad.stderr  # the message is printed as written
    # a stage the plan lacks was written, and then the gateway refused to start at all
    before = tokens.read_bytes()
    unknown = run_cli(
        "tokens", "create", "dye3", "--role", "unit", "--unit", "DYE-03",
        "--stages", "dyeing,dying", "--file", str(tokens), env=env,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert "error: --stages: dying not in the SLA plan (dyeing, knitting," in unknown.stderr
    assert len(unknown.stderr.splitlines()) == 1
    assert unknown.stdout == ""  # no token shown: none was made
    assert tokens.read_bytes() == before


def test_the_example_digests_are_the_example_files_and_public() -> None:
    data = yaml.safe_load(EXAMPLE_FILE.read_text(encoding="utf-8"))
    assert {t["sha256"] for t in data["tokens"]} == EXAMPLE_TOKEN_DIGESTS
    public = {f"example-{kind}-token" for kind in ("dye", "orders", "crm", "admin")}
    assert {hashlib.sha256(t.encode()).hexdigest() for t in public} == EXAMPLE_TOKEN_DIGESTS


@pytest.mark.slow
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20"])
def test_a_gateway_beyond_loopback_refuses_example_tokens(tmp_path: Path, host: str) -> None:
    own = tmp_path / "tokens.yaml"
    env = user_env(tmp_path / "data", CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9")
    assert (
        run_cli(
            "tokens", "create", "mine", "--role", "admin", "--file", str(own), env=env
        ).returncode
        == 0
    )
    example = yaml.safe_load(EXAMPLE_FILE.read_text(encoding="utf-8"))["tokens"][1]
    with own.open("a", encoding="utf-8") as handle:  # one public digest among real ones
        handle.write(f"  - name: {example['name']}\n    sha256: {example['sha256']}\n")
        handle.write(f"    role: {example['role']}\n")

    result = run_cli("gateway", "--host", host, "--tokens", str(own), env=env, timeout=60)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "public example token" in lines[0]
    assert "order-desk" in lines[0]
    assert "chainwatch tokens create" in lines[0]


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))


def test_compose_publishes_only_the_gateway_on_loopback_and_has_no_fixed_password() -> None:
    text = (ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert "ports" not in services["kafka"]
    assert "ports" not in services["clickhouse"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert services["gateway"]["ports"] == ["127.0.0.1:8088:8088"]
    assert "tokens.example.yaml" not in str(services["gateway"].get("volumes"))
    assert services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith(
        "${CLICKHOUSE_PASSWORD:?"
    )
    url = compose["x-chainwatch"]["environment"]["CHAINWATCH_CLICKHOUSE__URL"]
    assert "${CLICKHOUSE_PASSWORD:?" in url
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "deploy/.env" in ignored
    assert "deploy/gateway/tokens.yaml" in ignored


def test_the_docs_hand_out_no_public_tokens() -> None:
    docs = [ROOT / "README.md", ROOT / "examples" / "README.md", *(ROOT / "docs").glob("*.md")]
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        assert not re.search(r"example-(dye|orders|crm|admin)-token", text), doc
        assert not re.search(r"--host 0\.0\.0\.0[^\n]*tokens\.example", text), doc
        assert not re.search(r"tokens\.example\.yaml[^\n]*--host 0\.0\.0\.0", text), doc


def test_the_example_tokens_stay_usable_on_loopback(tmp_path: Path) -> None:
    from chainwatch.commands.tokens import refuse_example_tokens
    from chainwatch.errors import UserError

    for host in ("127.0.0.1", "localhost", "::1"):
        refuse_example_tokens(host, EXAMPLE_FILE)  # local trials keep working
    with pytest.raises(UserError, match="public example token"):
        refuse_example_tokens("0.0.0.0", EXAMPLE_FILE)


@pytest.mark.slow
def test_the_gateway_reads_the_file_tokens_create_writes_by_default(tmp_path: Path) -> None:
    """`tokens create` without `--file` writes `<data_dir>/gateway-tokens.yaml`; the gateway
    started without `--tokens` refused to start instead of reading it."""
    env = user_env(tmp_path / "data", CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9")
    default = tmp_path / "data" / "gateway-tokens.yaml"

    missing = run_cli("gateway", env=env, timeout=60)
    assert missing.returncode == 1
    assert "chainwatch tokens create" in missing.stderr
    assert str(default) in missing.stderr.replace("\n", "")

    assert run_cli("tokens", "create", "mine", "--role", "admin", env=env).returncode == 0
    assert default.is_file()
    example = yaml.safe_load(EXAMPLE_FILE.read_text(encoding="utf-8"))["tokens"][1]
    with default.open("a", encoding="utf-8") as handle:  # a public digest: refused at start
        handle.write(f"  - name: {example['name']}\n    sha256: {example['sha256']}\n")
        handle.write(f"    role: {example['role']}\n")
    refused = run_cli("gateway", "--host", "0.0.0.0", env=env, timeout=60)
    assert refused.returncode == 1
    assert "public example token" in refused.stderr
    assert str(default) in refused.stderr.replace("\n", "")  # the file it read


def test_a_tokens_file_in_a_directory_that_refuses_new_files_is_kept_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokens file is never written in place (a crash mid-write would lock the
    gateway's callers out): the error names the directory, and the file is unchanged."""
    from chainwatch.commands.tokens import append_token
    from chainwatch.errors import UserError

    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n", encoding="utf-8")
    entry = {"name": "desk", "sha256": "0" * 64, "role": "orders"}
    with refuse_new_files(tmp_path, monkeypatch), pytest.raises(UserError) as caught:
        append_token(tokens, entry)
    assert str(caught.value) == (
        f"cannot write tokens file {tokens}: "
        f"cannot create a file in the directory {str(tmp_path)!r} (Permission denied)"
    )
    assert tokens.read_text(encoding="utf-8") == "tokens:\n"


def test_a_file_with_a_name_that_is_no_text_is_blamed_not_a_crash(tmp_path: Path) -> None:
    """The taken-name check put every name in a set: a name written as a list (`name: [a,
    b]`) crashed `tokens create` with `TypeError: unhashable type: 'list'`."""
    from chainwatch.commands.tokens import append_token
    from chainwatch.errors import UserError

    tokens = tmp_path / "tokens.yaml"
    before = f"tokens:\n  - {{name: [a, b], sha256: {'a' * 64}, role: crm}}\n"
    tokens.write_text(before, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        append_token(tokens, {"name": "desk", "sha256": "0" * 64, "role": "orders"})
    assert str(caught.value).startswith(f"tokens file {tokens}: key 'tokens.0.name': ")
    assert tokens.read_text(encoding="utf-8") == before


def test_a_tokens_file_writing_a_key_twice_is_refused_naming_it_not_appended_to(
    tmp_path: Path,
) -> None:
    """YAML's loaders keep the last of two equal keys: the entry's `role` would be the
    second one's; refused as the gateway refuses the file, naming the key and its line."""
    from chainwatch.commands.tokens import append_token
    from chainwatch.errors import UserError

    tokens = tmp_path / "tokens.yaml"
    before = f"tokens:\n  - name: a\n    sha256: {'a' * 64}\n    role: crm\n    role: admin\n"
    tokens.write_text(before, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        append_token(tokens, {"name": "desk", "sha256": "0" * 64, "role": "orders"})
    assert str(caught.value) == (
        f"cannot read tokens file {tokens}: the key 'role' written twice (line 5, column 5)"
    )
    assert tokens.read_text(encoding="utf-8") == before


def test_hash_token_prints_the_digest_tokens_create_stored(tmp_path: Path) -> None:
    """ingest.md: `printf '%s\\n' "$TOKEN" | chainwatch gateway hash-token` prints the digest of
    an existing token; a binary stdin is one line (it was an internal UnicodeEncodeError)."""
    tokens = tmp_path / "tokens.yaml"
    env = user_env(tmp_path / "data")
    made = run_cli("tokens", "create", "desk", "--role", "orders", "--file", str(tokens), env=env)
    assert made.returncode == 0, made.stderr
    hashed = run_cli("gateway", "hash-token", env=env, stdin=made.stdout)
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.strip() in tokens.read_text(encoding="utf-8")
    command = [sys.executable, "-m", "chainwatch", "gateway", "hash-token"]
    for stdin, said in ((b"\xf0\x9f\x00\xffELF\n", "not UTF-8 text"), (b"", "no token")):
        ran = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=60)
        assert ran.returncode == 1
        assert ran.stdout == b""
        lines = ran.stderr.decode().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ")
        assert said in lines[0]


def test_a_tokens_file_that_is_a_directory_is_named_as_one(tmp_path: Path) -> None:
    """`tokens create --file DIR` said `cannot read tokens file DIR: OSError`."""
    made = run_cli(
        "tokens", "create", "desk", "--role", "orders", "--file", str(tmp_path),
        env=user_env(tmp_path / "data"),
    )  # fmt: skip
    assert made.returncode == 1
    assert made.stderr.strip() == (
        f"error: cannot read tokens file {tmp_path}: not a regular file (a directory, pipe "
        "or device)"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_token_that_cannot_be_shown_is_not_stored(tmp_path: Path) -> None:
    """Printed after the digest was stored, a token `> /dev/full` never reached anyone: the
    file held a digest nobody had, its name was taken, and the error was an internal one."""
    tokens = tmp_path / "tokens.yaml"
    env = user_env(tmp_path / "data")
    with open("/dev/full", "w") as full:
        ran = subprocess.run(
            [sys.executable, "-m", "chainwatch", "tokens", "create", "desk", "--role", "orders",
             "--file", str(tokens)],
            stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        "error: cannot write the token to stdout (No space left on device): nothing was "
        f"added to {tokens}"
    )
    assert not tokens.exists()
    again = run_cli("tokens", "create", "desk", "--role", "orders", "--file", str(tokens), env=env)
    assert again.returncode == 0, again.stderr  # the name is still free
