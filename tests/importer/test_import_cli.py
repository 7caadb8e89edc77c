"""`chainwatch import` as a user runs it: exit codes, what stderr says, what is written."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from child_env import environ_without_settings
from cli_in_process import Answer, cli_in_process

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = environ_without_settings()
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "import", *args],
        capture_output=True,
        text=True,
        env={**clean, "CHAINWATCH_DATA_DIR": str(data_dir), **env},
        timeout=120,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_import_to_a_scenario_lists_bad_rows_and_sums_up(tmp_path: Path) -> None:
    out = tmp_path / "history.ndjson"
    rejects = tmp_path / "rejects.ndjson"
    result = cli(
        "examples/import/scans.csv",
        "--mapping", "examples/import/scans.mapping.yaml",
        "--to", "file", "--out", str(out), "--rejects", str(rejects),
        data_dir=tmp_path / "data",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # some rows were rejected
    assert result.stdout == ""
    err = result.stderr
    assert "rejected scans.csv:8: validation_failed: stage:" in err
    assert "rejected scans.csv:9: validation_failed: event_time:" in err
    assert "import: scans.csv: 8 rows, 6 imported, 2 rejected, 6 event ids derived" in err
    assert f"import: 6 of 8 rows to {out}" in err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 6
    letters = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [(d["source"]["kind"], d["source"]["line"]) for d in letters] == [
        ("import", 8),
        ("import", 9),
    ]


@pytest.mark.slow
def test_a_clean_import_exits_zero_and_can_write_to_stdout(tmp_path: Path) -> None:
    result = cli(
        "examples/import/orders.csv", "--mapping", "examples/import/orders.mapping.yaml",
        "--out", "-", data_dir=tmp_path / "data",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["topic"], line["key"]) for line in lines] == [
        ("orders", "PO-4101"),
        ("orders", "PO-4102"),
    ]


@pytest.mark.slow
def test_stdout_closed_by_its_reader_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """`--out - | head`: click made the broken pipe a silent exit 1 (a blank line)."""
    clean = environ_without_settings()
    read, write = os.pipe()
    os.close(read)  # a reader that is gone before the first record
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chainwatch", "import", "examples/import/orders.csv",
             "--mapping", "examples/import/orders.mapping.yaml", "--out", "-"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            env={**clean, "CHAINWATCH_DATA_DIR": str(tmp_path / "data")}, cwd=ROOT,
        )  # fmt: skip
    finally:
        os.close(write)
    assert result.returncode == 1
    lines = result.stderr.splitlines()  # no empty line before it (rich's stopped display)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "error: the output's reader stopped reading (a closed pipe): the import stopped, "
        "having written at most "
    ), result.stderr


USAGE = 2
"""A bad option or argument, as click's own: exit 2, the line ends with where help is."""
HELP = " (see `chainwatch import --help`)"


