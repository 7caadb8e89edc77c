"""A path the user gave (a directory, an output file, a tokens file, a log directory) is
echoed by the CLI escaped: an ESC or other control character in its name reaches the
terminal as `\\x1b`, never as the escape sequence itself (which could recolour, retitle
or rewrite the terminal), and rich's `[...]` markup in a name is printed, not obeyed.
`dashboards export DIR` printed DIR raw (and read `[bold]` in it as markup)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cli_in_process import cli_in_process
from rich.console import Console

from chainwatch.progress import Mode, ProgressDisplay

HOSTILE = "a\x1b]0;pwned\x07\x1b[31m[bold]b\u202e"
"""A terminal title change, a colour, rich markup and a right-to-left override."""
SHOWN = "a\\x1b]0;pwned\\x07\\x1b[31m[bold]b\\u202e"


def _no_control(text: str) -> None:
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\u202e" not in text


def _env(tmp_path: Path) -> dict[str, str]:
    return {"CHAINWATCH_DATA_DIR": str(tmp_path / "data")}


def test_dashboards_export_prints_the_directory_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / HOSTILE
    answer = cli_in_process(
        ["dashboards", "export", str(target)], _env(tmp_path), monkeypatch, capsys,
        settings_built=True,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    written = sorted(p.name for p in target.iterdir())
    assert written
    _no_control(answer.stdout)
    assert sorted(answer.stdout.splitlines()) == [f"{tmp_path}/{SHOWN}/{n}" for n in written]


def test_an_error_line_shows_the_path_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `UserError` naming the user's path as given (here: its directory is missing)."""
    target = tmp_path / HOSTILE / "out.ndjson"
    answer = cli_in_process(
        ["simulate", "--days", "1", "--orders-per-day", "1", "--max-events", "3",
         "--out", str(target)],
        _env(tmp_path), monkeypatch, capsys, settings_built=True,
    )  # fmt: skip
    assert answer.returncode == 1
    _no_control(answer.stderr)
    [line] = answer.stderr.splitlines()
    assert line.startswith(f"error: cannot write {tmp_path}/{SHOWN}/out.ndjson: "), line


def test_simulate_says_where_it_wrote_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / HOSTILE
    answer = cli_in_process(
        ["simulate", "--days", "1", "--orders-per-day", "1", "--max-events", "3",
         "--out", str(target)],
        _env(tmp_path), monkeypatch, capsys, settings_built=True,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert target.exists()
    _no_control(answer.stderr)
    assert f"simulate: wrote 3 records to {tmp_path}/{SHOWN}\n" in answer.stderr


def test_tokens_create_says_which_file_it_added_to_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / HOSTILE
    answer = cli_in_process(
        ["tokens", "create", "desk", "--role", "orders", "--file", str(target)],
        _env(tmp_path), monkeypatch, capsys, settings_built=True,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert target.exists()
    _no_control(answer.stderr)
    assert f"added token 'desk' (role orders) to {tmp_path}/{SHOWN};" in answer.stderr


@pytest.mark.parametrize("mode", ["lines", "bar"])
def test_progress_lines_show_a_path_escaped(mode: Mode) -> None:
    """`replay` and `backtest` say their client-library log's path (under the settings'
    log directory) and other progress through `ProgressDisplay` (on a terminal, rich's
    own styling is escape sequences: the name's own must not be among them)."""
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=mode == "bar", width=400)
    with ProgressDisplay(console, label="replay", mode=mode) as progress:
        progress.say(f"client-library log: /logs/{HOSTILE}/replay.log")
        progress(f"kept the run's state ({HOSTILE})")
    text = sink.getvalue()
    assert "]0;pwned\x07" not in text
    assert "\u202e" not in text
    assert f"client-library log: /logs/{SHOWN}/replay.log" in text
    assert f"kept the run's state ({SHOWN})" in text


def test_import_names_its_input_and_output_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "import"
    source, target = tmp_path / f"{HOSTILE}.csv", tmp_path / f"{HOSTILE}.ndjson"
    source.write_bytes((examples / "orders.csv").read_bytes())
    answer = cli_in_process(
        ["import", str(source), "--mapping", str(examples / "orders.mapping.yaml"),
         "--out", str(target)],
        _env(tmp_path), monkeypatch, capsys, settings_built=True,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert target.exists()
    _no_control(answer.stderr)
    assert f"import: {SHOWN}.csv: 2 rows, 2 imported, 0 rejected\n" in answer.stderr
    assert f" rows to {tmp_path}/{SHOWN}.ndjson in " in answer.stderr


def test_doctor_shows_a_checks_path_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A check's detail names the tool it found on PATH (a directory of the user's)."""
    from chainwatch import doctor

    found = doctor.Check("maven", True, f"/opt/{HOSTILE}/bin/mvn")
    monkeypatch.setattr(doctor, "run_checks", lambda _settings: [found])
    answer = cli_in_process(["doctor"], _env(tmp_path), monkeypatch, capsys, settings_built=True)
    assert answer.returncode == 0, answer.stderr
    _no_control(answer.stdout)
    assert f"maven        /opt/{SHOWN}/bin/mvn" in answer.stdout
