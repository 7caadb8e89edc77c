"""The one exponential backoff of the sinks: doubling from `initial_s`, capped at `max_s`.

Used wherever a sink or the notifier waits before trying again: ClickHouse
unavailable (sink), Kafka refusing a delivery-log record (notifier), a webhook
receiver failing (with jitter, so many deliveries retrying together spread out).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def exponential(
    attempt: int,
    initial_s: float,
    max_s: float,
    *,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1-based): `initial_s * 2**(attempt-1)`,
    capped at `max_s`, then multiplied by a uniform factor in [1-jitter, 1+jitter]."""
    base = min(initial_s * 2 ** min(attempt - 1, 64), max_s)
    if not jitter:
        return float(base)
    return float(base * (rng or random).uniform(1 - jitter, 1 + jitter))


@dataclass
class Backoff:
    """A retry loop's state: `next()` gives the delay to wait now; `reset()` after a success."""

    initial_s: float
    max_s: float
    jitter: float = 0.0
    attempts: int = field(default=0, init=False)
    current_s: float = field(default=0.0, init=False)
    """The delay `next()` returned last (0 before the first)."""

    def next(self) -> float:
        self.attempts += 1
        self.current_s = exponential(self.attempts, self.initial_s, self.max_s, jitter=self.jitter)
        return self.current_s

    def reset(self) -> None:
        self.attempts = 0
        self.current_s = 0.0
