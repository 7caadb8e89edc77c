"""What to publish: the difference between published and desired alerts.

The engine re-derives the full desired set on every change; publishing only the
difference keeps the `alerts` topic a log of status changes (RULES.md), and turns
an alert that is no longer derived (e.g. after a late fulfilling scan, a due date
change or a cancellation) into an explicit `retracted` record.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.alerts import Alert, AlertStatus


def diff_alerts(published: Mapping[str, Alert], desired: Mapping[str, Alert]) -> list[Alert]:
    """Alerts to publish, sorted by alert_id: new, changed, and newly retracted ones.

    Every field takes part in the comparison (all of them are derived from facts,
    plan and clock), so a new customer name or severity is re-published too.
    """
    changes: list[Alert] = []
    for key in sorted(desired.keys() | published.keys()):
        want = desired.get(key)
        have = published.get(key)
        if want is not None:
            if have is None or not have.same_content(want):
                changes.append(want)
        elif have is not None and have.status is not AlertStatus.RETRACTED:
            changes.append(have.model_copy(update={"status": AlertStatus.RETRACTED}))
    return changes
