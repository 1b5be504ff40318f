"""Backoff, webhook signatures, outcome classification and the demo generator, without services."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from hub.cli.bench_support import percentile
from hub.cli.demo.generate import generate_day
from hub.requests import routing, webhook
from tenants.manifest import example_paths, load_manifest


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20])
def test_backoff_within_jitter_bounds(attempt: int) -> None:
    ceiling = min(routing.BACKOFF_MAX_SECONDS, routing.BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    rng = random.Random(attempt)

    delays = [routing.backoff_seconds(attempt, rng) for _ in range(200)]

    assert min(delays) >= ceiling / 2
    assert max(delays) <= ceiling


def test_backoff_grows_with_attempts() -> None:
    assert routing.backoff_seconds(4, random.Random(1)) > routing.backoff_seconds(
        1, random.Random(1)
    )


def test_signature_round_trip() -> None:
    body = '{"description":"Bache ñ"}'.encode()

    header = webhook.sign("s3cret-s3cret-s3cret", body)

    assert header.startswith("sha256=")
    assert webhook.verify("s3cret-s3cret-s3cret", body, header)
    assert not webhook.verify("another-secret-value", body, header)
    assert not webhook.verify("s3cret-s3cret-s3cret", body + b" ", header)
    assert not webhook.verify("s3cret-s3cret-s3cret", body, None)


class _LoopbackServer:
    """A threaded HTTP server on a free loopback port that serves `handler`; `url` is its hook."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _StatusServer(_LoopbackServer):
    """A loopback server that returns a fixed status and headers for every POST."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        outer = self
        self.status = status
        self.headers = headers or {}
        self.seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append(dict(self.headers))
                self.send_response(outer.status)
                for key, value in outer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self._serve(Handler)


@pytest.mark.parametrize(
    ("status", "ok", "transient"),
    [
        (200, True, False),
        (204, True, False),
        (408, False, True),
        (429, False, True),
        (500, False, True),
        (503, False, True),
        (400, False, False),
        (404, False, False),
        (301, False, False),
    ],
)
def test_post_classifies_status(status: int, ok: bool, transient: bool) -> None:
    server = _StatusServer(status, {"Location": "http://127.0.0.1:1/"} if status == 301 else None)
    try:
        result = webhook.post(server.url, b"{}", secret="x" * 16, delivery_id="t:1")
    finally:
        server.close()

    assert result.ok is ok
    assert result.transient is transient
    assert server.seen[0][webhook.DELIVERY_HEADER] == "t:1"
    assert server.seen[0][webhook.SIGNATURE_HEADER] == webhook.sign("x" * 16, b"{}")


class _SlowBodyServer(_LoopbackServer):
    """A loopback server that returns status 200 at once, then sends its announced body so slowly
    that reading all of it takes longer than the webhook's read timeout."""

    def __init__(self, body_bytes: int) -> None:
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", str(body_bytes))
                self.end_headers()
                self.wfile.write(b"x" * 16)
                self.wfile.flush()
                outer.release.wait(10)

            def log_message(self, *_args: object) -> None:
                return

        self._serve(Handler)

    def close(self) -> None:
        self.release.set()
        super().close()


