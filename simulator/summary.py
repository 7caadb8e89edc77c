"""What a run produced, for `--summary`: records per topic, per anomaly kind."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from simulator.records import SimRecord, format_ms


@dataclass(slots=True)
class Summary:
    """Counts of the records that went out; `add` is called once per record."""

    records: int = 0
    invalid: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)
    per_label: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, record: SimRecord) -> None:
        self.records += 1
        self.per_topic[record.topic] += 1
        if not record.valid:
            self.invalid += 1
        if record.label is not None:
            self.per_label[record.label] += 1
        if self.first_ms is None:
            self.first_ms = record.at_ms
        if self.last_ms is None or record.at_ms > self.last_ms:
            self.last_ms = record.at_ms

    def lines(self) -> list[str]:
        """Plain text lines (stable order) for stderr."""
        out = [f"records: {self.records} ({self.invalid} invalid)"]
        if self.first_ms is not None and self.last_ms is not None:
            out.append(f"time span: {format_ms(self.first_ms)} .. {format_ms(self.last_ms)}")
        out.append("per topic:")
        out.extend(f"  {topic:<16} {n:>9}" for topic, n in sorted(self.per_topic.items()))
        out.append("injected (records carrying each anomaly):")
        out.extend(f"  {label:<32} {n:>9}" for label, n in sorted(self.per_label.items()))
        return out
