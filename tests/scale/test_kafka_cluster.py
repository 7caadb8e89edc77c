"""Kafka cluster settings: min.insync.replicas, and doctor's replication verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from chainwatch.doctor import project_topic, replication_check
from chainwatch.settings import KafkaSettings, Settings


def test_min_insync_replicas_cannot_exceed_the_replication_factor() -> None:
    with pytest.raises(ValidationError, match="cannot exceed replication_factor"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)
    cluster = KafkaSettings(replication_factor=3, min_insync_replicas=2)
    assert cluster.topic_configs() == {"min.insync.replicas": "2"}


def test_one_broker_with_replication_1_is_fine() -> None:
    check = replication_check(1, {"scans": 1}, configured=1, min_insync=1)
    assert check.ok
    assert not check.warning


def test_a_multi_broker_cluster_with_replication_1_topics_warns_and_names_them() -> None:
    topics = {f"t{i}": 1 for i in range(7)} | {"scans": 3}
    check = replication_check(3, topics, configured=1, min_insync=1)
    assert check.ok  # a warning does not fail doctor
    assert check.warning
    assert "7 topics with replication 1: t0, t1, t2, t3, t4 (+2 more)" in check.detail
    assert "CHAINWATCH_KAFKA__REPLICATION_FACTOR=3" in check.detail


def test_replicated_topics_on_a_cluster_are_ok_unless_min_insync_is_1() -> None:
    good = replication_check(3, {"scans": 3, "alerts": 2}, configured=3, min_insync=2)
    assert good.ok
    assert not good.warning
    weak = replication_check(3, {"scans": 3}, configured=3, min_insync=1)
    assert weak.warning
    assert "MIN_INSYNC_REPLICAS=2" in weak.detail


def test_a_replication_factor_above_the_broker_count_fails() -> None:
    check = replication_check(1, {}, configured=3, min_insync=2)
    assert not check.ok
    assert "the cluster has 1 broker" in check.detail


def test_project_topics_are_contract_engine_and_kafka_internal_ones() -> None:
    settings = Settings(kafka={"topic_prefix": "p."}, engine={"app_id": "cw"})  # type: ignore[call-arg]
    assert project_topic("p.scans", settings)
    assert project_topic("p.webhook-deliveries", settings)
    assert project_topic("cw-orders-changelog", settings)
    assert project_topic("__consumer_offsets", settings)
    assert not project_topic("someone-elses-topic", settings)
    assert not project_topic("scans", settings)


@pytest.mark.integration
def test_doctor_on_the_real_broker_reads_its_metadata(kafka_bootstrap: str, tmp_path: Path) -> None:
    """One broker, replication 2 asked for: doctor names the mismatch and fails."""
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "doctor"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CHAINWATCH_KAFKA__REPLICATION_FACTOR": "2",
            "CHAINWATCH_DATA_DIR": str(tmp_path),
        },
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["kafka"].lstrip().startswith("ok")
    assert "FAIL" in lines["replication"]
    assert "REPLICATION_FACTOR=2 but the cluster has 1 broker" in result.stdout
    assert lines["clickhouse"].lstrip().startswith("ok")
