"""Config files are read only when they are small regular files (schemas/files.py)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import yaml
from read_only_dirs import refuse_new_files

from schemas.files import (
    ConfigYamlError,
    StrictSafeLoader,
    entry_lines,
    load_config_yaml,
    read_config_bytes,
    read_config_text,
    write_text_atomically,
)


def test_a_small_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("stages: {}\n", encoding="utf-8")
    assert read_config_text(path) == "stages: {}\n"


@pytest.mark.timeout(10)  # a FIFO opened for reading would wait for a writer for ever
def test_a_pipe_a_device_or_a_directory_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(OSError, match="not a regular file") as caught:
            read_config_bytes(path)
        assert caught.value.errno == errno.EINVAL


def test_a_file_over_the_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"x" * 2048)
    assert read_config_bytes(path, max_bytes=2048) == b"x" * 2048
    with pytest.raises(OSError, match="larger than 1,024 bytes") as caught:
        read_config_bytes(path, max_bytes=1024)
    assert caught.value.errno == errno.EFBIG


def test_a_missing_file_is_the_usual_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_config_text(tmp_path / "absent.yaml")


def test_a_key_written_twice_is_refused_with_where_it_is() -> None:
    with pytest.raises(ConfigYamlError, match=r"^found the key 'a' twice \(line 4, column 3\)$"):
        load_config_yaml("x: 1\nb:\n  a: 1\n  a: 2\n")


def test_the_private_text_names_a_key_written_twice_only_when_it_is_a_known_key() -> None:
    """The tokens and webhook files say nothing of their text (a token pasted there), yet
    "a key written twice" left the user to find which: a key of the file's own is named."""
    text = "tokens: []\nx: 1\npasted-s3cret: 1\npasted-s3cret: 2\n"
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(text.replace("x: 1", "tokens: [a]"), known_keys={"tokens"})
    assert caught.value.private == "the key 'tokens' written twice (line 2, column 1)"
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(text, known_keys={"tokens", "x"})
    assert caught.value.private == "a key written twice (line 4, column 1)"


@pytest.mark.parametrize(
    ("first", "second"),
    [("1", "true"), ("1", "1.0"), ("10", "1_0"), ("1", "0x1"), ("~", "null"), ("no", "false")],
)
def test_two_keys_the_dict_holds_as_one_are_refused_naming_the_second(
    first: str, second: str
) -> None:
    """Keys were compared as written: `1:` and `true:` (True == 1) were both kept by the
    check, and one value overwrote the other in the dict, unseen."""
    where = r"\(line 4, column 3\)"
    expected = rf"^found the key '{second}' twice \(as '{first}' before it\) {where}$"
    with pytest.raises(ConfigYamlError, match=expected):
        load_config_yaml(f"x: 1\nvalues:\n  {first}: a\n  {second}: b\n")


@pytest.mark.parametrize("key", ["[a, b]", "{a: 1}"])
def test_a_key_that_cannot_be_a_dict_key_is_still_one_clean_line(key: str) -> None:
    with pytest.raises(ConfigYamlError, match=r"^found unhashable key \(line 1, column 3\)$"):
        load_config_yaml(f"? {key}\n: 1\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x: !!int abc\n", "'abc' cannot be read as !!int (line 1, column 4)"),
        ("!!float abc: 1\n", "'abc' cannot be read as !!float (line 1, column 1)"),
        ("x: [1, !!int 0x]\n", "'0x' cannot be read as !!int (line 1, column 8)"),
        ("due: 2027-02-30\n", "'2027-02-30' cannot be read as !!timestamp (line 1, column 6)"),
    ],
)
def test_a_scalar_its_tag_cannot_read_is_one_line_not_a_crash(text: str, expected: str) -> None:
    """int()'s `ValueError` (a date's, an `AttributeError`) went past every caller's
    handling of bad YAML: a plan with `2027-02-30` in it ended in a traceback."""
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(text)
    assert str(caught.value) == expected


def test_merge_keys_still_override_and_equal_values_of_other_types_are_other_keys() -> None:
    text = "base: &b {a: 1, c: 3}\nmine:\n  <<: *b\n  a: 2\n1: int\n'1': text\n"
    loaded = load_config_yaml(text)
    assert loaded["mine"] == {"a": 2, "c": 3}
    assert loaded[1] == "int"
    assert loaded["1"] == "text"


