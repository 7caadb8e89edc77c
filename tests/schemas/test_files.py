"""Config files are read only when they are small regular files (schemas/files.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from schemas.files import read_config_bytes, read_config_text


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
