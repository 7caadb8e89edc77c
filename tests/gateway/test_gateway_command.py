"""`chainwatch gateway` start-up: problems are one line and a non-zero exit, before any banner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gateway_harness import write_tokens

CHAINWATCH = Path(sys.executable).parent / "chainwatch"


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINWATCH_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [str(CHAINWATCH), "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_an_occupied_port_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _run("--port", str(port), "--tokens", str(tokens), tmp_path=tmp_path)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0]
    assert "--port" in lines[0]
    assert "gateway on http" not in result.stderr


@pytest.mark.slow
def test_a_token_bound_to_a_stage_the_plan_lacks_is_refused_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: dye, sha256: {'a' * 64}, role: unit, unit_id: DYE-01, stages: [dyeing]}}\n"
        f"  - {{name: typo, sha256: {'b' * 64}, role: unit, unit_id: D-2, stages: [dieing]}}\n"
    )
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = _run("--port", str(port), "--tokens", str(tokens), tmp_path=tmp_path)
    assert result.returncode != 0
    assert "typo" in result.stderr
    assert "dieing" in result.stderr
    assert "gateway on http" not in result.stderr


def test_a_uvicorn_without_the_hooks_the_gateway_overrides_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn 0.36 to 0.44 had no `_start_asgi_task`: the gateway's JSON 503 beyond the
    connection limit and its refusal of an `Upgrade` with a body silently did nothing."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from chainwatch.errors import UserError
    from chainwatch.gateway_protocol import with_header_deadline

    with_header_deadline(10.0)  # the installed uvicorn has them
    monkeypatch.delattr(HttpToolsProtocol, "_start_asgi_task")
    with pytest.raises(UserError, match=r"needs uvicorn>=0\.45.*lacks _start_asgi_task") as err:
        with_header_deadline(10.0)
    assert "\n" not in str(err.value)
