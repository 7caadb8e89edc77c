"""The progress component of user-facing commands (`chainwatch.progress`), without Kafka."""

from __future__ import annotations

import io

import structlog
from rich.console import Console

from chainwatch.progress import ProgressDisplay, display_mode


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=100), buffer


def test_the_mode_follows_where_stderr_goes_and_json_logs_never_get_a_bar() -> None:
    terminal, _ = _console(terminal=True)
    pipe, _ = _console(terminal=False)
    assert display_mode(terminal, "console") == "bar"
    assert display_mode(pipe, "console") == "lines"
    assert display_mode(terminal, "json") == "json"
    assert display_mode(pipe, "json") == "json"


def test_a_pipe_gets_plain_periodic_lines_first_every_interval_and_last() -> None:
    console, buffer = _console(terminal=False)
    clock = Clock()
    with ProgressDisplay(console, interval_s=5.0, clock=clock) as progress:
        for done in range(0, 10_001, 500):  # a report every second
            progress("publishing", done=done, total=10_000)
            clock.now += 1.0
        progress("publishing", done=10_000, total=10_000)  # the same figures again
        progress("published 10000 records (0 bad lines) in 21.0s")
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "replay: publishing: 0/10000",
        "replay: publishing: 2500/10000",
        "replay: publishing: 5000/10000",
        "replay: publishing: 7500/10000",
        "replay: publishing: 10000/10000",
        "replay: published 10000 records (0 bad lines) in 21.0s",
    ]
    assert "\x1b" not in buffer.getvalue()  # no terminal control codes in a file


def test_a_message_without_figures_repeats_at_most_once_per_interval() -> None:
    console, buffer = _console(terminal=False)
    clock = Clock()
    progress = ProgressDisplay(console, label="backtest", interval_s=5.0, clock=clock)
    for _ in range(10):  # wait_until_idle says it every 2 s while the group is not there
        progress("plan-a: waiting for the engine")
        clock.now += 2.0
    assert buffer.getvalue().splitlines() == ["backtest: plan-a: waiting for the engine"] * 4


def test_markup_in_messages_is_printed_as_text() -> None:
    console, buffer = _console(terminal=False)
    ProgressDisplay(console)("plan [bold]x[/]: stored run 1")
    assert buffer.getvalue() == "replay: plan [bold]x[/]: stored run 1\n"


def test_a_terminal_gets_a_bar_and_the_other_messages_as_lines() -> None:
    console, buffer = _console(terminal=True)
    with ProgressDisplay(console) as progress:
        assert progress.mode == "bar"
        progress("publishing", done=5, total=10)
        progress("published 10 records (0 bad lines) in 0.1s")
    text = buffer.getvalue()
    assert "5/10" in text  # the bar, drawn before it is cleared
    assert "━" in text
    assert "published 10 records" in text


def test_json_logs_get_events_with_figures_and_no_bar_even_on_a_terminal() -> None:
    console, buffer = _console(terminal=True)
    clock = Clock()
    with (
        structlog.testing.capture_logs() as events,
        ProgressDisplay(console, log_format="json", clock=clock) as progress,
    ):
        assert progress.mode == "json"
        progress("waiting for the engine", done=0, total=40)
        progress("waiting for the engine", done=10, total=40)  # within the interval
        clock.now += 10
        progress("waiting for the engine", done=40, total=40)
        progress("done in 3.0s: 2 alerts, 0 dead letters")
    assert buffer.getvalue() == ""
    assert [(e["event"], e.get("done"), e.get("total")) for e in events] == [
        ("waiting for the engine", 0, 40),
        ("waiting for the engine", 40, 40),
        ("done in 3.0s: 2 alerts, 0 dead letters", None, None),
    ]


def test_result_lines_are_written_as_is_or_as_json_events() -> None:
    console, buffer = _console(terminal=False)
    ProgressDisplay(console).say("dead letters: [6]", dead_letters=6)
    assert buffer.getvalue() == "dead letters: [6]\n"
    console, buffer = _console(terminal=True)
    with structlog.testing.capture_logs() as events:
        ProgressDisplay(console, log_format="json").say("dead letters: 6", dead_letters=6)
    assert buffer.getvalue() == ""
    assert [(e["event"], e["dead_letters"]) for e in events] == [("dead letters: 6", 6)]