class Mistakes:
    """The user's mistakes of `chainwatch import`, each (argv, exit status, what its one
    line says), with the files they must leave as they were."""

    def __init__(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: scans\ntime: {timezone: Mars/Olympus}\n", encoding="utf-8")
        self.out = out = tmp_path / "x.ndjson"
        no_suffix = tmp_path / "export"
        no_suffix.write_text("order_id\n", encoding="utf-8")
        self.scans = scans = [
            "examples/import/scans.csv",
            "--mapping",
            "examples/import/scans.mapping.yaml",
        ]
        self.copy = copy = tmp_path / "scans.csv"  # an input an --out names (the example kept)
        copy.write_bytes((ROOT / scans[0]).read_bytes())
        self.tmp_path = tmp_path
        self.cases: list[tuple[list[str], int, str]] = [
            ([*scans[:1], "--mapping", str(bad), "--out", str(out)], 1, "Mars/Olympus"),
            (
                ["examples/import/scans.csv", "--kind", "scans", "--out", str(out)],
                1,
                "no column for the required field order_id",
            ),
            # the command line's own faults: usage errors (they were exit 1 without the hint)
            ([*scans[:1], "--out", str(out)], USAGE, "--kind is required"),
            (
                [*scans, "--kind", "scan", "--out", str(out)],
                USAGE,
                "--kind 'scan': expected one of",
            ),
            ([*scans, "--to", "s3", "--out", str(out)], USAGE, "--to 's3': expected file or kafka"),
            (scans, USAGE, "--to file needs --out PATH"),
            ([*scans, "--to", "kafka", "--out", str(out)], USAGE, "--out is for --to file"),
            ([*scans, "--out", str(out), "--format", "xls"], USAGE, "--format 'xls': expected csv"),
            (
                [str(no_suffix), "--kind", "scans", "--out", str(out)],
                USAGE,
                "cannot tell the format from the name; pass --format",
            ),
            ([str(copy), *scans[1:], "--out", str(copy)], USAGE, "is one of the files to import"),
            (  # the scenario's rename would have replaced the rejected rows
                [*scans, "--out", str(out), "--rejects", str(tmp_path / "." / "x.ndjson")],
                USAGE,
                "--out and --rejects name the same file",
            ),
        ]

    def check(self, said: str, code: int, expected_code: int, expected: str) -> None:
        """The answer to one mistake: its exit status, and one `error:` line on stderr."""
        lines = said.strip().splitlines()
        assert code == expected_code, said
        assert len(lines) == 1, said
        assert lines[0].startswith("error: "), said
        assert expected in lines[0]
        assert lines[0].endswith(HELP) == (expected_code == USAGE), lines[0]

    def check_nothing_written(self) -> None:
        assert not self.out.exists()
        assert list(self.tmp_path.glob(".*.tmp")) == []
        assert self.copy.read_bytes() == (ROOT / self.scans[0]).read_bytes()


@pytest.fixture
def in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Answer]:
    """`chainwatch import ARGS` through the CLI's `main` in this process, as `cli` runs it
    (`tests/cli_in_process.py`): nothing on stdout, and no file it opened left to the
    collector (its process's exit hid one: an input named by `--out` was)."""
    unclosed: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda raised: unclosed.append(repr(raised)))
    env = {"CHAINWATCH_DATA_DIR": str(tmp_path / "data")}

    def run(*args: str) -> Answer:
        answer = cli_in_process(["import", *args], env, monkeypatch, capsys, settings_built=True)
        assert answer.stdout == ""
        gc.collect()
        assert unclosed == [], args
        return answer

    return run


def test_user_mistakes_are_one_line_errors_and_write_nothing(
    tmp_path: Path, in_process: Callable[..., Answer]
) -> None:
    """In this process; `test_user_mistakes_said_by_the_console_script` runs two of them
    as a user does."""
    mistakes = Mistakes(tmp_path)
    for args, code, expected in mistakes.cases:
        said = in_process(*args)
        mistakes.check(said.stderr, said.returncode, code, expected)
    mistakes.check_nothing_written()


@pytest.mark.slow
def test_user_mistakes_said_by_the_console_script(tmp_path: Path) -> None:
    """Two of the mistakes above, one of each exit status, as `python -m chainwatch`:
    the process's own exit status and stderr, its settings read from its environment."""
    mistakes = Mistakes(tmp_path)
    for args, code, expected in (mistakes.cases[1], mistakes.cases[3]):
        result = cli(*args, data_dir=tmp_path / "data")
        mistakes.check(result.stderr, result.returncode, code, expected)
    mistakes.check_nothing_written()


