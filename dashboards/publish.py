"""Publish the dashboards to a Grafana through its HTTP API (grafana-client).

Idempotent by uid: the folder and the datasource are looked up by their fixed
uids and created only when missing (an existing datasource is never
modified: its password lives in Grafana); every dashboard is saved with
`overwrite: true` under its fixed uid, so re-publishing replaces it.

Every call has a deadline and a size cap, and every answer used is checked
(`dashboards.grafana`); the whole run has a deadline too. The datasource URLs
are checked before Grafana is called.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from dashboards import prometheus
from dashboards.errors import PublishError
from dashboards.export import build_all, to_json
from dashboards.grafana import MAX_RESPONSE_BYTES, Grafana, base_url
from dashboards.query import DATASOURCE_UID, PLUGIN_ID
from schemas.plan import SlaPlan

DATASOURCE_NAME = "Chainwatch ClickHouse"
PROMETHEUS_NAME = "Chainwatch Prometheus"


@dataclass(frozen=True)
class PublishResult:
    folder_uid: str
    folder_created: bool
    datasource_created: bool
    dashboards: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    prometheus_datasource: str = "exists"
    """`exists`, `created`, or `missing` (the Prometheus dashboard then shows no data)."""


def folder_uid(name: str) -> str:
    """A stable uid from the folder name (Grafana uids: at most 40 of [A-Za-z0-9_-])."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-").lower()
    return (slug or "chainwatch")[:40]


def datasource_body(clickhouse_url: str) -> dict[str, Any]:
    """`POST /api/datasources` for grafana-clickhouse-datasource 4.x from an http(s) URL.

    The URL's user should be the read-only one (deploy/grafana/clickhouse-readonly.sql).
    """
    base_url(clickhouse_url, "--clickhouse-url")  # a one-line error if malformed
    parts = urlsplit(clickhouse_url)
    secure = parts.scheme == "https"
    body: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": PLUGIN_ID,
        "access": "proxy",
        "isDefault": False,
        "jsonData": {
            "host": parts.hostname,
            "port": parts.port or (8443 if secure else 8123),
            "protocol": "http",
            "secure": secure,
            "username": unquote(parts.username or "default"),
            "defaultDatabase": parts.path.strip("/") or "chainwatch",
        },
    }
    if parts.password:
        body["secureJsonData"] = {"password": unquote(parts.password)}
    return body


def prometheus_body(prometheus_url: str) -> dict[str, Any]:
    """`POST /api/datasources` for the Prometheus that scrapes the Chainwatch processes."""
    base_url(prometheus_url, "--prometheus-url")
    return {
        "name": PROMETHEUS_NAME,
        "uid": prometheus.DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": False,
        "jsonData": {"timeInterval": "15s"},
    }


def _missing(exc: PublishError) -> bool:
    return exc.status == 404


def _ensure_folder(grafana: Grafana, name: str) -> tuple[str, bool]:
    uid = folder_uid(name)
    try:
        grafana.call(lambda api: api.folder.get_folder(uid), "uid")
        return uid, False
    except PublishError as exc:
        if not _missing(exc):
            raise
    grafana.call(lambda api: api.folder.create_folder(name, uid=uid), "uid")
    return uid, True


def _ensure_datasource(grafana: Grafana, clickhouse_url: str | None) -> bool:
    try:
        grafana.call(lambda api: api.datasource.get_datasource_by_uid(DATASOURCE_UID), "uid")
        return False
    except PublishError as exc:
        if not _missing(exc):
            raise
    if clickhouse_url is None:
        raise PublishError(
            f"Grafana has no datasource with uid {DATASOURCE_UID!r}: pass --clickhouse-url "
            "(the read-only user's URL) to create it, or provision deploy/grafana/provisioning"
        )
    body = datasource_body(clickhouse_url)
    grafana.call(lambda api: api.datasource.create_datasource(body))
    return True


def _ensure_prometheus(grafana: Grafana, prometheus_url: str | None) -> str:
    try:
        grafana.call(
            lambda api: api.datasource.get_datasource_by_uid(prometheus.DATASOURCE_UID), "uid"
        )
        return "exists"
    except PublishError as exc:
        if not _missing(exc):
            raise
    if prometheus_url is None:
        return "missing"
    body = prometheus_body(prometheus_url)
    grafana.call(lambda api: api.datasource.create_datasource(body))
    return "created"


def _save(body: dict[str, Any]) -> Callable[[Any], object]:
    return lambda api: api.dashboard.update_dashboard(body)


def publish(
    url: str,
    token: str,
    plan: SlaPlan,
    *,
    folder: str = "Chainwatch",
    clickhouse_url: str | None = None,
    prometheus_url: str | None = None,
    timeout_s: float = 30.0,
    total_timeout_s: float = 120.0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> PublishResult:
    """Datasources, folder, then every dashboard; raises PublishError with Grafana's reason.

    Each call to Grafana is given `timeout_s` and the whole run `total_timeout_s`
    (wall clock, however slowly Grafana answers); an answer longer than
    `max_response_bytes` is an error. The Prometheus datasource is optional:
    without one (and no `prometheus_url`) the Prometheus dashboard is published
    all the same and says so in the result.
    """
    if clickhouse_url is not None:
        datasource_body(clickhouse_url)  # malformed: an error before Grafana is called
    if prometheus_url is not None:
        prometheus_body(prometheus_url)
    grafana = Grafana(
        url,
        token,
        call_timeout_s=timeout_s,
        total_timeout_s=total_timeout_s,
        max_bytes=max_response_bytes,
    )
    try:
        # the datasources first: a missing one without --clickhouse-url stops the run
        # before anything is created (it left a new, empty folder behind)
        datasource_created = _ensure_datasource(grafana, clickhouse_url)
        prometheus_datasource = _ensure_prometheus(grafana, prometheus_url)
        uid, folder_created = _ensure_folder(grafana, folder)
        uids, urls = [], []
        for board in build_all(plan):
            body = {
                "dashboard": {**to_json(board), "id": None},
                "folderUid": uid,
                "message": "chainwatch dashboards publish",
                "overwrite": True,
            }
            saved = grafana.call(_save(body), "url")
            uids.append(str(board.uid))
            urls.append(saved["url"])
    finally:
        grafana.close()
    return PublishResult(uid, folder_created, datasource_created, uids, urls, prometheus_datasource)
