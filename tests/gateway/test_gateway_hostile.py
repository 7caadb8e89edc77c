"""Hostile bodies: counted before they are parsed, never a 5xx, one answer whatever the framing.

The figures test runs `chainwatch gateway` as its own process (own GIL and
RSS, as in production) and prints what it measured.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_harness import GatewayProcess, Harness, running_gateway_process, token_of
from samples import fresh_scan as scan

from streams.ingest.body import (
    BodyTooLarge,
    DuplicateKey,
    Unstructured,
    locate_array,
    precheck_array,
    split_items,
)

ADMIN = {"Authorization": f"Bearer {token_of('admin')}"}


# -- the structural scan (pure) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "items"),
    [
        (b"[]", []),
        (b" [ ] ", []),
        (b"[1,2]", [b"1", b"2"]),
        (
            b' [ {"a":"],[{"} , "x\\",", [[1,[2]],{}] ] ',
            [b'{"a":"],[{"}', b'"x\\","', b"[[1,[2]],{}]"],
        ),
        (b"[NaN, 1]", [b"NaN", b"1"]),
        (b"[1,]", [b"1", b""]),
        (b"[" + b"[" * 40 + b"]" * 40 + b"]", [b"[" * 40 + b"]" * 40]),
    ],
)
def test_array_elements_are_found_without_parsing(body: bytes, items: list[bytes]) -> None:
    assert [i.value for i in split_items(body, "json", 10, 1000)] == items


@pytest.mark.parametrize("body", [b"[1", b"[1]]", b"[1] x", b'["abc]', b"[1}", b'{"a":[1]'])
def test_a_body_that_does_not_hold_together_is_one_item(body: bytes) -> None:
    assert [i.value for i in split_items(body, "json", 10, 1000)] == [body.strip()]


def test_the_count_stops_at_the_limit() -> None:
    body = b"[" + b",".join([b"{}"] * 1_000_000) + b"]"
    started = time.perf_counter()
    with pytest.raises(BodyTooLarge, match="more than 5000 items"):
        split_items(body, "json", 5000, 1000)
    assert time.perf_counter() - started < 1.0  # a few thousand elements read, not a million


def test_epcis_events_are_located_by_key_and_duplicates_refused() -> None:
    doc = {"type": "EPCISDocument", "epcisBody": {"x": [9], "eventList": [{"a": 1}, [2]]}}
    body = json.dumps(doc).encode()
    located = locate_array(body, ("epcisBody", "eventList"), 10, 1000)
    assert located is not None
    assert [body[s:e] for s, e in located.items] == [b'{"a": 1}', b"[2]"]
    assert body[located.start : located.end] == b'[{"a": 1}, [2]]'
    escaped = body.replace(b'"eventList"', b'"\\u0065ventList"')
    with pytest.raises(BodyTooLarge):
        locate_array(escaped, ("epcisBody", "eventList"), 1, 1000)
    twice = b'{"epcisBody": {"eventList": [], "eventList": [1]}}'
    with pytest.raises(DuplicateKey):
        locate_array(twice, ("epcisBody", "eventList"), 10, 1000)
    path = ("epcisBody", "eventList")
    assert locate_array(b'{"epcisBody": {"eventList": 1}}', path, 1, 9) is None
    with pytest.raises(Unstructured):
        locate_array(b'{"epcisBody": {"eventList": [}}', path, 1, 9)
    for outside in (b"'\x02,", b"1, [2]", b", {}"):  # a comma outside any bracket
        with pytest.raises(Unstructured):
            locate_array(outside, path, 1, 9)


_M = 8 * 1024 * 1024
_DEEP_BODIES = {  # made when a test asks
    "bracket_bomb": lambda: b"[" * (_M // 2) + b"]" * (_M // 2),
    "unclosed": lambda: b"[" * _M,
    "keys_all_the_way_down": lambda: b'[{"":' * (_M // 5),
    "commas_all_the_way_down": lambda: b"[1," * (_M // 3),
    "growing": lambda: b"[[]," * (_M // 4),
}


@pytest.mark.parametrize("name", sorted(_DEEP_BODIES))
def test_any_8_mb_structure_is_read_in_milliseconds(name: str) -> None:
    """Deep nesting was read a Python step per bracket: 4-11 s of CPU for 8 MiB, up to
    0.6 s of it on the event loop (the precheck); now a bounded number of steps."""
    body = _DEEP_BODIES[name]()
    precheck = precheck_array((), 5000, 900_000)
    # this thread's CPU, not the process's (a gateway of another test may serve meanwhile)
    started = time.thread_time()
    for prefix in (body[: 64 * 1024], body[: 512 * 1024]):
        with contextlib.suppress(BodyTooLarge):
            precheck(prefix)
    with pytest.raises(BodyTooLarge, match="more than the gateway reads"):
        split_items(body, "json", 5000, 900_000)
    document = b'{"epcisHeader": ' + body + b', "epcisBody": {"eventList": []}}'
    with pytest.raises(BodyTooLarge, match="more than the gateway reads"):
        locate_array(document, ("epcisBody", "eventList"), 5000, 900_000)
    # a bound far from both: 4-11 s before, ~0.05 s on a quiet machine, 0.6 s seen with
    # the process's other threads counted beside two CPU hogs
    assert time.thread_time() - started < 2.0


def test_what_is_beside_the_event_list_is_skipped_not_read_token_by_token() -> None:
    vocabulary = [
        {"id": f"urn:x:{i}", "attributes": [{"id": "a", "v": [[i]]}]} for i in range(20_000)
    ]
    doc = {
        "type": "EPCISDocument",
        "epcisHeader": {"epcisMasterData": {"vocabularyList": vocabulary}},
        "extra": [[1, 2], {"a": [3]}] * 20_000,
        "epcisBody": {"eventList": [{"a": 1}, [2]]},
    }
    body = json.dumps(doc).encode()
    # read token by token, its ~300,000 brackets, commas and strings would pass
    # SCAN_STEPS and be refused: located, it was skipped
    located = locate_array(body, ("epcisBody", "eventList"), 10, 1000)
    assert located is not None
    assert [body[s:e] for s, e in located.items] == [b'{"a": 1}', b"[2]"]


# -- through the gateway --------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _hostile_scans() -> dict[str, str]:
    """Item texts that must never make the gateway fail (each a scan gone wrong)."""
    base = json.dumps(scan())[:-1]
    return {
        "lone_surrogate": base + ', "attributes": {"shade": "\\ud800"}}',
        "lone_low_surrogate": base + ', "attributes": {"shade": "\\udfff x"}}',
        "nan": base.replace('"quantity": 212.5', '"quantity": NaN') + "}",
        "infinity": base.replace('"quantity": 212.5', '"quantity": -Infinity') + "}",
        "nested_250": base + f', "attributes": {{"deep": {_nested(250)}}}}}',
        "nested_600": base + f', "attributes": {{"deep": {_nested(600)}}}}}',
        "nested_1100": base + f', "attributes": {{"deep": {_nested(1100)}}}}}',
        "huge_int": base + ', "attributes": {"n": 123456789012345678901234567890}}',
        "duplicate_keys": base + ', "stage": "knitting"}',
    }


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(_hostile_scans()))
def test_hostile_items_answer_4xx_the_same_in_an_array_and_in_ndjson(
    gateway: Harness, name: str
) -> None:
    text = _hostile_scans()[name]
    good = json.dumps(scan())
    as_array = gateway.post("/v1/scans", content=f"[{good}, {text}]".encode())
    as_ndjson = gateway.post(
        "/v1/scans", content=f"{good}\n{text}\n".encode(), content_type="application/x-ndjson"
    )
    assert as_array.status_code < 500, as_array.text
    assert as_array.status_code == as_ndjson.status_code, (as_array.text, as_ndjson.text)
    if as_array.status_code == 422:
        verdicts = [
            [(i["index"], i["reason_code"]) for i in r.json()["items"]]
            for r in (as_array, as_ndjson)
        ]
        assert verdicts[0] == verdicts[1]
        assert verdicts[0][0][0] == 1
        assert as_array.json()["items"][0]["errors"], as_array.text

    partial = gateway.post(
        "/v1/scans", content=f"[{good}, {text}]".encode(), params={"partial": "true"}
    )
    assert partial.status_code in (202, 413), partial.text


@pytest.mark.integration
def test_nan_in_an_array_is_not_published_as_null(gateway: Harness) -> None:
    record = json.dumps(scan()).replace('"quantity": 212.5', '"quantity": NaN')
    response = gateway.post("/v1/scans", content=f"[{record}]".encode())
    assert response.status_code == 422, response.text


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(_hostile_scans()))
def test_hostile_epcis_events_answer_4xx(gateway: Harness, name: str) -> None:
    event = _hostile_scans()[name]
    doc = f'{{"type": "EPCISDocument", "epcisBody": {{"eventList": [{event}]}}}}'
    response = gateway.post("/v1/epcis/capture", content=doc.encode())
    assert response.status_code == 422, response.text
    assert response.json()["items"][0]["errors"]
    header = (
        f'{{"type": "EPCISDocument", "epcisHeader": {event}, "epcisBody": {{"eventList": []}}}}'
    )
    response = gateway.post("/v1/epcis/capture", content=header.encode())
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.integration
def test_rejections_are_counted_by_error(gateway: Harness) -> None:
    text = _hostile_scans()["lone_surrogate"]
    assert gateway.post("/v1/scans", content=f"[{text}]".encode()).status_code == 422
    metrics = gateway.client.get("/metrics").text
    assert 'chainwatch_gateway_errors_total{endpoint="scans",error="invalid_items"}' in metrics


# -- the figures: a million-item eventList --------------------------------------------------


class HealthProbe(threading.Thread):
    """Asks `/healthz` back to back, keeping the slowest answer while it runs."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.done = threading.Event()
        self.answering = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.done.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self.answering.set()
                self.done.wait(0.002)


