"""Publish the dashboards to a Grafana through its HTTP API (grafana-client).

Idempotent by uid: the folder and the datasource are looked up by their fixed
uids and created only when missing (an existing datasource is never
modified: its password lives in Grafana); every dashboard is saved with
`overwrite: true` under its fixed uid, so re-publishing replaces it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards import prometheus
from dashboards.errors import PublishError
from dashboards.export import build_all, to_json
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
    parts = urlsplit(clickhouse_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublishError(
            "--clickhouse-url must look like http://user:password@host:8123/database"
        )
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
    parts = urlsplit(prometheus_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublishError("--prometheus-url must look like http://prometheus:9090")
    return {
        "name": PROMETHEUS_NAME,
        "uid": prometheus.DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": False,
        "jsonData": {"timeInterval": "15s"},
    }


def _missing(exc: GrafanaException) -> bool:
    return isinstance(exc, GrafanaClientError) and exc.status_code == 404


def _ensure_folder(api: Any, name: str) -> tuple[str, bool]:
    uid = folder_uid(name)
    try:
        api.folder.get_folder(uid)
        return uid, False
    except GrafanaException as exc:
        if not _missing(exc):
            raise
    api.folder.create_folder(name, uid=uid)
    return uid, True


def _ensure_datasource(api: Any, clickhouse_url: str | None) -> bool:
    try:
        api.datasource.get_datasource_by_uid(DATASOURCE_UID)
        return False
    except GrafanaException as exc:
        if not _missing(exc):
            raise
    if clickhouse_url is None:
        raise PublishError(
            f"Grafana has no datasource with uid {DATASOURCE_UID!r}: pass --clickhouse-url "
            "(the read-only user's URL) to create it, or provision deploy/grafana/provisioning"
        )
    api.datasource.create_datasource(datasource_body(clickhouse_url))
    return True


def _ensure_prometheus(api: Any, prometheus_url: str | None) -> str:
    try:
        api.datasource.get_datasource_by_uid(prometheus.DATASOURCE_UID)
        return "exists"
    except GrafanaException as exc:
        if not _missing(exc):
            raise
    if prometheus_url is None:
        return "missing"
    api.datasource.create_datasource(prometheus_body(prometheus_url))
    return "created"


def publish(
    url: str,
    token: str,
    plan: SlaPlan,
    *,
    folder: str = "Chainwatch",
    clickhouse_url: str | None = None,
    prometheus_url: str | None = None,
    timeout_s: float = 30.0,
) -> PublishResult:
    """Folder, datasources, then every dashboard; raises PublishError with Grafana's reason.

    The Prometheus datasource is optional: without one (and no `prometheus_url`)
    the Prometheus dashboard is published all the same and says so in the result.
    """
    api: Any = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        uid, folder_created = _ensure_folder(api, folder)
        datasource_created = _ensure_datasource(api, clickhouse_url)
        prometheus_datasource = _ensure_prometheus(api, prometheus_url)
        uids, urls = [], []
        for board in build_all(plan):
            body = {
                "dashboard": {**to_json(board), "id": None},
                "folderUid": uid,
                "message": "chainwatch dashboards publish",
                "overwrite": True,
            }
            saved = api.dashboard.update_dashboard(body)
            uids.append(str(board.uid))
            urls.append(str(saved.get("url", "")))
    except GrafanaException as exc:
        raise PublishError(f"Grafana at {_safe(url)} refused: {exc.message}") from None
    except niquests.exceptions.RequestException as exc:
        raise PublishError(f"cannot reach Grafana at {_safe(url)}: {type(exc).__name__}") from None
    return PublishResult(uid, folder_created, datasource_created, uids, urls, prometheus_datasource)


def _safe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
