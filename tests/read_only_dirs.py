"""A directory that refuses new files while the files in it stay writable.

`refuse_new_files` sets its mode to 0555. Directory modes do not bind root (the suite
may run as root in a container), so there the refusal the kernel gives everyone else,
EACCES on creating a file in it, is given by `schemas.files.create_beside`, the one place
`write_text_atomically` creates files.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import files


@contextlib.contextmanager
def refuse_new_files(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`directory` refuses new files inside the block; its mode is restored after it."""
    create = files.create_beside

    def refused(path: Path, mode: int) -> tuple[int, Path]:
        if path.parent == directory:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return create(path, mode)

    before = directory.stat().st_mode
    directory.chmod(0o555)
    try:
        if os.geteuid() == 0:
            monkeypatch.setattr(files, "create_beside", refused)
        yield directory
    finally:
        monkeypatch.setattr(files, "create_beside", create)
        directory.chmod(before)