@pytest.fixture(scope="module")
def gateway_process(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The figures tests' gateway: it refuses before a body is read in full, and its
    lingering close drops all of the 2-8 MB a client still sends (the default drops
    1 MiB in 2 s, then closes). What they measure is the refusal, not the linger's
    bound: with the default, curl under two CPU hogs was still sending when the close
    came and failed with "failed sending data" (exit 55) before it read the 413."""
    with running_gateway_process(
        kafka_bootstrap,
        tmp_path_factory.mktemp("gw-hostile"),
        lingering_close_s=30.0,
        lingering_close_bytes=16 * 1024 * 1024,
    ) as gw:
        yield gw


def _million_item_document() -> bytes:
    return (
        b'{"type": "EPCISDocument", "schemaVersion": "2.0", "epcisBody": {"eventList": ['
        + b",".join([b"0"] * 1_000_000)
        + b"]}}"
    )


def _curl_post(url: str, body_file: Path) -> tuple[int, float, float]:
    """POST with curl (C: the client adds nothing to the figure); status, total and in-gateway
    seconds."""
    result = subprocess.run(
        [
            "curl", "-sS", "-o", "/dev/null", "-D", "-",
            "-w", "\nSTATUS %{http_code} %{time_total}",
            "-H", f"Authorization: Bearer {token_of('admin')}",
            "-H", "Content-Type: application/json",
            "--data-binary", f"@{body_file}", url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )  # fmt: skip
    status_line = result.stdout.rsplit("STATUS ", 1)[1].split()
    timing = next(
        line for line in result.stdout.splitlines() if line.lower().startswith("server-timing")
    )
    return int(status_line[0]), float(status_line[1]), float(timing.split("dur=")[1]) / 1000


@pytest.mark.integration
@pytest.mark.slow
def test_a_million_item_event_list_is_refused_at_once(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    body_file = tmp_path / "million.json"
    body_file.write_bytes(_million_item_document())
    size = body_file.stat().st_size
    url = f"{gateway_process.base_url}/v1/epcis/capture"
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"type": "EPCISDocument", "epcisBody": {"eventList": [0] * 5001}}))
    assert _curl_post(url, small)[0] == 413  # every code path warm

    before = gateway_process.rss_bytes()
    peak_resettable = gateway_process.reset_peak_rss()
    probe = HealthProbe(gateway_process.base_url)
    probe.start()
    assert probe.answering.wait(30), "/healthz does not answer"
    during = len(probe.latencies)
    answers: list[tuple[int, float, float]] = []
    cpu_before = gateway_process.cpu_seconds()
    try:
        for _ in range(5):
            answers.append(_curl_post(url, body_file))
    finally:
        cpu = (gateway_process.cpu_seconds() - cpu_before) / 5
        probe.done.set()
        probe.join(timeout=30)
    after = gateway_process.rss_bytes()
    peak = gateway_process.peak_rss_bytes() if peak_resettable else after
    growth = max(after, peak) - before
    meanwhile = sorted(probe.latencies[during:]) or [0.0]
    slowest_probe, typical_probe = meanwhile[-1], meanwhile[len(meanwhile) // 2]
    totals = sorted(total for _, total, _ in answers)
    inside = sorted(server for _, _, server in answers)
    print(
        f"\n1M-item eventList ({size:,} B), 5 posts: 413 in {totals[0] * 1000:.0f}-"
        f"{totals[-1] * 1000:.0f} ms (median {totals[2] * 1000:.0f} ms; in the gateway, "
        f"from the headers to the answer, median {inside[2] * 1000:.0f} ms; gateway CPU "
        f"{cpu * 1000:.0f} ms per request); /healthz answered {len(meanwhile)} times meanwhile, "
        f"median {typical_probe * 1000:.1f} ms, slowest {slowest_probe * 1000:.1f} ms; "
        f"RSS growth {growth / 1e6:.1f} MB ({growth / size:.2f}x the body, "
        f"{'peak' if peak_resettable else 'after'})"
    )
    assert all(status == 413 for status, _, _ in answers)
    # Wall-clock figures depend on what else the machine runs; the work does not. Before the
    # fix this body took 23.7 s of the gateway's CPU and held its event loop all along.
    assert cpu <= 0.050
    assert typical_probe <= 0.050
    assert slowest_probe <= 1.0
    assert growth <= 2 * size


@pytest.mark.integration
@pytest.mark.slow
def test_an_8_mb_array_is_refused_within_twice_its_size(gateway_process: GatewayProcess) -> None:
    body = b"[" + b",".join([b"{}"] * 2_750_000) + b"]"
    with httpx.Client(base_url=gateway_process.base_url, timeout=60) as client:
        before = gateway_process.rss_bytes()
        response = client.post(
            "/v1/scans", content=body, headers={**ADMIN, "Content-Type": "application/json"}
        )
        after = gateway_process.rss_bytes()
    assert response.status_code == 413, response.text
    print(f"\n{len(body):,} B array of {{}}: RSS growth {(after - before) / 1e6:.1f} MB")
    assert after - before <= 2 * len(body)


@pytest.mark.integration
@pytest.mark.slow
def test_an_8_mb_bracket_bomb_is_refused_at_once_and_probes_do_not_stall(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    body_file = tmp_path / "bomb.json"
    body_file.write_bytes(_DEEP_BODIES["bracket_bomb"]())
    url = f"{gateway_process.base_url}/v1/partial/scans"
    probe = HealthProbe(gateway_process.base_url)
    probe.start()
    assert probe.answering.wait(30), "/healthz does not answer"
    during = len(probe.latencies)
    cpu_before = gateway_process.cpu_seconds()
    try:
        status, total, inside = _curl_post(url, body_file)
    finally:
        cpu = gateway_process.cpu_seconds() - cpu_before
        probe.done.set()
        probe.join(timeout=30)
    slowest = max(probe.latencies[during:], default=0.0)
    print(
        f"\n8 MiB [[[...]]] to /v1/partial/scans: {status} in {total * 1000:.0f} ms "
        f"({inside * 1000:.0f} ms in the gateway, {cpu * 1000:.0f} ms of its CPU with the "
        f"probes); slowest /healthz meanwhile {slowest * 1000:.1f} ms"
    )
    assert status == 413
    assert cpu < 1.5  # was 8.5 s: the load-independent proof
    # was 1.4 s on a quiet machine (the scan held the loop); 0.6 s was seen after the fix
    # beside other suites, the gateway using 30 ms of CPU: a wall-clock bound far from both
    assert slowest < 1.0
