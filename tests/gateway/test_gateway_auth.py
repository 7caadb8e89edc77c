"""Bearer tokens: 401 without a known token, 403 outside the role or the unit's own id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from gateway_harness import TOKENS, Harness, make_registry, token_of
from samples import fresh_order as order
from samples import fresh_scan as scan
from samples import fresh_unit_status as unit_status

from streams.ingest.auth import (
    Role,
    TokenEntry,
    TokenRegistry,
    TokensFileError,
    bearer_token,
    hash_token,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    return path


def test_tokens_file_resolves_only_the_hashed_token(tmp_path: Path) -> None:
    digest = hash_token("s3cret")
    path = _write(
        tmp_path,
        f"tokens:\n  - {{name: dye, sha256: {digest.upper()}, role: unit, unit_id: DYE-01}}\n",
    )
    registry = TokenRegistry.load(path)
    entry = registry.authenticate("s3cret")
    assert entry is not None
    assert (entry.name, entry.role, entry.unit_id) == ("dye", Role.UNIT, "DYE-01")
    assert registry.authenticate(digest) is None
    assert registry.authenticate("s3cret ") is None


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("tokens:\n  - {name: a, sha256: abc, role: admin}\n", "tokens.0.sha256"),
        (f"tokens:\n  - {{name: a, sha256: {'a' * 64}, role: unit}}\n", "needs a unit_id"),
        (f"tokens:\n  - {{name: a, sha256: {'a' * 64}, role: root}}\n", "tokens.0.role"),
        (
            f"tokens:\n  - {{name: a, sha256: {'a' * 64}, role: crm}}\n"
            f"  - {{name: a, sha256: {'b' * 64}, role: crm}}\n",
            "names must be unique: 'a' in more than one entry",
        ),
        ("tokens: [\n", "cannot read"),
        # a name with a line break wrote a log line of its own at every request it made
        (
            f'tokens:\n  - {{name: "dye\\nfake_event", sha256: {"a" * 64}, role: crm}}\n',
            "tokens.0.name",
        ),
        (f'tokens:\n  - {{name: "dye\\x1b[2J", sha256: {"a" * 64}, role: crm}}\n', "tokens.0.name"),
    ],
)
def test_bad_tokens_files_name_the_problem(tmp_path: Path, body: str, complaint: str) -> None:
    with pytest.raises(TokensFileError, match=complaint):
        TokenRegistry.load(_write(tmp_path, body))


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        # a second `tokens:` key emptied the list before: every caller locked out, no error
        (f"tokens:\n  - {{name: a, sha256: {'a' * 64}, role: crm}}\ntokens: [pasted-s3cret]\n",
         "the key 'tokens' written twice (line 3, column 1)"),
        (f"tokens:\n  - {{name: a, sha256: {'a' * 64}, role: crm, role: admin}}\n",
         "the key 'role' written twice (line 2, column 100)"),
        ("tokens: []\npasted-s3cret: 1\npasted-s3cret: 2\n",
         "a key written twice (line 3, column 1)"),  # a key of its own: the user's text
        ("tokens:\n  - pasted-s3cret: [\n", "not valid YAML (line 3, column 1)"),
        ("tokens: " + "[" * 5000 + "pasted-s3cret" + "]" * 5000,
         "nested too deeply to read (line 1, column 1008)"),
    ],
)  # fmt: skip
def test_an_unreadable_tokens_file_says_where_but_never_its_text(
    tmp_path: Path, body: str, complaint: str
) -> None:
    with pytest.raises(TokensFileError) as caught:
        TokenRegistry.load(_write(tmp_path, body))
    assert str(caught.value).endswith(complaint)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("\tBearer abc \t", "abc"),
        # RFC 6750: spaces part scheme and token; other whitespace is part of the token
        ("Bearer\tabc", None),
        ("Bearer \tabc", "\tabc"),
        ("Bearer \xa0abc", "\xa0abc"),
        ("Bearer abc\x0c", "abc\x0c"),
        ("Bearer \x85abc", "\x85abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.integration
class TestThroughTheGateway:
    def test_no_token_or_unknown_token_is_401(self, gateway: Harness) -> None:
        for token, headers in ((None, {}), (None, {"Authorization": "Bearer nope"})):
            response = gateway.post("/v1/scans", [scan()], token=token, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "unauthorized"

    def test_a_token_with_other_whitespace_around_it_is_unknown(self, gateway: Harness) -> None:
        """HTTP's whitespace is space and tab, and only spaces part `Bearer` from its token
        (RFC 6750). `str.strip()` cut a no-break space or a NEL (bytes 0xA0, 0x85, which
        the HTTP parser passes, read latin-1) or a tab from the token, and such a header
        authenticated as the token within it."""
        token = token_of("admin").encode()
        body = json.dumps([scan()]).encode()

        def post(authorization: bytes) -> int:
            headers = {"Authorization": authorization, "Content-Type": "application/json"}
            return gateway.client.post("/v1/scans", content=body, headers=headers).status_code

        for around in (b"\xa0" + token, token + b"\xa0", b"\x85" + token, b"\t" + token):
            assert post(b"Bearer " + around) == 401, around
        assert post(b"Bearer  " + token) == 202  # one or more spaces (RFC 6750 `1*SP`)

    def test_a_unit_posts_its_own_scans_and_status(self, gateway: Harness) -> None:
        assert gateway.post("/v1/scans", [scan("DYE-01")], token="unit-dye").status_code == 202
        response = gateway.post("/v1/unit-status", unit_status("DYE-01"), token="unit-dye")
        assert response.status_code == 202

    def test_a_unit_may_not_post_for_another_unit(self, gateway: Harness) -> None:
        mixed = [scan("DYE-01"), scan("KNIT-02")]
        response = gateway.post("/v1/scans", mixed, token="unit-dye", params={"partial": "true"})
        assert response.status_code == 403
        assert "KNIT-02" in response.json()["detail"]
        other = gateway.post("/v1/unit-status", unit_status("KNIT-02"), token="unit-dye")
        assert other.status_code == 403
        published = {json.loads(v)["event_id"] for _, v in gateway.read_all("scans") if v}
        assert mixed[0]["event_id"] not in published

    def test_a_refusal_names_the_first_foreign_units_not_every_one(self, gateway: Harness) -> None:
        """The 403 named every foreign unit of the body, each id whole: a body of other
        units' items was repeated in the answer (the gateway's limits bound it; a
        gateway configured for large bodies answered megabytes)."""
        many = [scan("A" * 5_000)] + [scan(f"KNIT-{i:04d}") for i in range(48)]
        response = gateway.post("/v1/scans", many, token="unit-dye")
        assert response.status_code == 403, response.text[:300]
        detail = response.json()["detail"]
        assert "(5,000 characters)" in detail
        assert "'KNIT-0000'" in detail
        assert "and 44 more" in detail
        assert "KNIT-0004" not in detail
        assert len(response.content) < 1_000

    def test_an_item_that_fails_or_names_its_unit_twice_cannot_claim_another_unit(
        self, gateway: Harness
    ) -> None:
        """Partial mode dead-lettered a foreign unit's item when it did not parse (a
        `NaN`, a lone surrogate): the unit it claimed was not read, and an operator
        re-sending the dead letter would publish what the unit may not send. A key
        written twice named the token's unit last (the parser keeps the last)."""
        body = json.dumps(scan("KNIT-02"))[:-1]
        deep = ', "attributes": {"a": ' + "[" * 2000 + "]" * 2000 + "}}"
        for bad in (', "quantity": NaN}', ', "lot_id": "\\ud800"}', ",}", "} x", deep):
            response = gateway.post("/v1/scans", content=f"[{body}{bad}]".encode(),
                                    token="unit-dye", params={"partial": "true"})  # fmt: skip
            assert response.status_code == 403, response.text
            assert "KNIT-02" in response.json()["detail"]
        twice = json.dumps(scan("DYE-01")).replace('"unit_id"', '"unit_id": "KNIT-02", "unit_id"')
        response = gateway.post("/v1/scans", content=f"[{twice}]".encode(), token="unit-dye")
        assert response.status_code == 403, response.text
        ok = gateway.post("/v1/scans", content=f"[{body}, NaN]".encode(), token="admin",
                          params={"partial": "true"})  # fmt: skip
        assert ok.status_code == 202  # the same items from a token not bound to a unit

    def test_roles_are_confined_to_their_endpoints(self, gateway: Harness) -> None:
        assert gateway.post("/v1/orders", order(), token="unit-dye").status_code == 403
        assert gateway.post("/v1/scans", scan(), token="orders").status_code == 403
        assert gateway.post("/v1/customers", {}, token="orders").status_code == 403
        assert gateway.post("/v1/orders", order(), token="crm").status_code == 403
        assert gateway.post("/v1/orders", order(), token="orders").status_code == 202

    def test_tokens_never_reach_the_logs(
        self,
        gateway: Harness,
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="streams")
        caplog.set_level(logging.DEBUG, logger="aiokafka")
        caplog.set_level(logging.DEBUG, logger="uvicorn")
        gateway.post("/v1/scans", [scan()], token="unit-dye")
        gateway.post("/v1/scans", [scan()], token=None, headers={"Authorization": "Bearer leak-me"})
        captured = capfd.readouterr()
        server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
        text = captured.out + captured.err + "".join(str(r.__dict__) for r in server_side)
        assert "unit-dye" in text  # the caller is logged by name ...
        assert "secret-token-of" not in text  # ... never by token
        assert "leak-me" not in text

    def test_the_request_log_names_an_error_only_for_a_refused_request(
        self, gateway: Harness, capfd: pytest.CaptureFixture[str]
    ) -> None:
        capfd.readouterr()
        assert gateway.post("/v1/scans", [scan()], token="unit-dye").status_code == 202
        assert gateway.post("/v1/scans", [scan()], token=None).status_code == 401
        captured = capfd.readouterr()
        lines = (captured.out + captured.err).splitlines()
        ingest = [line for line in lines if "] ingest " in line]
        assert [("status=202" in line, "error=" in line) for line in ingest] == [
            (True, False),
            (False, True),
        ]
        assert "error=unauthorized" in ingest[1]

    def test_a_request_refused_for_its_role_is_logged_with_its_caller(
        self, gateway: Harness, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """The token was valid: who tried what its role may not do is what an operator
        searches the log for (the lines said `caller=None`)."""
        capfd.readouterr()
        assert gateway.post("/v1/orders", order(), token="unit-dye").status_code == 403
        delete = gateway.client.delete(
            "/v1/customers/C-1", headers={"Authorization": f"Bearer {token_of('orders')}"}
        )
        assert delete.status_code == 403
        captured = capfd.readouterr()
        lines = [
            line
            for line in (captured.out + captured.err).splitlines()
            if "] ingest " in line or "] tombstone " in line
        ]
        assert len(lines) == 2
        assert [
            ("error=forbidden" in line, line.split("caller=")[1].split()[0]) for line in lines
        ] == [
            (True, "unit-dye"),
            (True, "orders"),
        ]


def test_the_shipped_example_tokens_file_loads_and_matches_its_comment() -> None:
    root = Path(__file__).resolve().parents[2]
    registry = TokenRegistry.load(root / "deploy" / "gateway" / "tokens.example.yaml")
    entry = registry.authenticate("example-dye-token")
    assert entry is not None
    assert (entry.role, entry.unit_id) == (Role.UNIT, "DYE-01")
    admin = registry.authenticate("example-admin-token")
    assert admin is not None
    assert admin.role is Role.ADMIN


def test_only_unit_tokens_have_stages() -> None:
    with pytest.raises(ValueError, match="only tokens with role 'unit' have stages"):
        TokenEntry(name="a", sha256="a" * 64, role=Role.ADMIN, stages=["dyeing"])
    with pytest.raises(ValueError, match="at least 1"):
        TokenEntry(name="a", sha256="a" * 64, role=Role.UNIT, unit_id="U", stages=[])


@pytest.mark.integration
class TestStagesAndOrder:
    def test_a_unit_token_with_stages_posts_only_those_stages(self, gateway: Harness) -> None:
        token = "unit-dye-dyeing-only"
        assert gateway.post("/v1/scans", [scan("DYE-01")], token=token).status_code == 202
        knitting = scan("DYE-01", stage="knitting")
        response = gateway.post("/v1/scans", [scan("DYE-01"), knitting], token=token)
        assert response.status_code == 403, response.text
        assert "stage 'knitting'" in response.json()["detail"]
        partial = gateway.post("/v1/scans", [knitting], token=token, params={"partial": "true"})
        assert partial.status_code == 403
        other = unit_status("DYE-01", stage="knitting")
        assert gateway.post("/v1/unit-status", other, token=token).status_code == 403
        whole_unit = unit_status("DYE-01")
        whole_unit.pop("stage")
        assert gateway.post("/v1/unit-status", whole_unit, token=token).status_code == 202
        # a unit token without stages keeps posting any stage of its unit
        assert gateway.post("/v1/scans", [knitting], token="unit-dye").status_code == 202

    def test_authentication_comes_before_any_validation(self, gateway: Harness) -> None:
        for params in ({"partial": "2.00001"}, {"partial": ["true", "false"]}):
            response = gateway.client.post("/v1/scans", params=params, content=b"{")
            assert response.status_code == 401, response.text
        response = gateway.client.delete("/v1/customers/not%20an%20id")
        assert response.status_code == 401, response.text
        assert gateway.post("/v1/customers", {}, token="orders").status_code == 403

    def test_every_error_has_the_documented_shape(self, gateway: Harness) -> None:
        admin = {"Authorization": "Bearer secret-token-of-admin"}
        answers = [
            gateway.post("/v1/scans", [scan()], params={"partial": "2.00001"}),
            gateway.client.delete("/v1/customers/not%20an%20id", headers=admin),
            gateway.client.get("/v1/nowhere"),
            gateway.client.put("/v1/scans"),
        ]
        assert [a.status_code for a in answers] == [422, 422, 404, 405]
        for answer in answers:
            body = answer.json()
            assert set(body) >= {"request_id", "error", "detail"}, body
            assert isinstance(body["detail"], str)
            assert body["request_id"] == answer.headers["x-request-id"]

    def test_a_body_less_post_is_the_clients_error_and_nothing_is_dead_lettered(
        self, gateway: Harness
    ) -> None:
        response = gateway.post(
            "/v1/scans",
            content=b"",
            params={"partial": "true"},
            headers={"X-Request-ID": "no-body-1"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "empty"
        dead = [v for _, v in gateway.read_all("dead-letter") if v and b"no-body-1" in v]
        assert dead == []


def test_ops_endpoints_answer_only_their_networks() -> None:
    import asyncio

    import httpx

    from chainwatch.settings import Settings
    from streams.ingest.app import create_gateway_app

    app = create_gateway_app(Settings(), make_registry())

    async def ask(client_host: str) -> list[int]:
        transport = httpx.ASGITransport(app=app, client=(client_host, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return [(await client.get(p)).status_code for p in ("/healthz", "/metrics")]

    assert asyncio.run(ask("10.1.2.3")) == [200, 403]
    assert asyncio.run(ask("127.0.0.1")) == [200, 200]


def test_every_403_names_the_operation_refused_and_every_documented_403_happens() -> None:
    """A DELETE of a customer by a token of the wrong role was told `may not post to
    /v1/customers`. Every operation is asked by every role from outside `ops_networks`:
    each 403 names its own method and path (the route's: the customer id is not echoed),
    and the operations that answer 403 are those whose OpenAPI entry lists one."""
    import asyncio

    import httpx
    from fastapi.routing import APIRoute

    from chainwatch.settings import Settings
    from streams.ingest.app import create_gateway_app

    app = create_gateway_app(Settings(), make_registry())
    operations = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
        if method != "HEAD"  # its answer has no body to read a detail from
    ]

    async def refusals() -> dict[tuple[str, str], list[str]]:
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4711))
        found: dict[tuple[str, str], list[str]] = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for method, path in operations:
                for name in TOKENS:
                    response = await client.request(
                        method,
                        # too long: a role that may delete is refused 422, Kafka never asked
                        path.format(customer_id="c" * 65),
                        headers={"Authorization": f"Bearer {token_of(name)}"},
                    )
                    if response.status_code == 403:
                        found.setdefault((method, path), []).append(response.json()["detail"])
        return found

    found = asyncio.run(refusals())
    for (method, path), details in found.items():
        for detail in details:
            assert f"{method} {path}" in detail, detail
            assert "c" * 65 not in detail
    refused = next(d for d in found[("DELETE", "/v1/customers/{customer_id}")] if "'orders'" in d)
    assert refused == (
        "role 'orders' may not DELETE /v1/customers/{customer_id} (roles that may: 'admin', 'crm')"
    )
    documented = {
        (method.upper(), path)
        for path, entry in app.openapi()["paths"].items()
        for method, spec in entry.items()
        if "403" in spec["responses"]
    }
    assert set(found) == documented


def test_many_token_names_given_twice_are_refused_in_one_short_line(tmp_path: Path) -> None:
    """Each name was counted over the whole list (n² comparisons) and every repeated name
    listed: a generated file of thousands repeated took seconds and made a line as long."""
    entries = "".join(
        f"  - {{name: n{i % 2000}, sha256: '{i:064x}', role: crm}}\n" for i in range(4000)
    )
    with pytest.raises(TokensFileError) as caught:
        TokenRegistry.load(_write(tmp_path, "tokens:\n" + entries))
    text = str(caught.value)
    assert "names must be unique: 'n0', 'n1', 'n10', 'n100', 'n1000' and 1995 more" in text
    assert len(text) < 500
