"""What to publish: the difference between published and desired alerts (JSON form).

The engine re-derives the desired alerts on every change; publishing only the
difference keeps the `alerts` topic a log of status changes (RULES.md), and turns
an alert that is no longer derived (e.g. after a late fulfilling scan, a due date
change or a cancellation) into an explicit `retracted` record. Both sides are
the alerts' JSON form (`streams.rules.alert_json`), which is what the engine stores and sends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from schemas.alerts import AlertStatus
from streams.rules.alert_json import AlertJson


def _never(_alert: AlertJson) -> bool:
    return False


def alert_changes(
    published: Mapping[str, AlertJson],
    desired: Mapping[str, AlertJson],
    *,
    among: Collection[str] | None = None,
    final: Callable[[AlertJson], bool] = _never,
) -> tuple[list[AlertJson], list[str]]:
    """Alerts to publish, sorted by alert_id: new, changed, and newly retracted ones.

    Every field takes part in the comparison (all of them are derived from facts,
    plan and clock), so a new customer name or severity is re-published too.
    `among` limits the published alerts considered (None: all of them). A
    published alert no longer derived because its fact was folded away (`final`)
    is not retracted but forgotten: its id is in the second list.
    """
    considered = published.keys() if among is None else set(among) & published.keys()
    changes: list[AlertJson] = []
    forgotten: list[str] = []
    for key in sorted(desired.keys() | considered):
        want = desired.get(key)
        have = published.get(key)
        if want is not None:
            if want != have:
                changes.append(want)
        elif have is not None and final(have):
            forgotten.append(key)
        elif have is not None and have["status"] != AlertStatus.RETRACTED.value:
            changes.append({**have, "status": AlertStatus.RETRACTED.value})
    return changes, forgotten
