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
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from dead_servers import outcome_within
from loopback_http import serving

from chainwatch.free_port import free_port
from dashboards.errors import PublishError
from dashboards.publish import publish
from schemas.plan import load_plan

TOKEN = "glsa_test_token"


CH = "http://ch.example:8123"
"""A ClickHouse URL: the datasource is created and the run goes on to the folder."""


class FakeGrafana:
    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.hostile: dict[tuple[str, str], Callable[[BaseHTTPRequestHandler], None]] = {}
        """(method, path prefix) -> what the server does instead of answering."""
        self.stop = threading.Event()
        """Set when the test ends: a hostile handler still sending stops."""

    def misbehave(self, handler: BaseHTTPRequestHandler) -> bool:
        for (method, prefix), act in self.hostile.items():
            if handler.command == method and handler.path.startswith(prefix):
                act(handler)
                return True
        return False


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
            if state.misbehave(self) or not self._authorised():
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
            if state.misbehave(self) or not self._authorised():
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
    with serving(_handler(state)) as port:
        try:
            yield f"http://127.0.0.1:{port}", state
        finally:
            state.stop.set()  # before the shutdown: a handler waiting on it returns


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
    assert state.folders == {}  # nothing created before the error (a folder was left)


def test_a_bad_token_is_a_user_error(grafana: tuple[str, FakeGrafana]) -> None:
    url, _ = grafana
    with pytest.raises(PublishError, match="refused"):
        publish(url, "wrong", load_plan(None))


def test_an_unreachable_grafana_is_a_user_error() -> None:
    port = free_port()  # a port nobody listens on
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


# --- a hostile or broken Grafana: one-line errors, a deadline, bounded memory ---


