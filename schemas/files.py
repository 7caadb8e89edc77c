"""Reading the small text files a user points Chainwatch at: plans, mappings, tokens.

`Path.read_text` reads whatever the path names: a FIFO blocked the command for
ever, `/dev/zero` grew it to gigabytes before anything could say the file was
wrong. These files are a few kilobytes; anything that is not a regular file, or
is larger than `MAX_CONFIG_BYTES`, is an `OSError` whose `strerror` says why, so
the callers' existing "cannot read ..." errors report it in one line.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Far above any plan, mapping or tokens file (the shipped ones are a few KB)."""


def read_config_bytes(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The file's bytes; `OSError` for a missing, special or oversized file."""
    found = os.stat(path)
    if not stat.S_ISREG(found.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a directory, pipe or device)", str(path))
    # O_NONBLOCK: should the path be swapped for a FIFO after the check, open never waits
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes:,} bytes", str(path))
    return data


def read_config_text(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """`read_config_bytes` as UTF-8 text (`UnicodeDecodeError` when it is not)."""
    return read_config_bytes(path, max_bytes).decode("utf-8")
