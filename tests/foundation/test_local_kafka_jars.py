"""The broker jars are fetched once even when two processes start a broker at once.

On a fresh clone the suite's two pytest sessions (`make test`: `pytest -n 2`) each
start a broker and so each fetch the jars; the second to finish Maven failed to
put its copy in place ("Directory not empty") and every broker test of its
session errored.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import Any

import pytest

from chainwatch import local_kafka
from chainwatch.local_kafka import BrokerError, fetch_jars, install_jars

WAIT_S = 10.0


def _complete_copy(path: Path, marker: str) -> Path:
    path.mkdir(parents=True)
    (path / "kafka.jar").write_text(marker)
    (path / ".complete").touch()
    return path


def test_a_complete_copy_already_in_place_is_kept_and_the_new_one_dropped(tmp_path: Path) -> None:
    target = _complete_copy(tmp_path / "4.1.2", "first")
    staging = _complete_copy(tmp_path / "jars-x", "second")
    install_jars(staging, target)
    assert (target / "kafka.jar").read_text() == "first"
    assert not staging.exists()


def test_a_download_is_moved_into_place(tmp_path: Path) -> None:
    staging = _complete_copy(tmp_path / "jars-x", "only")
    install_jars(staging, tmp_path / "4.1.2")
    assert (tmp_path / "4.1.2" / "kafka.jar").read_text() == "only"
    assert not staging.exists()


def test_an_incomplete_copy_in_place_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "4.1.2"
    target.mkdir()
    (target / "half.jar").write_text("x")
    install_jars(_complete_copy(tmp_path / "jars-x", "whole"), target)
    assert sorted(p.name for p in target.iterdir()) == [".complete", "kafka.jar"]


def test_a_copy_that_cannot_be_put_in_place_is_a_clear_error(tmp_path: Path) -> None:
    staging = _complete_copy(tmp_path / "jars-x", "x")
    with pytest.raises(BrokerError, match="could not put the Kafka jars"):
        install_jars(staging, tmp_path / "missing-parent" / "4.1.2")
    assert not staging.exists()


def test_two_processes_fetching_at_once_download_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second waits for the first's lock, then finds the cache complete."""
    target = tmp_path / "lib" / "4.1.2"
    monkeypatch.setattr(local_kafka, "jar_dir", lambda: target)
    downloads: list[str] = []
    first_in, first_go, second_waits = threading.Event(), threading.Event(), threading.Event()

    def download(into: Path, _progress: Any) -> None:
        downloads.append(threading.current_thread().name)
        first_in.set()
        assert first_go.wait(WAIT_S)
        install_jars(_complete_copy(into.parent / "jars-x", "jar"), into)

    real_flock = fcntl.flock

    def flock(handle: Any, operation: int) -> None:
        try:
            real_flock(handle, operation)
        except BlockingIOError:
            if threading.current_thread().name == "second":
                second_waits.set()  # refused: the first holds the lock
            raise

    monkeypatch.setattr(local_kafka, "_download", download)
    monkeypatch.setattr(local_kafka.fcntl, "flock", flock)
    results: dict[str, Path] = {}

    def fetch() -> None:
        results[threading.current_thread().name] = fetch_jars()

    first = threading.Thread(target=fetch, name="first")
    second = threading.Thread(target=fetch, name="second")
    first.start()
    assert first_in.wait(WAIT_S)
    second.start()
    assert second_waits.wait(WAIT_S)  # the second waits for the lock while the first fetches
    first_go.set()
    first.join(WAIT_S)
    second.join(WAIT_S)
    assert not first.is_alive()
    assert not second.is_alive()
    assert downloads == ["first"]
    assert results == {"first": target, "second": target}
    assert (target / ".complete").exists()


def test_a_fetch_waits_for_another_process_s_lock_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "lib" / "4.1.2"
    target.parent.mkdir(parents=True)
    monkeypatch.setattr(local_kafka, "jar_dir", lambda: target)
    monkeypatch.setattr(local_kafka, "FETCH_LOCK_WAIT_S", 0)
    with (target.parent / ".fetch.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process fetching (its own open file)
        with pytest.raises(BrokerError, match="another process has been fetching"):
            fetch_jars()


def test_an_installed_package_without_deploy_says_to_name_a_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel or the image carries no deploy/kafka: `chainwatch kafka start` there was
    a FileNotFoundError traceback for pom.xml."""
    from chainwatch.errors import UserError

    monkeypatch.setattr(local_kafka, "DEPLOY_DIR", tmp_path / "deploy" / "kafka")
    with pytest.raises(UserError, match="CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"):
        local_kafka.jar_dir()
