"""The environment a test gives a `chainwatch` child process."""

from __future__ import annotations

import os


def environ_without_settings() -> dict[str, str]:
    """This process's environment less every CHAINWATCH_ variable: a child started with it
    takes none of the suite's settings (its Kafka port, its data dir) by accident, only
    those the test adds."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("CHAINWATCH_")}
