"""deploy/k8s: validated offline against the Kubernetes schemas, CRs checked for the
fields docs/scaling.md relies on, and every setting, command and reference real."""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from chainwatch.cli import app
from chainwatch.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
COMPOSE = K8S.parent / "compose.yaml"
KUBERNETES_VERSION = "1.30"
CRD_GROUPS = (
    "kafka.strimzi.io",
    "clickhouse.altinity.com",
    "clickhouse-keeper.altinity.com",
    "monitoring.coreos.com",  # the PrometheusRule: tests/docs/test_alert_rules.py checks it
)


@functools.cache
def _parsed() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return tuple(docs)


def _docs() -> list[dict[str, Any]]:
    return copy.deepcopy(list(_parsed()))  # tests may not change what the next one reads


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _docs() if d["kind"] == kind]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _by_kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _is_cr(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).split("/")[0] in CRD_GROUPS


def _workloads() -> list[dict[str, Any]]:
    return [d for d in _docs() if d["kind"] in ("Deployment", "StatefulSet")]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _env_names(model: type[BaseModel], prefix: str = "CHAINWATCH_") -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def _config() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "chainwatch-config")["data"]
    return data


def _texts() -> dict[str, str]:
    """Each manifest's text, comments included (the examples a user uncomments)."""
    return {path.name: path.read_text() for path in [*sorted(K8S.glob("*.yaml")), COMPOSE]}


def _documented_secrets() -> dict[str, set[str]]:
    """The Secrets config.yaml's comments tell the user to make (`kubectl create secret
    generic <name> --from-literal=<key>=... --from-file=<key>=...`), and their keys."""
    made: dict[str, set[str]] = {}
    name = None
    for line in (K8S / "config.yaml").read_text().splitlines():
        if not line.startswith("#"):
            name = None
            continue
        if started := re.search(r"kubectl create secret generic (\S+)", line):
            name = started.group(1)
            made[name] = set()
        if name is not None:
            made[name] |= set(re.findall(r"--from-(?:literal|file)=([\w.-]+)=", line))
            if not line.rstrip().endswith("\\"):
                name = None
    return made


def _secret_settings() -> set[str]:
    """The settings that hold a secret (a `SecretStr`: shown masked, never logged)."""

    def walk(model: type[BaseModel], prefix: str) -> set[str]:
        names: set[str] = set()
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= walk(annotation, f"{prefix}{name.upper()}__")
            elif "SecretStr" in str(annotation):
                names.add(f"{prefix}{name.upper()}")
        return names

    return walk(Settings, "CHAINWATCH_")


def _hook_secrets() -> set[str]:
    """The notifier's signing secrets: the user's own names (the subscriptions' secret_env)."""
    subscriptions = yaml.safe_load(
        _one("Secret", "chainwatch-files")["stringData"]["subscriptions.yaml"]
    )
    return {e["secret_env"] for e in subscriptions["endpoints"]}


