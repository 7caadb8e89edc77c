"""`publish` against a local server implementing the Grafana HTTP API endpoints it calls.

Request bodies are checked against Grafana's documented API
(https://grafana.com/docs/grafana/latest/developers/http_api/): folder
`POST /api/folders` {title, uid}; datasource `POST /api/datasources`
{name, type, access, uid, jsonData, secureJsonData}; dashboard
`POST /api/dashboards/db` {dashboard{id: null, uid, title, ...}, folderUid,
message, overwrite}.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dashboards.errors import PublishError
from dashboards.publish import publish
from schemas.plan import load_plan

TOKEN = "glsa_test_token"


class FakeGrafana:
    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.problems: list[str] = []


def _handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - a fake Grafana API
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"message": "Unauthorized"})
                return False
            return True

        def do_GET(self) -> None:
            state.calls.append(("GET", self.path))
            if not self._authorised():
                return
            if self.path.startswith("/api/folders/"):
                uid = self.path.removeprefix("/api/folders/")
                found = state.folders.get(uid)
            elif self.path.startswith("/api/datasources/uid/"):
                found = state.datasources.get(self.path.removeprefix("/api/datasources/uid/"))
            else:
                self._reply(404, {"message": "Not found"})
                return
            if found is None:
                self._reply(404, {"message": "not found"})
            else:
                self._reply(200, found)

        def do_POST(self) -> None:
            state.calls.append(("POST", self.path))
            if not self._authorised():
                return
            if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                state.problems.append(f"{self.path}: not JSON")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/api/folders":
                self._folder(body)
            elif self.path == "/api/datasources":
                self._datasource(body)
            elif self.path == "/api/dashboards/db":
                self._dashboard(body)
            else:
                self._reply(404, {"message": "Not found"})

        def _folder(self, body: dict[str, Any]) -> None:
            if set(body) - {"title", "uid", "parentUid"} or not isinstance(body.get("title"), str):
                state.problems.append(f"folder body {body}")
            uid = body["uid"]
            if uid in state.folders:
                self._reply(409, {"message": "a folder with the same uid already exists"})
                return
            state.folders[uid] = {"id": len(state.folders) + 1, "uid": uid, "title": body["title"]}
            self._reply(200, state.folders[uid])

        def _datasource(self, body: dict[str, Any]) -> None:
            required = {"name", "type", "access"}
            if not required <= set(body) or body["access"] not in ("proxy", "direct"):
                state.problems.append(f"datasource body {body}")
            json_data = body.get("jsonData", {})
            if body.get("type") == "prometheus":
                if not str(body.get("url", "")).startswith("http"):
                    state.problems.append(f"prometheus url {body.get('url')}")
            elif not {"host", "port", "protocol", "username", "defaultDatabase"} <= set(json_data):
                state.problems.append(f"clickhouse jsonData {json_data}")
            if "password" in json_data:
                state.problems.append("password outside secureJsonData")
            uid = body["uid"]
            if uid in state.datasources:
                self._reply(409, {"message": "data source with the same uid already exists"})
                return
            state.datasources[uid] = {**body, "id": len(state.datasources) + 1}
            self._reply(200, {"datasource": state.datasources[uid], "id": 1, "message": "added"})

        def _dashboard(self, body: dict[str, Any]) -> None:
            dash = body.get("dashboard")
            if not isinstance(dash, dict) or not dash.get("uid") or not dash.get("title"):
                state.problems.append(f"dashboard body {str(body)[:200]}")
                self._reply(400, {"message": "bad request"})
                return
            if dash.get("id") is not None:
                state.problems.append("dashboard id must be null (uid identifies it)")
            if body.get("folderUid") not in state.folders:
                state.problems.append(f"unknown folderUid {body.get('folderUid')}")
            if body.get("overwrite") is not True:
                state.problems.append("overwrite must be true")
            if set(body) - {"dashboard", "folderUid", "message", "overwrite", "folderId"}:
                state.problems.append(f"dashboard body keys {sorted(body)}")
            uid = dash["uid"]
            version = state.dashboards.get(uid, {}).get("version", 0) + 1
            state.dashboards[uid] = {"dashboard": dash, "version": version}
            self._reply(
                200,
                {
                    "id": len(state.dashboards),
                    "uid": uid,
                    "url": f"/d/{uid}/x",
                    "status": "success",
                    "version": version,
                    "slug": "x",
                },
            )

    return Handler


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_publish_creates_folder_and_datasource_then_is_idempotent(
    grafana: tuple[str, FakeGrafana],
) -> None:
    url, state = grafana
    plan = load_plan(None)
    ch_url = "http://chainwatch_grafana:s3cret@clickhouse:8123/chainwatch"

    first = publish(url, TOKEN, plan, folder="Supply Chain", clickhouse_url=ch_url)
    assert first.folder_created
    assert first.datasource_created
    assert state.folders == {
        "supply-chain": {"id": 1, "uid": "supply-chain", "title": "Supply Chain"}
    }
    source = state.datasources["chainwatch-clickhouse"]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["host"] == "clickhouse"
    assert source["jsonData"]["username"] == "chainwatch_grafana"
    assert source["secureJsonData"] == {"password": "s3cret"}
    assert set(state.dashboards) == set(first.dashboards)
    assert len(first.dashboards) == 8
    assert first.prometheus_datasource == "missing"  # published all the same

    second = publish(url, TOKEN, plan, folder="Supply Chain", clickhouse_url=ch_url)
    assert not second.folder_created
    assert not second.datasource_created
    assert len(state.folders) == 1
    assert len(state.datasources) == 1
    assert {d["version"] for d in state.dashboards.values()} == {2}
    assert [c for c in state.calls if c == ("POST", "/api/folders")] == [("POST", "/api/folders")]
    assert state.problems == []


def test_missing_datasource_without_a_url_is_a_user_error(
    grafana: tuple[str, FakeGrafana],
) -> None:
    url, state = grafana
    with pytest.raises(PublishError, match="--clickhouse-url"):
        publish(url, TOKEN, load_plan(None))
    assert state.dashboards == {}


def test_a_bad_token_is_a_user_error(grafana: tuple[str, FakeGrafana]) -> None:
    url, _ = grafana
    with pytest.raises(PublishError, match="refused"):
        publish(url, "wrong", load_plan(None))


def test_an_unreachable_grafana_is_a_user_error() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PublishError, match="cannot reach Grafana"):
        publish(f"http://127.0.0.1:{port}", TOKEN, load_plan(None), timeout_s=5)


def test_publish_creates_the_prometheus_datasource_when_given_its_url(
    grafana: tuple[str, FakeGrafana],
) -> None:
    url, state = grafana
    ch_url = "http://chainwatch_grafana:s3cret@clickhouse:8123/chainwatch"
    first = publish(
        url, TOKEN, load_plan(None), clickhouse_url=ch_url, prometheus_url="http://prom:9090"
    )
    assert first.prometheus_datasource == "created"
    source = state.datasources["chainwatch-prometheus"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prom:9090")
    again = publish(url, TOKEN, load_plan(None), prometheus_url="http://prom:9090")
    assert again.prometheus_datasource == "exists"
    assert len(state.datasources) == 2
    assert state.problems == []