@pytest.mark.parametrize(
    "text",
    [
        "route: " + "[" * 5000 + "]" * 5000,  # a RecursionError inside PyYAML before
        "route: " + "{a: " * 3000 + "1" + "}" * 3000,
        "x: !!map text\n",  # an explicit map tag on a scalar
        "a: [1\n",
    ],
    ids=["deep-lists", "deep-maps", "map-tag-on-a-scalar", "unclosed"],
)
def test_yaml_that_cannot_be_loaded_is_one_line(text: str) -> None:
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(text)
    assert "\n" not in str(caught.value)
    assert str(caught.value)


def test_nesting_too_deep_says_where() -> None:
    with pytest.raises(
        ConfigYamlError, match=r"^nested too deeply to read \(line 2, column \d+\)$"
    ):
        load_config_yaml("x: 1\nroute: " + "[" * 5000 + "]" * 5000)


def test_files_are_parsed_by_libyaml_when_pyyaml_has_it() -> None:
    """The pure-Python parser took 9 s for a tokens file near the 4 MiB cap (libyaml ~1.5 s)."""
    assert yaml.__with_libyaml__  # PyYAML's wheels carry it
    assert issubclass(StrictSafeLoader, yaml.CSafeLoader)


def test_a_writable_file_in_a_directory_that_refuses_new_files_is_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Path.write_text` needed write permission on the file only; the rename needs it on
    the directory: with the fallback, the file itself is written (same inode)."""
    path = tmp_path / "cw-overview.json"
    path.write_text("old and longer than the new text", encoding="utf-8")
    inode = path.stat().st_ino
    with refuse_new_files(tmp_path, monkeypatch):
        write_text_atomically(path, "new", in_place_fallback=True)
    assert path.read_text(encoding="utf-8") == "new"
    assert path.stat().st_ino == inode


@pytest.mark.timeout(10)  # a FIFO opened for writing would wait for a reader for ever
@pytest.mark.parametrize("there", ["nothing", "a-fifo", "a-link", "no-fallback"])
def test_otherwise_a_directory_that_refuses_new_files_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, there: str
) -> None:
    """No regular file to write in place (or no fallback asked: the tokens file) is an
    error whose text names the directory, not only the file; nothing is written."""
    path, outside = tmp_path / "cw-overview.json", tmp_path / "outside.txt"
    outside.write_text("kept", encoding="utf-8")
    if there == "a-fifo":
        os.mkfifo(path)
    elif there == "a-link":
        path.symlink_to(outside)
    elif there == "no-fallback":
        path.write_text("kept", encoding="utf-8")
    with refuse_new_files(tmp_path, monkeypatch), pytest.raises(PermissionError) as caught:
        write_text_atomically(path, "new", in_place_fallback=there != "no-fallback")
    assert caught.value.strerror == (
        f"cannot create a file in the directory {str(tmp_path)!r} (Permission denied)"
    )
    assert outside.read_text(encoding="utf-8") == "kept"
    if there == "no-fallback":
        assert path.read_text(encoding="utf-8") == "kept"


def test_the_new_file_is_on_the_disk_before_the_rename_and_the_rename_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash soon after a rename whose file was never synced may keep the rename and lose
    the data: an empty file where the old one was."""
    path = tmp_path / "cw-overview.json"
    path.write_text("old", encoding="utf-8")
    steps: list[str] = []
    fsync, replace = os.fsync, os.replace

    def synced(fd: int) -> None:
        steps.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        fsync(fd)

    def renamed(src: str | Path, dst: str | Path) -> None:
        steps.append("replace")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(os, "replace", renamed)
    write_text_atomically(path, "new")
    assert steps == ["fsync file", "replace", "fsync dir"]
    assert path.read_text(encoding="utf-8") == "new"


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("a: 1\nendpoints:\n  - {name: x}\n\n  - name: y\n    url: z\n", [3, 5]),
        ("endpoints: [{name: x}, {name: y}]\n", [1, 1]),
        # an alias is placed where it is written, not at its anchor
        ("endpoints:\n  - &e {name: x}\n  - *e\n  -\n    *e\n", [2, 3, 5]),
        ("? [endpoints]\n: [1]\nendpoints: [&a [1, {b: 2}], *a]\n", [3, 3]),  # past a key
        ("link: &l {a: [1, 2]}\nendpoints: *l\n", []),  # no list written there
        ("endpoints: {name: x}\n", []),  # no list there
        ("- endpoints\n", []),  # no mapping at the top
        ("endpoints: [\n", []),  # no YAML to read
        ("", []),
    ],
)
def test_entry_lines_places_each_entry_of_a_top_level_list(text: str, lines: list[int]) -> None:
    assert entry_lines(text, "endpoints") == lines
