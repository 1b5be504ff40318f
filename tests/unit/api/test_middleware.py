"""The API's ASGI middleware: request ids, the declared body limit, per-route counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.api.app import create_app, validation_message
from hub.core.settings import Settings, reset_settings_cache


@pytest.fixture
def client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("HUB_DATABASE_URL", sqlite_url)
    reset_settings_cache()
    settings = Settings(database_url=sqlite_url, max_body_bytes=2000)
    app = create_app(settings, start_relay=False)
    with TestClient(app) as test_client:
        yield test_client
    reset_settings_cache()


def _count(client: TestClient, route: str, status: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name != "hub_http_requests":
            continue
        return sum(
            sample.value
            for sample in family.samples
            if sample.name.endswith("_total")
            and sample.labels["route"] == route
            and sample.labels["status"] == status
        )
    return 0.0


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    echoed = client.get("/healthz", headers={"x-request-id": "abc123"})
    assert echoed.headers["x-request-id"] == "abc123"

    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert generated != "abc123"


def test_declared_body_over_limit_is_an_open311_error(client: TestClient) -> None:
    response = client.post(
        "/open311/v2/requests.xml",
        content=b"x" * 3000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert b"<errors>" in response.content
    assert b"<code>413</code>" in response.content
    assert b"larger than 2000 bytes" in response.content
    assert response.headers["x-request-id"]


def _post_chunked(app, path: str, content_type: bytes, chunks: int) -> tuple[int, int, bytes]:
    """POST a body of `chunks` chunks of 1,000 bytes without Content-Length, straight to the
    ASGI app. Returns the status, the number of chunks the app read, and the response body."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": read < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8311),
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, read, body


def test_chunked_body_over_limit_stops_reading(client: TestClient) -> None:
    # 10,000 chunks of 1,000 bytes: the limit is 2,000 bytes, so the app must stop at the
    # third chunk instead of holding 10 MB in memory before it responds.
    status, read, body = _post_chunked(
        client.app, "/open311/v2/requests.xml", b"application/x-www-form-urlencoded", 10_000
    )
    assert status == 413
    assert read == 3
    assert b"<code>413</code>" in body
    assert b"larger than 2000 bytes" in body


def test_chunked_json_body_over_limit_is_413(client: TestClient) -> None:
    status, read, body = _post_chunked(
        client.app, "/api/v1/requests/find", b"application/json", 10_000
    )
    assert status == 413
    assert read == 3
    assert json.loads(body)["error"] == {
        "code": "too_large",
        "message": "request body larger than 2000 bytes",
    }


def test_counts_by_route_template_and_status_class(client: TestClient) -> None:
    before = _count(client, "/open311/v2/requests/{request_id}.{fmt}", "4xx")
    client.get("/open311/v2/requests/NOPE.json", params={"jurisdiction_id": "none.example"})
    client.get("/open311/v2/requests/NOPE2.json", params={"jurisdiction_id": "none.example"})
    after = _count(client, "/open311/v2/requests/{request_id}.{fmt}", "4xx")
    assert after - before == 2
    assert _count(client, "unmatched", "4xx") >= 0


def test_unexpected_error_names_request_id(client: TestClient, capsys) -> None:
    async def fail() -> None:
        raise RuntimeError("broken on purpose")

    client.app.add_api_route("/open311/v2/failing.json", fail)

    response = client.get("/open311/v2/failing.json", headers={"x-request-id": "trace-42"})

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-42"
    [error] = response.json()
    assert error["code"] == 500
    assert "request id trace-42" in error["description"]
    assert "broken on purpose" not in response.text
    logged = capsys.readouterr()
    unhandled = [
        line for line in (logged.out + logged.err).splitlines() if "unhandled_error" in line
    ]
    assert len(unhandled) == 1
    assert "trace-42" in unhandled[0]


def test_unusual_request_id_replaced(client: TestClient) -> None:
    response = client.get("/healthz", headers={"x-request-id": "a b<script>"})
    assert len(response.headers["x-request-id"]) == 32
    assert "<" not in response.headers["x-request-id"]


def test_validation_message_by_field() -> None:
    errors = [
        {"type": "json_invalid", "loc": ("body", 6), "msg": "JSON decode error"},
        {"type": "missing", "loc": ("body", "identifier"), "msg": "Field required"},
        {"type": "value_error", "loc": ("body", "phone"), "msg": "Value error, 555-0100 is bad"},
    ]

    message = validation_message(errors)

    assert message == (
        "the request body is not valid JSON (near character 6); send one JSON object; "
        "identifier is missing; phone is invalid"
    )
    assert "555" not in message
