"""`chainwatch silences add --unit U` for a unit that is not there: a silence for a
misspelt unit silently held nothing, and the night shift that thought it had silenced the
unit's pages was paged. A value that is no unit id by the contract's rules is refused (a
usage error naming it); a unit, or an order, the store has never seen is said in one
warning line, and the silence is added all the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_in_process import Answer, cli_in_process

from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate


@pytest.mark.parametrize("unit", ["KNIT 03", "KNIT-03/", "", "K" * 65, "KNÏT-03"])
def test_a_unit_the_contract_would_refuse_is_a_usage_error_naming_it(
    unit: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused before Kafka is asked (the broker here is a closed port)."""
    env = {
        "CHAINWATCH_DATA_DIR": str(tmp_path),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    said = cli_in_process(
        ["silences", "add", "--unit", "KNIT-01", "--unit", unit, "--for", "1h", "--reason", "r"],
        env,
        monkeypatch,
        capsys,
        settings_built=True,
    )
    assert said.returncode == 2, said
    assert said.stderr.startswith(f"error: --unit {unit!r}: not a unit id ("), said.stderr
    assert "as the contract's unit_id) (see `chainwatch silences add --help`)" in said.stderr
    assert said.stdout == ""


def _store_that_saw(settings: Settings) -> None:
    """A migrated store with a status of KNIT-01, a scan at KNIT-02 and the order O-1."""
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        client.command(
            "INSERT INTO unit_status (event_id, unit_id, status, event_time, kafka_topic, "
            "kafka_partition, kafka_offset) VALUES ('e1', 'KNIT-01', 'down', now64(3), 't', 0, 0)"
        )
        client.command(
            "INSERT INTO scans (event_id, order_id, stage, action, unit_id, event_time, "
            "attributes, kafka_topic, kafka_partition, kafka_offset) VALUES "
            "('e2', 'O-1', 'knitting', 'start', 'KNIT-02', now64(3), '{}', 't', 0, 0)"
        )
        client.command(
            "INSERT INTO orders (order_id, customer_tier, status, version, as_of, kafka_topic, "
            "kafka_partition, kafka_offset) VALUES ('O-1', 'gold', 'open', 1, now64(3), 't', 0, 0)"
        )
    finally:
        client.close()


def test_a_unit_or_order_never_seen_is_one_warning_and_the_silence_is_added(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory()

    def cli(*args: str) -> Answer:
        capsys.readouterr()
        return cli_in_process(
            list(args), settings.to_env(), monkeypatch, capsys, settings_built=True
        )

    add = ["silences", "add", "--for", "1h", "--reason", "needle bed"]
    # no store yet (never migrated): nothing to say either way, no warning
    quiet = cli(*add, "--unit", "KNTI-03")
    assert quiet.returncode == 0, quiet.stderr
    assert "warning" not in quiet.stderr

    _store_that_saw(settings)
    units = ["--unit", "KNIT-01", "--unit", "KNIT-02", "--unit", "KNTI-03"]
    added = cli(*add, *units, "--order", "O-1", "--order", "O-9")
    assert added.returncode == 0, added.stderr
    warnings = [line for line in added.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --unit KNTI-03: no scan or status of it in the store; a misspelt unit "
        "silences nothing (the silence is added)",
        "warning: --order O-9: no such order in the store; a misspelt order silences "
        "nothing (the silence is added)",
    ], added.stderr
    silence_id = added.stdout.strip()
    assert silence_id in cli("silences", "list").stdout

    seen = cli(*add, "--unit", "KNIT-01", "--order", "O-1")
    assert seen.returncode == 0, seen.stderr
    assert "warning" not in seen.stderr


def test_an_endpoint_the_subscriptions_file_lacks_is_one_warning_and_the_silence_is_added(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--endpoint opps` (for `ops`) silenced nothing and said nothing. It is said now, in
    one warning line with the file's names, and the silence is added all the same: in a
    rolling change of the file another notifier may have the endpoint already. A name of
    the file, or no file set, is said nothing of."""
    subs = tmp_path / "subscriptions.yaml"
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    endpoints = [
        {"name": n, "url": f"https://h.example/{n}", "secret": secret} for n in ("ops", "dev")
    ]
    subs.write_text(json.dumps({"endpoints": endpoints}))
    settings = settings_factory(webhooks={"subscriptions": str(subs)})

    def cli(*args: str) -> Answer:
        capsys.readouterr()
        return cli_in_process(
            list(args), settings.to_env(), monkeypatch, capsys, settings_built=True
        )

    add = ["silences", "add", "--unit", "KNIT-01", "--for", "1h", "--reason", "needle bed"]
    typo = cli(*add, "--endpoint", "ops", "--endpoint", "opps")
    assert typo.returncode == 0, typo.stderr
    warnings = [line for line in typo.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --endpoint opps: no endpoint of the subscriptions file (ops, dev); a "
        "misspelt endpoint silences nothing (the silence is added)"
    ], typo.stderr
    assert typo.stdout.strip() in cli("silences", "list").stdout

    known = cli(*add, "--endpoint", "dev")
    assert known.returncode == 0, known.stderr
    assert "warning" not in known.stderr
    monkeypatch.delenv("CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS", raising=False)
    no_file = settings_factory()
    capsys.readouterr()
    unset = cli_in_process(
        [*add, "--endpoint", "opps"], no_file.to_env(), monkeypatch, capsys, settings_built=True
    )
    assert unset.returncode == 0, unset.stderr
    assert "warning" not in unset.stderr
