"""Silences (sinks/webhooks/silences.py): what a silence matches, what it refuses, and
the bound on what a notifier keeps. Pure: no broker (the end-to-end test is
test_webhook_silences_e2e.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sink_samples import make_alert

from chainwatch.errors import UsageError
from chainwatch.settings import Settings
from chainwatch.silences import new_silence, window
from schemas.alerts import Alert, AlertCause, AlertStatus, AlertType
from sinks.webhooks.silences import MAX_REASON, Silence, SilenceBook

NOW = datetime(2027, 3, 12, 22, 0, tzinfo=UTC)


def silence(**fields: Any) -> Silence:
    base: dict[str, Any] = {
        "starts_at": NOW,
        "ends_at": NOW + timedelta(hours=4),
        "reason": "planned maintenance of KNIT-03",
    }
    return Silence.model_validate({**base, **fields})


def unit_down(unit: str) -> Alert:
    return make_alert(1).model_copy(
        update={
            "type": AlertType.UNIT_DOWN,
            "order_id": None,
            "stage": None,
            "unit_id": unit,
            "customer": None,
        }
    )


def disrupted_by(unit: str) -> Alert:
    cause = AlertCause(unit_id=unit, since=NOW)
    return make_alert(2).model_copy(
        update={"type": AlertType.ORDER_DISRUPTED, "unit_id": None, "cause": cause}
    )


def test_a_unit_silence_matches_the_units_alerts_and_the_orders_it_disrupts() -> None:
    knit = silence(units=["KNIT-03"])
    assert knit.matches(unit_down("KNIT-03"), "ops")
    assert knit.matches(disrupted_by("KNIT-03"), "ops")
    assert not knit.matches(unit_down("KNIT-04"), "ops")
    assert not knit.matches(disrupted_by("KNIT-04"), "ops")
    assert not knit.matches(make_alert(3), "ops")  # DYE-01's


def test_and_across_matchers_or_within_one_empty_matches_all() -> None:
    alert = make_alert(1)  # stage_overdue, dyeing, DYE-01, PO-1, customer C-1
    assert silence(units=["KNIT-03", "DYE-01"]).matches(alert, "ops")  # OR
    assert silence(units=["DYE-01"], types=["stage_overdue"]).matches(alert, "ops")
    assert not silence(units=["DYE-01"], types=["unit_down"]).matches(alert, "ops")  # AND
    assert silence(stages=["dyeing"], customer_ids=["C-1"]).matches(alert, "ops")
    assert not silence(order_ids=["PO-2"]).matches(alert, "ops")
    assert silence(order_ids=["PO-1"]).matches(alert, "ops")
    only_pager = silence(units=["DYE-01"], endpoints=["pager"])
    assert only_pager.matches(alert, "pager")
    assert not only_pager.matches(alert, "ops")
    # a stage or customer matcher never matches an alert without one
    assert not silence(stages=["dyeing"]).matches(unit_down("DYE-01"), "ops")
    assert not silence(customer_ids=["C-1"]).matches(unit_down("DYE-01"), "ops")


def test_in_force_from_its_start_until_its_end() -> None:
    window_ = silence(units=["DYE-01"])
    assert not window_.in_force(NOW - timedelta(seconds=1))
    assert window_.in_force(NOW)
    assert window_.in_force(NOW + timedelta(hours=4) - timedelta(microseconds=1))
    assert not window_.in_force(NOW + timedelta(hours=4))
    assert window_.expired(NOW + timedelta(hours=4))


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({}, "at least one of units, stages, types, order_ids or customer_ids"),
        ({"endpoints": ["ops"]}, "a silence of every alert is refused"),
        ({"units": ["K"], "ends_at": NOW}, "ends_at must be after starts_at"),
        ({"units": ["K"], "ends_at": NOW - timedelta(hours=1)}, "ends_at must be after"),
        ({"units": ["K"], "ends_at": NOW + timedelta(days=30, seconds=1)}, "at most 30 days"),
        ({"units": ["K"], "reason": "   "}, "at least 1 character"),
        ({"units": ["K"], "reason": "x" * (MAX_REASON + 1)}, f"at most {MAX_REASON}"),
        ({"units": ["K"], "reason": None}, "valid string"),
        ({"types": ["unit_dwn"]}, "'unit_dwn' is no alert's type; use handoff_overdue"),
        ({"stages": ["Dyeing!"]}, "should match pattern"),
        ({"units": ["bad unit"]}, "should match pattern"),
        ({"units": ["K"], "colour": "red"}, "Extra inputs are not permitted"),
        ({"units": ["K"] * 101}, "at most 100 items"),
    ],
)
def test_refused(fields: dict[str, Any], said: str) -> None:
    base: dict[str, Any] = {"starts_at": NOW, "ends_at": NOW + timedelta(hours=4), "reason": "r"}
    with pytest.raises(ValidationError, match=said.replace("(", r"\(")):
        Silence.model_validate({**base, **fields})


def test_thirty_days_is_taken_and_ids_are_generated() -> None:
    a = silence(units=["K"], ends_at=NOW + timedelta(days=30))
    b = silence(units=["K"])
    assert a.silence_id != b.silence_id
    assert len(a.silence_id) == 32
    assert Silence.model_validate_json(a.model_dump_json()) == a
    with pytest.raises(ValidationError):  # frozen
        a.reason = "other"  # type: ignore[misc]


def test_the_book_takes_the_latest_of_each_id_and_says_which_silences() -> None:
    book = SilenceBook()
    first = silence(units=["DYE-01"])
    book.put(first.silence_id, first)
    alert = make_alert(1)
    assert book.silencing(alert, "ops", NOW + timedelta(hours=1)) == first
    assert book.silencing(alert, "ops", NOW - timedelta(hours=1)) is None  # not yet
    expired = first.model_copy(update={"ends_at": NOW + timedelta(minutes=30)})
    book.put(first.silence_id, expired)  # `silences expire` writes it again
    assert len(book) == 1
    assert book.silencing(alert, "ops", NOW + timedelta(hours=1)) is None
    book.put(first.silence_id, None)  # a tombstone
    assert len(book) == 0
    resolved = make_alert(1, AlertStatus.RESOLVED)
    assert book.silencing(resolved, "ops", NOW) is None


def test_the_book_keeps_at_most_its_bound_dropping_expired_ones_first() -> None:
    book = SilenceBook(limit=3)
    later = NOW + timedelta(days=2)
    old = [
        silence(units=["A"], ends_at=NOW + timedelta(hours=h), reason=f"old {h}") for h in (1, 2)
    ]
    active = [
        silence(units=["B"], starts_at=later, ends_at=later + timedelta(hours=h), reason=f"a{h}")
        for h in (1, 2)
    ]
    for s in (*old, *active):
        book.put(s.silence_id, s, now=later)
    # the one that ended first went; both active ones are kept
    assert set(book.silences) == {old[1].silence_id, *(s.silence_id for s in active)}
    assert book.dropped_active == 0
    newest = silence(units=["C"], starts_at=later, ends_at=later + timedelta(hours=3))
    book.put(newest.silence_id, newest, now=later)
    assert set(book.silences) == {*(s.silence_id for s in active), newest.silence_id}
    assert len(book) == 3


def test_the_window_options() -> None:
    now = NOW
    assert window("4h", None, None, now).ends_at == now + timedelta(hours=4)
    start = "2027-03-13T22:00:00Z"
    assert window("2d", None, start, now).ends_at == NOW + timedelta(days=3)
    assert window(None, "2027-03-13T02:00:00Z", None, now).ends_at == NOW + timedelta(hours=4)
    for args, said in [
        ((None, None, None), "exactly one of --for"),
        (("4h", "2027-03-13T02:00:00Z", None), "exactly one of --for"),
        (("4 hours", None, None), "--for '4 hours': expected a duration"),
        (("31d", None, None), "at most 30 days"),
        ((None, "tomorrow", None), "--until 'tomorrow': expected an RFC 3339 time"),
        ((None, "2027-03-12T21:00:00Z", None), "would have ended already"),
        (("4h", None, "2027-03-12"), "--from '2027-03-12'"),
        # a window given by its two ends: each refusal names both options and values (it
        # said "silence: ends_at must be after starts_at", the model's fields)
        (
            (None, "2027-03-13T02:00:00Z", "2027-03-13T03:00:00Z"),
            "--until '2027-03-13T02:00:00Z': not after --from '2027-03-13T03:00:00Z'",
        ),
        (
            (None, "2027-04-13T02:00:00Z", "2027-03-13T00:00:00Z"),
            "--until '2027-04-13T02:00:00Z': a silence lasts at most 30 days "
            "from --from '2027-03-13T00:00:00Z'",
        ),
        ((None, "2027-04-13T02:00:00Z", None), "at most 30 days from now"),
    ]:
        with pytest.raises(UsageError, match=said):
            window(*args, now)  # type: ignore[arg-type]


def test_a_refused_window_or_author_says_why_naming_its_option() -> None:
    """`-4h` and `400d` are durations (one negative, one past the bound) and were
    "expected a duration (30m, 4h, 2d)"; an `--until` before `--from`, a window past the
    bound by `--until`, a `--by` too long and an end past 2100 named the model's fields
    (`silence: ends_at must be after starts_at`, `created_by: ...`), not the options."""
    now = NOW
    for args, said in [
        (("-4h", None, None), "--for '-4h': a silence cannot last a negative time"),
        (("400d", None, None), "--for '400d': a silence lasts at most 30 days"),
        (("1000000000000d", None, None), "--for '1000000000000d': a silence lasts at most 30 days"),
        (("9" * 5000 + "d", None, None), f"--for '{'9' * 40}…': a silence lasts at most 30 days"),
        (("4x", None, None), "--for '4x': expected a duration (30m, 4h, 2d)"),
        (("\u0664h", None, None), "--for '\u0664h': expected a duration (30m, 4h, 2d)"),
        ((None, "2027-03-13T21:00:00Z", "2027-03-13T22:00:00Z"),
         "--until '2027-03-13T21:00:00Z': not after --from '2027-03-13T22:00:00Z'"),
        ((None, "2027-05-01T00:00:00Z", None), "--until '2027-05-01T00:00:00Z': a silence lasts "
         "at most 30 days from now"),
    ]:  # fmt: skip
        with pytest.raises(UsageError) as refused:
            window(*args, now)  # type: ignore[arg-type]
        assert str(refused.value) == said
    cfg = Settings()
    base = {"units": ["KNIT-03"], "starts_at": now, "ends_at": now + timedelta(hours=1),
            "reason": "r"}  # fmt: skip
    with pytest.raises(UsageError) as refused:
        new_silence(cfg, {**base, "created_by": "x" * 65})
    assert str(refused.value) == "--by: String should have at most 64 characters"
    late = {**base, "starts_at": datetime(2099, 12, 31, tzinfo=UTC)}
    late["ends_at"] = late["starts_at"] + timedelta(days=30)  # type: ignore[operator]
    with pytest.raises(UsageError) as refused:
        new_silence(cfg, late)
    assert str(refused.value).startswith("--for/--until: timestamp is outside")


def _walk_all(book: SilenceBook, alert: Alert, endpoint: str, now: datetime) -> Silence | None:
    """What `silencing` answered before the index: every silence of the book looked at."""
    found = [s for s in book.silences.values() if s.in_force(now) and s.matches(alert, endpoint)]
    return max(found, key=lambda s: (s.ends_at, s.silence_id), default=None)


_UNITS = ["DYE-01", "KNIT-03", "KNIT-04"]
_STAGES = ["dyeing", "knitting"]
_TYPES = [AlertType.STAGE_OVERDUE.value, AlertType.ORDER_DISRUPTED.value]


@st.composite
def _silences(draw: st.DrawFn) -> Silence:
    matchers = {
        "units": draw(st.lists(st.sampled_from(_UNITS), max_size=2)),
        "stages": draw(st.lists(st.sampled_from(_STAGES), max_size=2)),
        "types": draw(st.lists(st.sampled_from(_TYPES), max_size=2)),
        "order_ids": draw(st.lists(st.sampled_from(["PO-1", "PO-2", "PO-3"]), max_size=2)),
        "customer_ids": draw(st.lists(st.sampled_from(["C-0", "C-1", "C-2"]), max_size=2)),
        "endpoints": draw(st.lists(st.sampled_from(["ops", "pager"]), max_size=1)),
    }
    if not any(matchers[m] for m in ("units", "stages", "types", "order_ids", "customer_ids")):
        matchers["types"] = [_TYPES[0]]
    start = NOW + timedelta(hours=draw(st.integers(-3, 2)))
    return silence(
        **matchers, starts_at=start, ends_at=start + timedelta(hours=draw(st.integers(1, 4)))
    )


@st.composite
def _alerts(draw: st.DrawFn) -> Alert:
    n = draw(st.integers(1, 3))
    cause = draw(st.sampled_from([None, *_UNITS]))
    return make_alert(n, stage=draw(st.sampled_from(_STAGES))).model_copy(
        update={
            "type": AlertType(draw(st.sampled_from(_TYPES))),
            "unit_id": draw(st.sampled_from([None, *_UNITS])),
            "cause": None if cause is None else AlertCause(unit_id=cause, since=NOW),
        }
    )


@settings(max_examples=300, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 7), st.one_of(st.none(), _silences())), min_size=1, max_size=25
    ),
    alerts=st.lists(_alerts(), min_size=1, max_size=6),
    at=st.integers(-3, 5),
    endpoint=st.sampled_from(["ops", "pager"]),
)
def test_the_indexed_look_up_answers_as_a_walk_over_every_silence(
    writes: list[tuple[int, Silence | None]], alerts: list[Alert], at: int, endpoint: str
) -> None:
    """Keys written again (a silence extended, its matchers edited), tombstones and the
    bound's trim all keep the index in step with the book: whichever silence covers an
    alert is found, and the one ending last is named, as by reading every silence."""
    book = SilenceBook(limit=5)
    now = NOW + timedelta(hours=at)
    for key, written in writes:
        book.put(f"k{key}", written, now=now)
    for alert in alerts:
        assert book.silencing(alert, endpoint, now) == _walk_all(book, alert, endpoint, now)


def test_a_look_up_reads_only_the_silences_that_can_cover_the_alert() -> None:
    """At the bound of 10,000 silences, one alert's look-up reads those indexed under its
    own values, not every silence: a walk over all took tens of ms per delivery."""
    book = SilenceBook()
    for i in range(9_999):
        other = silence(units=[f"U-{i}"])
        book.put(other.silence_id, other)
    covering = silence(units=["DYE-01"])
    book.put(covering.silence_id, covering)
    alert = make_alert(1)
    assert book._candidates(alert) == {covering.silence_id}
    assert book.silencing(alert, "ops", NOW + timedelta(hours=1)) == covering


def test_a_silence_of_every_alert_is_refused_naming_the_options_to_give() -> None:
    """The line named the model's fields (`units, ..., order_ids or customer_ids`): a reader
    of it types `--units` or `--order_ids`, which do not exist."""
    fields = {"starts_at": NOW, "ends_at": NOW + timedelta(hours=4), "reason": "r"}
    for matchers in ({}, {"endpoints": ["ops"]}):
        with pytest.raises(UsageError) as refused:
            new_silence(Settings(), {**fields, **matchers})
        assert str(refused.value) == (
            "give at least one of --unit, --stage, --type, --order or --customer: "
            "a silence of every alert is refused"
        )
