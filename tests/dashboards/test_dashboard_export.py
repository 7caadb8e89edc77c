"""`chainwatch dashboards export DIR`: where it writes, and one-line errors where it cannot."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from read_only_dirs import refuse_new_files

from dashboards.export import BUILDERS


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from chainwatch import cli_context
    from chainwatch.settings import Settings

    # settings built here: the CLI's own would configure this process's logging
    monkeypatch.setitem(cli_context.state, "settings", Settings())


@pytest.fixture
def umask_027() -> Iterator[int]:
    """A umask other than the usual 022, so a mode that ignores it shows; restored after."""
    before = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(before)


def _export(directory: Path) -> int:
    from chainwatch.cli import main

    return main(["dashboards", "export", str(directory)])


@pytest.mark.usefixtures("cli")
def test_missing_parents_are_created_and_existing_files_replaced(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "dashboards"
    assert _export(target) == 0
    files = sorted(target.iterdir())
    assert len(files) == len(BUILDERS)
    files[0].write_text("stale", encoding="utf-8")
    assert _export(target) == 0
    assert files[0].read_text(encoding="utf-8").startswith("{")


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda root: (root / "f").touch() or root / "f", "it exists and is not a directory"),
        (lambda root: (root / "f").touch() or root / "f" / "sub", "Not a directory"),
        (lambda root: (root / "l").symlink_to(root / "gone") or root / "l" / "sub", "it exists"),
    ],
    ids=["onto-a-file", "under-a-file", "under-a-dangling-link"],
)
def test_a_path_that_cannot_be_a_directory_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, says: str
) -> None:
    target = make(tmp_path)  # type: ignore[operator]
    assert _export(target) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot create the directory ")
    assert says in lines[0]


@pytest.mark.usefixtures("cli")
def test_a_dashboard_file_that_is_a_directory_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cw-overview.json").mkdir()
    assert _export(tmp_path) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot write ")
    assert "cw-overview.json" in lines[0]


def _unblock(fifo: Path) -> None:
    """Open the FIFO's read end, so a writer blocked on it (the bug) goes on."""
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


@pytest.mark.usefixtures("cli")
def test_a_fifo_or_a_link_in_place_of_a_dashboard_file_is_replaced_not_written_to(
    tmp_path: Path, umask_027: int
) -> None:
    """`Path.write_text` blocked for ever on a FIFO named `<uid>.json` and wrote through a
    symbolic link to the file it named; each is now replaced by a new file, whose mode is
    the umask's (neither the FIFO's nor the link target's, nor a fixed 0644)."""
    fifo, link, outside = (tmp_path / "cw-overview.json", tmp_path / "cw-units.json",
                           tmp_path / "outside.txt")  # fmt: skip
    os.mkfifo(fifo, 0o666)
    outside.write_text("not a dashboard", encoding="utf-8")
    outside.chmod(0o604)
    link.symlink_to(outside)
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(_export(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        _unblock(fifo)
        worker.join(timeout=5)
        pytest.fail("export blocked on the FIFO")
    assert codes == [0]
    for path in (fifo, link):
        assert stat.S_ISREG(path.lstat().st_mode)
        assert path.read_text(encoding="utf-8").startswith("{")
    assert outside.read_text(encoding="utf-8") == "not a dashboard"
    for path in (fifo, link, tmp_path / "cw-pipeline.json"):  # the last one new
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask_027
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_directory_argument_is_an_error_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], empty: str
) -> None:
    """`export "$OUT"` with `OUT` unset wrote every dashboard into the current directory."""
    from chainwatch.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["dashboards", "export", empty]) == 2  # a usage error, as click's own
    assert capsys.readouterr().err.splitlines() == [
        "error: DIR is empty: name a directory (`.` for the current one) "
        "(see `chainwatch dashboards export --help`)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("cli", "umask_027")
def test_a_replaced_dashboard_file_keeps_its_mode(tmp_path: Path) -> None:
    """A group-writable export stays group-writable (the umask applies to new files only)."""
    assert _export(tmp_path) == 0
    kept = tmp_path / "cw-overview.json"
    kept.chmod(0o664)
    assert _export(tmp_path) == 0
    assert stat.S_IMODE(kept.stat().st_mode) == 0o664


@pytest.mark.usefixtures("cli")
def test_a_directory_that_refuses_new_files_has_its_dashboard_files_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exporting over writable files in a read-only directory worked with `write_text`;
    without those files the one-line error names the directory that cannot be written."""
    assert _export(tmp_path / "full") == 0
    stale = tmp_path / "full" / "cw-overview.json"
    fresh = stale.read_text(encoding="utf-8")
    stale.write_text("stale", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    with refuse_new_files(tmp_path / "full", monkeypatch):
        assert _export(tmp_path / "full") == 0
    assert stale.read_text(encoding="utf-8") == fresh
    with refuse_new_files(tmp_path / "empty", monkeypatch):
        assert _export(tmp_path / "empty") == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert f"cannot create a file in the directory {str(tmp_path / 'empty')!r}" in lines[0]