def test_post_ignores_response_body(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh client with a short read timeout, so a body read would time out within a second.
    monkeypatch.setattr(webhook, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(webhook, "_clients", {})
    server = _SlowBodyServer(body_bytes=50_000_000)
    try:
        started = time.monotonic()
        result = webhook.post(server.url, b"{}", secret="x" * 16, delivery_id="t:6")
        elapsed = time.monotonic() - started
    finally:
        server.close()
        webhook._client().close()

    # The agency accepted the delivery with its status line: a retry would send it twice.
    assert result.ok is True
    assert result.transient is False
    assert elapsed < 1.0


class _KeepAliveServer(_LoopbackServer):
    """A loopback HTTP/1.1 server that returns `status` (with a short body unless it is 204)
    and keeps connections open, recording the client port of each POST."""

    def __init__(self, status: int) -> None:
        self.ports: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.ports.append(self.client_address[1])
                self.send_response(status)
                if status == 204:
                    self.end_headers()
                    return
                reply = b'{"received":true}'
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: object) -> None:
                return

        self._serve(Handler)


@pytest.mark.parametrize("status", [200, 204])
def test_post_reuses_connection(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    monkeypatch.setattr(webhook, "_clients", {})
    server = _KeepAliveServer(status)
    try:
        results = [
            webhook.post(server.url, b"{}", secret="x" * 16, delivery_id=f"t:{n}") for n in range(3)
        ]
    finally:
        webhook._client().close()
        server.close()

    assert [result.ok for result in results] == [True, True, True]
    # One connection for the three POSTs: a short or empty body is read, so the connection
    # is reused.
    assert len(set(server.ports)) == 1


def test_post_signs_with_previous_secret() -> None:
    server = _StatusServer(200)
    try:
        webhook.post(
            server.url, b"{}", secret="n" * 16, delivery_id="t:4", previous_secret="p" * 16
        )
        webhook.post(server.url, b"{}", secret="n" * 16, delivery_id="t:5")
    finally:
        server.close()

    during, after = server.seen
    assert during[webhook.SIGNATURE_HEADER] == webhook.sign("n" * 16, b"{}")
    assert during[webhook.PREVIOUS_SIGNATURE_HEADER] == webhook.sign("p" * 16, b"{}")
    assert webhook.PREVIOUS_SIGNATURE_HEADER not in after


def test_verify_delivery_takes_either_header() -> None:
    body = b'{"service_request_id":"7KQ2MX9P4A"}'
    both = {
        webhook.SIGNATURE_HEADER: webhook.sign("new-secret-0123456", body),
        webhook.PREVIOUS_SIGNATURE_HEADER: webhook.sign("old-secret-0123456", body),
    }

    assert webhook.verify_delivery("new-secret-0123456", body, both)
    assert webhook.verify_delivery("old-secret-0123456", body, both)
    assert not webhook.verify_delivery("other-secret-01234", body, both)
    assert not webhook.verify_delivery("old-secret-0123456", body + b" ", both)
    assert not webhook.verify_delivery("new-secret-0123456", body, {})


def test_post_honours_retry_after() -> None:
    server = _StatusServer(429, {"Retry-After": "120"})
    try:
        result = webhook.post(server.url, b"{}", secret="x" * 16, delivery_id="t:2")
    finally:
        server.close()

    assert result.retry_after == 120.0
    assert result.error == "HTTP 429"


def test_post_honours_retry_after_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=120)
    server = _StatusServer(503, {"Retry-After": format_datetime(later, usegmt=True)})
    try:
        result = webhook.post(server.url, b"{}", secret="x" * 16, delivery_id="t:3")
    finally:
        server.close()

    assert result.error == "HTTP 503"
    assert result.retry_after is not None
    # The date has whole seconds, and the request took some time.
    assert 110.0 <= result.retry_after <= 120.0


_NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 30 ", 30.0),
        ("0", 0.0),
        # Neither form of RFC 9110: delay-seconds is ASCII digits only.
        ("-5", None),
        ("inf", None),
        ("1_000", None),
        ("1.5", None),
        ("\u0663", None),
        ("86400", webhook.MAX_RETRY_AFTER),
        ("Wed, 01 May 2024 12:02:00 GMT", 120.0),
        ("Wednesday, 01-May-24 12:02:00 GMT", 120.0),
        ("Wed May  1 12:02:00 2024", 120.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),
        ("Thu, 02 May 2024 12:00:00 GMT", webhook.MAX_RETRY_AFTER),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("Wed, 41 May 2024 12:02:00 GMT", None),
    ],
)
def test_retry_after_forms(value: str, seconds: float | None) -> None:
    assert webhook.retry_after_seconds(value, _NOW) == seconds


def test_generated_points_inside_service_area() -> None:
    for path in example_paths():
        manifest = load_manifest(path)

        requests = generate_day(manifest, 30, seed=3)

        assert len(requests) == 30
        assert all(manifest.service_area.contains(r.lon, r.lat) for r in requests), manifest.id
        codes = {service.code for service in manifest.services}
        assert {r.service_code for r in requests} <= codes
        assert {r.language for r in requests} == {"en", "es"}, manifest.id
        minutes = [r.minute_of_day for r in requests]
        assert minutes == sorted(minutes)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.50) == 50.0
    assert percentile([], 0.99) == 0.0
    assert percentile([3.0], 0.99) == 3.0
