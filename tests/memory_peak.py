"""The peak of memory a block allocates: how the tests bound what hostile input costs.

The measure is taken inside the traced block (once tracemalloc stops there is none) and
the stop is in a `finally`: a failing block leaves no tracing on for the tests after it.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Peak:
    bytes: int = 0
    """The most memory traced at once in the block (0 until the block has ended)."""


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """Trace the block's allocations; its peak is `.bytes` of the value yielded, set as the
    block ends without an exception."""
    peak = Peak()
    tracemalloc.start()
    try:
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
