"""`chainwatch doctor`: each check says what is wrong and how to fix it."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from chainwatch.errors import UserError
from chainwatch.settings import Settings

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _tool(name: str, args: list[str], fix: str) -> Check:
    path = shutil.which(name)
    if path is None:
        return Check(name, False, f"not found on PATH; {fix}")
    result = subprocess.run([path, *args], capture_output=True, text=True, check=False, timeout=30)
    text = _ANSI.sub("", result.stdout + result.stderr)  # Maven colours its banner
    first = text.strip().splitlines()
    return Check(name, result.returncode == 0, first[0] if first else path)


def _kafka(settings: Settings) -> Check:
    from chainwatch.local_kafka import metadata_ok
    from chainwatch.logs import silenced

    bootstrap = settings.kafka.bootstrap
    with silenced("kafka", "aiokafka"):  # a refused probe is this check's FAIL line
        ok = metadata_ok(bootstrap, timeout_s=3)
    if ok:
        return Check("kafka", True, f"answering on {bootstrap}")
    fix = (
        "run `chainwatch kafka start`"
        if settings.kafka.is_local
        else "check CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS and that the brokers are up"
    )
    return Check("kafka", False, f"no answer from {bootstrap}; {fix}")


def _clickhouse(settings: Settings) -> Check:
    from sinks.clickhouse.readers import open_reader

    where = settings.clickhouse.redacted_url() or f"embedded chDB at {settings.clickhouse_dir}"
    try:
        reader = open_reader(settings)
        try:
            version = reader.query("SELECT version()").rows[0][0]
        finally:
            reader.close()
    except UserError as exc:
        return Check("clickhouse", False, str(exc))
    return Check("clickhouse", True, f"{where}, ClickHouse {version}")


def run_checks(settings: Settings) -> list[Check]:
    checks = []
    if settings.kafka.is_local:
        checks.append(_tool("java", ["-version"], "install Java 17+ (apt install openjdk-17-jre)"))
        checks.append(_tool("mvn", ["-v", "-B"], "install Maven (apt install maven)"))
    checks.append(_kafka(settings))
    checks.append(_clickhouse(settings))
    return checks