def _answer(
    status: int, content_type: str, body: bytes
) -> Callable[[BaseHTTPRequestHandler], None]:
    def act(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return act


def _trickle(state: FakeGrafana, *, in_headers: bool) -> Callable[[BaseHTTPRequestHandler], None]:
    """A byte every 50 ms, forever (until the test ends): each read succeeds, no call ends."""

    def act(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if in_headers:
            handler.wfile.write(b"X-Slow: ")
        else:
            handler.wfile.write(b"Content-Type: application/json\r\n\r\n")
        try:
            while not state.stop.wait(0.05):  # the server's pace, not the test waiting
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except OSError:
            pass  # the client gave up

    return act


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_grafana_that_trickles_bytes_is_given_up_on_at_the_call_deadline(
    grafana: tuple[str, FakeGrafana], in_headers: bool
) -> None:
    """niquests' timeout is per read: a byte every 50 ms never trips it. The call's
    deadline is wall-clock, whatever the server does."""
    url, state = grafana
    state.hostile[("GET", "/api/folders/")] = _trickle(state, in_headers=in_headers)
    error = outcome_within(
        10, lambda: publish(url, TOKEN, load_plan(None), clickhouse_url=CH, timeout_s=1)
    )
    assert isinstance(error, PublishError)
    assert str(error) == f"Grafana at {url} did not answer GET /api/folders/chainwatch within 1 s"


def test_the_whole_publish_has_a_deadline_though_each_call_is_in_time(
    grafana: tuple[str, FakeGrafana],
) -> None:
    """Eleven calls of 0.3 s each, within a per-call timeout of 5 s, cannot fit in 1 s."""
    url, state = grafana

    def slow(handler: BaseHTTPRequestHandler) -> None:
        state.stop.wait(0.3)  # a slow Grafana's pace
        uid = handler.path.rsplit("/", 1)[-1]
        _answer(200, "application/json", json.dumps({"uid": uid, "url": "/d/x"}).encode())(handler)

    for method in ("GET", "POST"):
        state.hostile[(method, "/api/")] = slow
    error = outcome_within(
        10,
        lambda: publish(
            url, TOKEN, load_plan(None), clickhouse_url=CH, timeout_s=5, total_timeout_s=1
        ),
    )
    assert isinstance(error, PublishError)
    assert str(error).startswith(f"publishing to Grafana at {url} did not finish within 1 s")


def test_an_endless_answer_is_cut_at_the_size_cap(grafana: tuple[str, FakeGrafana]) -> None:
    """64 MB offered with no length: the client stops reading past its cap (4 MB), so the
    server can hand over little more than the cap and the kernel's buffers."""
    url, state = grafana
    sent: list[int] = [0]
    finished = threading.Event()

    def flood(handler: BaseHTTPRequestHandler) -> None:
        chunk = b"[" * 65536
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        handler.wfile.write(b"Connection: close\r\n\r\n")
        try:
            while sent[0] < 64 * 1024 * 1024 and not state.stop.is_set():
                handler.wfile.write(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass  # the client closed the connection
        finally:
            finished.set()

    state.hostile[("GET", "/api/folders/")] = flood
    error = outcome_within(
        30, lambda: publish(url, TOKEN, load_plan(None), clickhouse_url=CH, timeout_s=20)
    )
    assert isinstance(error, PublishError)
    assert str(error) == (
        f"Grafana at {url} answered GET /api/folders/chainwatch with more than 4194304 bytes"
    )
    assert finished.wait(10)
    assert sent[0] < 32 * 1024 * 1024


def test_a_declared_length_over_the_cap_is_refused_before_reading(
    grafana: tuple[str, FakeGrafana],
) -> None:
    url, state = grafana

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        handler.wfile.write(b"Content-Length: 1073741824\r\n\r\n{")
        handler.wfile.flush()
        state.stop.wait(30)  # sends nothing more: only the header can end the call in time

    state.hostile[("GET", "/api/folders/")] = huge
    error = outcome_within(
        10, lambda: publish(url, TOKEN, load_plan(None), clickhouse_url=CH, timeout_s=5)
    )
    assert isinstance(error, PublishError)
    assert "with more than 4194304 bytes" in str(error)


HTML = b"<html><body>Sign in</body></html>"


@pytest.mark.parametrize(
    ("method", "path", "answer", "says"),
    [
        (
            "GET",
            "/api/folders/",
            _answer(200, "text/html", HTML),
            "answered GET /api/folders/chainwatch with text; expected a JSON object with 'uid'",
        ),
        (
            "GET",
            "/api/datasources/uid/chainwatch-clickhouse",
            _answer(200, "text/html", HTML),
            "answered GET /api/datasources/uid/chainwatch-clickhouse with text; "
            "expected a JSON object with 'uid'",
        ),
        (
            "GET",
            "/api/datasources/uid/chainwatch-clickhouse",
            _answer(200, "application/json", HTML),
            "answered GET /api/datasources/uid/chainwatch-clickhouse with a body that is not JSON",
        ),
        (
            "GET",
            "/api/datasources/uid/chainwatch-prometheus",
            _answer(200, "application/json", b"[]"),
            "answered GET /api/datasources/uid/chainwatch-prometheus with a JSON list; "
            "expected a JSON object with 'uid'",
        ),
        (
            "POST",
            "/api/folders",
            _answer(200, "application/json", b'{"title": "Chainwatch"}'),
            "answered POST /api/folders with a JSON object without 'uid'; "
            "expected a JSON object with 'uid'",
        ),
        (
            "POST",
            "/api/dashboards/db",
            _answer(200, "text/html", HTML),
            "answered POST /api/dashboards/db with text; expected a JSON object with 'url'",
        ),
        (
            "POST",
            "/api/dashboards/db",
            _answer(200, "application/json", b'{"status": "success"}'),
            "answered POST /api/dashboards/db with a JSON object without 'url'",
        ),
        (
            "GET",
            "/api/folders/",
            _answer(302, "text/html", HTML),
            "answered GET /api/folders/chainwatch with a redirect (302)",
        ),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_one_line_error_naming_the_path(
    grafana: tuple[str, FakeGrafana],
    method: str,
    path: str,
    answer: Callable[[BaseHTTPRequestHandler], None],
    says: str,
) -> None:
    """A 200 that is a login page or a proxy's answer is never taken for "exists"."""
    url, state = grafana
    state.hostile[(method, path)] = answer
    ch_url = "http://chainwatch_grafana:s3cret@clickhouse:8123/chainwatch"
    with pytest.raises(PublishError) as caught:
        publish(url, TOKEN, load_plan(None), clickhouse_url=ch_url, timeout_s=5)
    message = str(caught.value)
    assert message.startswith(f"Grafana at {url} ")
    assert says in message
    assert "\n" not in message
    assert TOKEN not in message
    assert "s3cret" not in message
    if method == "GET":  # nothing was created on the strength of that answer
        assert [c for c in state.calls if c[0] == "POST" and c[1].startswith(path)] == []


def test_an_error_body_is_quoted_as_one_bounded_line_without_the_token(
    grafana: tuple[str, FakeGrafana],
) -> None:
    url, state = grafana
    body = f"boom {TOKEN} \x1b[31mred\n" + "x" * 200_000 + "\nsecond line\n"
    state.hostile[("GET", "/api/folders/")] = _answer(500, "text/plain", body.encode())
    with pytest.raises(PublishError) as caught:
        publish(url, TOKEN, load_plan(None), clickhouse_url=CH, timeout_s=5)
    message = str(caught.value)
    assert message.startswith(
        f"Grafana at {url} refused GET /api/folders/chainwatch: Server Error 500: boom *** "
    )
    assert len(message) < 400
    assert "\n" not in message
    assert "\x1b" not in message
    assert TOKEN not in message


@pytest.mark.parametrize(
    "bad", ["http://h:99999", "h:abc", "http://[::1", "ftp://h:3000", "http://:3000", "http://h:0"]
)
def test_a_malformed_grafana_url_is_a_one_line_error(bad: str) -> None:
    with pytest.raises(PublishError, match=r"^--url "):
        publish(bad, TOKEN, load_plan(None), timeout_s=1)


@pytest.mark.parametrize("option", ["clickhouse_url", "prometheus_url"])
@pytest.mark.parametrize(
    "bad",
    [
        "http://u:pw@h:99999/db", "http://u:pw@h:abc/db", "http://u:pw@[::1/db", "h:1",
        "http://u:pw@clickhouse.example\u2101/db",  # urlsplit's message quoted "u:pw@..."
    ],
)  # fmt: skip
def test_a_malformed_datasource_url_is_refused_before_grafana_is_called(
    grafana: tuple[str, FakeGrafana], option: str, bad: str
) -> None:
    url, state = grafana
    with pytest.raises(PublishError) as caught:
        publish(url, TOKEN, load_plan(None), timeout_s=5, **{option: bad})  # type: ignore[arg-type]
    assert str(caught.value).startswith("--" + option.replace("_", "-") + " ")
    assert "pw" not in str(caught.value)
    assert state.calls == []


URL_OF_NO_GRAFANA = "http://127.0.0.1:9"
"""Never called: every option is checked before Grafana is."""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--url", "http://h:99999"], "--url is not a valid URL"),
        (["--url", "ftp://h:3000"], "--url must be an http(s) URL"),
        (["--url", URL_OF_NO_GRAFANA, "--clickhouse-url", "h:1"], "--clickhouse-url must be"),
        (["--url", URL_OF_NO_GRAFANA, "--prometheus-url", "http://h:0"], "--prometheus-url has"),
        (["--url", URL_OF_NO_GRAFANA, "--token", " glsa_tok"], "--token (or CHAINWATCH_GRAFANA"),
    ],
)
def test_the_cli_reports_a_malformed_option_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    said: str,
) -> None:
    """Found before Grafana is called, so the options' fault: exit 2 and where help is, as
    click's own (it was exit 1, said as Grafana's refusals are)."""
    from chainwatch import cli_context
    from chainwatch.cli import main
    from chainwatch.settings import Settings

    monkeypatch.setitem(cli_context.state, "settings", Settings())
    argv = ["dashboards", "publish", "--token", TOKEN, *args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {said}")
    assert lines[0].endswith("(see `chainwatch dashboards publish --help`)")
    assert "glsa_tok" not in lines[0]


@pytest.mark.parametrize(
    "bad",
    ["", "glsa_tok\n", " glsa_tok", "glsa\r\nX-Evil: 1", "glsa_\x00", "glsa_токен", "glsa_🔑"],
)
def test_a_token_no_header_can_carry_is_a_one_line_error_before_grafana_is_called(
    grafana: tuple[str, FakeGrafana], bad: str
) -> None:
    """Such a token read "cannot reach Grafana ...: InvalidHeader", or, outside Latin-1,
    an internal error (`UnicodeEncodeError`); the message never quotes it."""
    url, state = grafana
    with pytest.raises(
        PublishError, match=r"^--token \(or CHAINWATCH_GRAFANA_TOKEN\) is "
    ) as caught:
        publish(url, bad, load_plan(None), timeout_s=5)
    assert "\n" not in str(caught.value)
    if bad:
        assert bad.strip() not in str(caught.value)
    assert state.calls == []
