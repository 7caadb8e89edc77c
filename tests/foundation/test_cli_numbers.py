"""Every float option of the CLI refuses `nan`, `inf` and `-inf` as a usage error saying
the value is not a finite number, exit 2. `--rate nan` was refused by typer's range check
as "Input should be less than or equal to 10000000", which sent the user looking for a
number too large; a NaN passes any range it does not fail that way (it compares false)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from chainwatch.cli import app, main


def _float_options(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for param in command.params:
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        if annotation is float and param.opts[0].startswith("--"):
            yield (*path, param.opts[0])
    for name, sub in getattr(command, "commands", {}).items():
        yield from _float_options(sub, (*path, name))


FLOAT_OPTIONS = sorted(_float_options(typer.main.get_command(app), ()))


def test_the_float_options_are_found() -> None:
    """The survey below covers what it should: a float option added later is in it."""
    assert len(FLOAT_OPTIONS) >= 8, FLOAT_OPTIONS
    assert ("simulate", "--rate") in FLOAT_OPTIONS
    assert ("status", "--interval") in FLOAT_OPTIONS


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e400"])
@pytest.mark.parametrize("option", FLOAT_OPTIONS, ids=" ".join)
def test_a_non_finite_number_is_a_usage_error_saying_so(
    option: tuple[str, ...], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    *command, flag = option
    assert main([*command, flag, value]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith(
        f"error: Invalid value for '{flag}': '{value}' is not a finite number (see "
    ), said
    assert "\n" not in said


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_an_anomaly_rate_that_is_not_finite_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    args = ["simulate", "--out", str(tmp_path / "x"), "--anomaly", f"late_stage={value}"]
    assert main(args) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith(
        f"error: --anomaly 'late_stage={value}': '{value}' is not a finite number"
    ), said
    assert not (tmp_path / "x").exists()


def test_a_finite_number_out_of_range_is_still_refused_by_its_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan-capacity", "--rate", "0"]) == 2
    said = capsys.readouterr().err
    assert "'--rate': Input should be greater than or equal to 0.001 (see" in said
    assert main(["status", "--interval", "3601"]) == 2
    assert "Input should be less than or equal to 3600 (see" in capsys.readouterr().err