@pytest.mark.parametrize(
    "doc",
    [d for d in _docs() if not _is_cr(d)],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
@pytest.mark.slow
def test_manifest_validates_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_a_misspelled_field() -> None:
    broken = copy.deepcopy(_one("StatefulSet", "chainwatch-worker"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_required_resources_are_there() -> None:
    assert {(d["kind"], d["metadata"]["name"]) for d in _docs()} >= {
        ("StatefulSet", "chainwatch-worker"),
        ("Deployment", "chainwatch-gateway"),
        ("Deployment", "chainwatch-sink"),
        ("Deployment", "chainwatch-notifier"),
        ("Service", "chainwatch-gateway"),
        ("PodDisruptionBudget", "chainwatch-worker"),
        ("Kafka", "chainwatch"),
        ("ClickHouseInstallation", "chainwatch"),
        ("PrometheusRule", "chainwatch"),
    }


def test_workers_keep_rocksdb_on_volumes_with_standby_replicas() -> None:
    worker = _one("StatefulSet", "chainwatch-worker")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHAINWATCH_ENGINE__STORE"] == "rocksdb"
    assert int(env["CHAINWATCH_ENGINE__STANDBY_REPLICAS"]) >= 1
    claims = {c["metadata"]["name"] for c in worker["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in worker["spec"]["template"]["spec"].get("volumes", [])}
    assert mounts.keys() <= claims | volumes  # the state on claims; a secured Kafka's files
    assert mounts["state"] == _config()["CHAINWATCH_DATA_DIR"]  # faust's RocksDB lives there
    assert worker["spec"]["replicas"] <= int(_config()["CHAINWATCH_KAFKA__PARTITIONS"])
    assert "rocksdb" in (K8S.parent / "Dockerfile").read_text()  # the image has the extra


def test_every_setting_is_a_real_one_and_every_command_exists() -> None:
    known = _env_names(Settings)
    commands = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    used: set[str] = set(_config())
    for workload in _workloads():
        for container in _containers(workload):
            used |= {e["name"] for e in container.get("env", [])}
            assert container["args"][0] in commands, container["args"]
    compose = yaml.safe_load(COMPOSE.read_text())
    used |= set(compose["x-chainwatch"]["environment"])
    assert used - known - _hook_secrets() == set()
    # and every one a comment names: the commented examples (a secured Kafka's settings)
    # are what a user uncomments, a misspelt one would be ignored with a warning
    for name, text in _texts().items():
        named = set(re.findall(r"\bCHAINWATCH_[A-Z0-9_]*[A-Z0-9]\b", text))
        assert named - known - _hook_secrets() == set(), name


def test_secrets_never_sit_in_a_config_map() -> None:
    """A ConfigMap is readable by whoever may read the namespace's configuration, and shown
    by `kubectl describe`: a password, the ClickHouse URL (its password) and the signing
    secrets come from Secrets only, never a ConfigMap, its comments or a literal value."""
    secret = _secret_settings() | _hook_secrets() | {"CHAINWATCH_KAFKA__SASL_USERNAME"}
    assert {
        "CHAINWATCH_KAFKA__SASL_PASSWORD",
        "CHAINWATCH_KAFKA__SSL_KEY_PASSWORD",
        "CHAINWATCH_CLICKHOUSE__URL",
    } <= secret
    for name, text in _texts().items():
        if name == COMPOSE.name:
            continue
        for doc in re.split(r"^---$", text, flags=re.M):
            if re.search(r"^kind: ConfigMap$", doc, flags=re.M):
                assert not [s for s in secret if s in doc], name
    for workload in _workloads():
        for container in _containers(workload):
            for env in container.get("env", []):
                if env["name"] in secret:
                    assert "secretKeyRef" in env["valueFrom"], (container["name"], env)


def test_every_process_reads_a_secured_kafka_s_credentials_and_files() -> None:
    """The ConfigMap's commented SASL_SSL example works once the chainwatch-kafka Secret
    is made: every container that reads the ConfigMap (so its security protocol) gets
    the user, the password and a client key's pass phrase from that Secret and its files
    where SSL_CAFILE, SSL_CERTFILE and SSL_KEYFILE say. Optional: without the Secret, the
    Strimzi cluster's PLAINTEXT."""
    commented = dict(
        re.findall(
            r"^  #   (CHAINWATCH_KAFKA__\w+): (\S+)", (K8S / "config.yaml").read_text(), re.M
        )
    )
    assert commented["CHAINWATCH_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    files = {
        Path(commented[f"CHAINWATCH_KAFKA__{name}"])
        for name in ("SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE")
    }
    (folder,) = {f.parent for f in files}
    documented = _documented_secrets()["chainwatch-kafka"]
    from_secret = (
        "CHAINWATCH_KAFKA__SASL_USERNAME",
        "CHAINWATCH_KAFKA__SASL_PASSWORD",
        "CHAINWATCH_KAFKA__SSL_KEY_PASSWORD",  # an encrypted client key's pass phrase
    )
    assert set(from_secret) <= documented
    assert {f.name for f in files} <= documented
    readers = 0
    for workload in _workloads():
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in _containers(workload):
            if {"configMapRef": {"name": "chainwatch-config"}} not in container["envFrom"]:
                continue
            readers += 1
            env = {e["name"]: e.get("valueFrom", {}) for e in container.get("env", [])}
            for name in from_secret:
                assert env[name]["secretKeyRef"] == {
                    "name": "chainwatch-kafka", "key": name, "optional": True
                }, (container["name"], name)  # fmt: skip
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(folder)]
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == "chainwatch-kafka"
            assert secret["optional"] is True
            assert {i["path"] for i in secret["items"]} == {f.name for f in files}
    assert readers == 5  # the worker, the sink and its migration, the notifier, the gateway


def test_probes_use_declared_ports_and_the_health_endpoints() -> None:
    gateway = _one("Deployment", "chainwatch-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in gateway["env"]}
    assert "CHAINWATCH_GATEWAY__OPS_NETWORKS" in env  # else /readyz answers the kubelet 403
    assert "fieldRef" in env["CHAINWATCH_GATEWAY__TRANSACTIONAL_ID"]["valueFrom"]
    assert _config()["CHAINWATCH_METRICS_HOST"] == "0.0.0.0"  # probes come from outside the pod
    for workload in _workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] in ports


def _secret_keys(secrets: dict[str, dict[str, str]], name: str, optional: bool | None) -> set[str]:
    """The keys of Secret `name`: one of the manifests', or, read as optional, one the
    user is told to make (config.yaml's comments)."""
    if name in secrets:
        return set(secrets[name])
    assert optional, f"{name}: neither in the manifests nor read as optional"
    return _documented_secrets()[name]


def test_references_resolve() -> None:
    secrets = {d["metadata"]["name"]: d["stringData"] for d in _by_kind("Secret")}
    configmaps = {d["metadata"]["name"] for d in _by_kind("ConfigMap")}
    for workload in _workloads():
        spec = workload["spec"]["template"]["spec"]
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in _secret_keys(secrets, ref["name"], ref.get("optional"))
        for volume in spec.get("volumes", []):
            secret = volume["secret"]
            for item in secret["items"]:
                keys = _secret_keys(secrets, secret["secretName"], secret.get("optional"))
                assert item["key"] in keys
    labels = [w["spec"]["selector"]["matchLabels"] for w in _workloads()]
    for pdb in _by_kind("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] in labels
    for service in _by_kind("Service"):
        assert service["spec"]["selector"] in labels


def test_strimzi_kafka_replicates_like_the_settings_say() -> None:
    kafka = _one("Kafka", "chainwatch")
    pool = _one("KafkaNodePool")
    config = kafka["spec"]["kafka"]["config"]
    rf = int(_config()["CHAINWATCH_KAFKA__REPLICATION_FACTOR"])
    isr = int(_config()["CHAINWATCH_KAFKA__MIN_INSYNC_REPLICAS"])
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert "broker" in pool["spec"]["roles"]
    assert pool["spec"]["replicas"] >= rf > isr >= 2
    assert config["default.replication.factor"] == rf  # faust's changelog topics
    assert config["min.insync.replicas"] == isr
    assert config["offsets.topic.replication.factor"] == rf
    assert config["transaction.state.log.replication.factor"] == rf
    assert config["transaction.state.log.min.isr"] == isr
    plain = [x for x in kafka["spec"]["kafka"]["listeners"] if not x["tls"]]
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{plain[0]['port']}"
    assert _config()["CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"] == bootstrap
    assert "authentication" not in plain[0]  # a PLAINTEXT listener, as the settings say
    assert _config()["CHAINWATCH_KAFKA__SECURITY_PROTOCOL"] == "PLAINTEXT"


def test_altinity_clickhouse_has_the_cluster_macros_and_keeper_the_schema_needs() -> None:
    chi = _one("ClickHouseInstallation", "chainwatch")
    sink = _one("Deployment", "chainwatch-sink")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in sink["env"]}
    (cluster,) = chi["spec"]["configuration"]["clusters"]
    assert cluster["name"] == env["CHAINWATCH_CLICKHOUSE__CLUSTER"]["value"]
    assert cluster["layout"]["replicasCount"] >= 2  # replicated de-duplication has peers
    assert cluster["layout"]["shardsCount"] >= 1
    assert chi["spec"]["configuration"]["zookeeper"]["nodes"]
    keeper = _one("ClickHouseKeeperInstallation")
    assert keeper["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"] >= 3
    url = _one("Secret", "chainwatch-clickhouse")["stringData"]["CHAINWATCH_CLICKHOUSE__URL"]
    assert f"@clickhouse-{chi['metadata']['name']}:8123/" in url
    password_ref = chi["spec"]["configuration"]["users"]["chainwatch/k8s_secret_password"]
    secret, key = password_ref.split("/")
    assert key in _one("Secret", secret)["stringData"]


def test_the_compose_file_stays_a_single_broker_configuration() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    env = compose["x-chainwatch"]["environment"]
    assert env["CHAINWATCH_KAFKA__REPLICATION_FACTOR"] == "1"  # one broker in compose
    assert env["CHAINWATCH_KAFKA__MIN_INSYNC_REPLICAS"] == "1"
    assert "CHAINWATCH_CLICKHOUSE__CLUSTER" not in env


def test_the_example_files_secret_starts_the_notifier_once_its_secret_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`subscriptions: []` was no subscriptions file at all: the notifier crash-looped on
    `endpoints: Field required` as shipped. Every secret_env it names reaches the pod."""
    from sinks.webhooks.subscriptions import load_subscriptions

    files = _one("Secret", "chainwatch-files")["stringData"]
    path = tmp_path / "subscriptions.yaml"
    path.write_text(files["subscriptions.yaml"])
    named = {e["secret_env"] for e in yaml.safe_load(path.read_text())["endpoints"]}
    (notifier,) = _containers(_one("Deployment", "chainwatch-notifier"))
    given = {env["name"] for env in notifier.get("env", [])}
    assert named <= given
    for name in named:
        monkeypatch.setenv(name, "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    assert [e.name for e in load_subscriptions(path).endpoints] == ["ops-system"]


def test_the_image_copies_every_package_the_wheel_installs() -> None:
    """The Dockerfile left `simulator` out: hatchling built the wheel without it and every
    command of the image failed at import (chainwatch.cli imports the simulate command)."""
    import tomllib

    root = K8S.parents[1]
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    copied = {
        line.split()[1]
        for line in (K8S.parent / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert set(packages) <= copied, set(packages) - copied


LONG_RUNNING = ("worker", "sink", "gateway", "notify")
STOP_SETTINGS = ("CHAINWATCH_ENGINE__", "CHAINWATCH_GATEWAY__", "CHAINWATCH_WEBHOOKS__")


def _stop_deadline_s(command: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> float:
    """The stop deadline `command` sets itself with the settings of `env` it reads for it
    (docs/observability.md; the others need the cluster's secrets)."""
    from chainwatch import notify_runner
    from chainwatch.commands import gateway

    for name in [n for n in os.environ if n.startswith(STOP_SETTINGS)]:
        monkeypatch.delenv(name)  # the manifest's settings, not the shell's
    for name, value in env.items():
        if name.startswith(STOP_SETTINGS):
            monkeypatch.setenv(name, value)
    settings = Settings()
    if command == "gateway":
        return gateway.stop_timeout_s(settings)
    if command == "notify":
        return notify_runner.stop_timeout_s(settings)
    return settings.engine.stop_timeout_s  # the worker's and the sink's


def test_kubernetes_waits_past_every_processs_own_stop_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kubernetes kills a pod 30 s after its SIGTERM unless told otherwise: the gateway's
    stop deadline is 35 s and the notifier's 54 s by default, so a graceful stop (posts
    under way, their commit) was cut by a SIGKILL."""
    seen = set()
    for workload in _workloads():
        spec = workload["spec"]["template"]["spec"]
        for container in spec["containers"]:
            command = container["args"][0]
            if command not in LONG_RUNNING:
                continue
            seen.add(command)
            env = {
                **_config(),
                **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
            }
            with monkeypatch.context() as patched:
                deadline = _stop_deadline_s(command, env, patched)
            assert spec.get("terminationGracePeriodSeconds", 30) > deadline, command
    assert seen == set(LONG_RUNNING)


def test_compose_waits_past_every_processs_own_stop_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`docker compose stop` kills a container 10 s after its SIGTERM unless told otherwise,
    inside every process's stop deadline (30-54 s)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    seen = set()
    for service in services.values():
        command = (service.get("command") or [""])[0]
        if command not in LONG_RUNNING:
            continue
        seen.add(command)
        grace = str(service.get("stop_grace_period", "10s"))
        assert re.fullmatch(r"\d+s", grace), grace  # the form written here
        with monkeypatch.context() as patched:
            deadline = _stop_deadline_s(command, service["environment"], patched)
        assert int(grace[:-1]) > deadline, command
    assert seen == set(LONG_RUNNING)