def test_rejects_naming_the_input_is_one_line_and_the_input_survives(
    tmp_path: Path, in_process: Callable[..., Answer]
) -> None:
    source = tmp_path / "units.csv"
    text = "unit_id,status,event_time\nU-1,sideways,2026-11-23T09:30:00Z\n"
    source.write_text(text)
    link = tmp_path / "link.csv"
    link.symlink_to(source)
    out = tmp_path / "x.ndjson"
    args = [str(source), "--kind", "unit-status", "--out", str(out), "--rejects", str(link)]
    result = in_process(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == USAGE, result.stderr
    assert lines == [
        f"error: --rejects {link} is one of the files to import; name another file{HELP}"
    ]
    assert source.read_text() == text
    assert not out.exists()


@pytest.mark.parametrize(
    ("out", "code", "said"),
    [
        ("units.csv", USAGE, "is one of the files to import"),
        ("folder", 1, "is a directory"),
        ("nowhere/x.ndjson", 1, "no directory"),
    ],
)
def test_an_out_refused_leaves_the_rejects_file_as_it_was(
    tmp_path: Path, out: str, code: int, said: str, in_process: Callable[..., Answer]
) -> None:
    """`--rejects` is opened "wb" (truncated), and `--out` was checked after it: a usage
    error (`--out` naming an input) or a bad `--out` emptied the rejects file of the last
    run, where nothing may be written before a refusal."""
    source = tmp_path / "units.csv"
    source.write_text("unit_id,status,event_time\nU-1,sideways,2026-11-23T09:30:00Z\n")
    (tmp_path / "folder").mkdir()
    rejects = tmp_path / "rejects.ndjson"
    rejects.write_text('{"kept": "from the last run"}\n')
    args = [str(source), "--kind", "unit-status", "--out", str(tmp_path / out)]
    result = in_process(*args, "--rejects", str(rejects))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert said in lines[0]
    assert rejects.read_text() == '{"kept": "from the last run"}\n'


@pytest.mark.parametrize("fault", ["no format", "--out", "--rejects"])
def test_a_usage_error_found_at_the_files_creates_nothing(
    tmp_path: Path, fault: str, in_process: Callable[..., Answer]
) -> None:
    """Found once the files are opened (a name that gives no format, an output naming an
    input): the client-library log's directory was made before, `.chainwatch/logs` in the
    current directory by default, where a usage error leaves nothing behind."""
    source = tmp_path / ("units" if fault == "no format" else "units.csv")
    source.write_text("unit_id,status,event_time\nU-1,up,2026-11-23T09:30:00Z\n")
    out = source if fault == "--out" else tmp_path / "x.ndjson"
    args = [str(source), "--kind", "unit-status", "--out", str(out)]
    if fault == "--rejects":
        args += ["--rejects", str(source)]
    result = in_process(*args)
    assert result.returncode == USAGE, result.stderr
    assert result.stderr.rstrip().endswith(HELP), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


@pytest.mark.parametrize("out", ["-", "file"])
def test_an_interrupted_import_says_what_became_of_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, out: str
) -> None:
    """Before: `--out -` said "- was not written" after records had gone to stdout."""
    from chainwatch.commands import importer as command
    from chainwatch.importer import run
    from chainwatch.importer.errors import ImportInterrupted
    from chainwatch.importer.mapper import RowMapper
    from chainwatch.importer.outputs import ScenarioWriter
    from chainwatch.importer.pipeline import Importer
    from schemas.import_mapping import ImportMapping
    from schemas.plan import load_plan

    def interrupted(
        _importer: object, _tables: object, writer: ScenarioWriter, *_a: object
    ) -> None:
        writer.written = 3  # three records went out before Ctrl-C
        writer.discard()  # as the import's `finally` does
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "import_to_file", interrupted)
    target = "-" if out == "-" else str(tmp_path / "out.ndjson")
    importer = Importer(RowMapper(ImportMapping(), "scans"), load_plan())
    with pytest.raises(ImportInterrupted) as caught:
        command._to_file(importer, [], target, None, None)  # type: ignore[arg-type]
    said = {
        "-": "interrupted; 3 records were written to stdout: the output is incomplete",
        "file": f"interrupted; {target} was not written",
    }
    assert str(caught.value) == said[out]
