"""A local agency back office: an HTTP server on loopback that receives routed requests.

The demo starts one to stand in for every agency; tests use it to check what was delivered. It
checks each body's HMAC signatures against the agency's secret (either header matching, as
during a secret rotation), drops repeats by delivery id (as a real receiver should, because
delivery is at least once) and counts them.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hub.requests.webhook import DELIVERY_HEADER, verify_delivery


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server for the demo's receivers, with a listen backlog deep enough for
    the hub's senders.

    `http.server` closes each connection after one response, so the alert fan-out opens a new
    connection per message, dozens at once. socketserver's default backlog of 5 dropped the
    excess connection attempts, and the senders logged them as timed out before their retries
    got through.
    """

    request_queue_size = 128
    daemon_threads = True


@dataclass
class Received:
    delivery_id: str
    path: str
    payload: dict[str, Any]
    signature_ok: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class AgencyReceiver:
    """Loopback webhook receiver. Paths are `/agencies/<tenant>/<agency code>`.

    `secrets` maps a path to the agency's shared secret; `fail_paths` maps a path to the HTTP
    status it returns instead of 200 (to stand in for a failing agency).
    """

    host: str = "127.0.0.1"
    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    fail_paths: dict[str, int] = field(default_factory=dict)
    received: dict[str, Received] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @staticmethod
    def path_for(tenant_id: str, agency_code: str) -> str:
        return f"/agencies/{tenant_id}/{agency_code}"

    def url_for(self, tenant_id: str, agency_code: str) -> str:
        return f"http://{self.host}:{self.port}{self.path_for(tenant_id, agency_code)}"

    def start(self) -> AgencyReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver._handle(self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = LoopbackHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, name="agency-receiver", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, path: str, headers: Any, body: bytes) -> int:
        failing = self.fail_paths.get(path)
        if failing is not None:
            return failing
        secret = self.secrets.get(path)
        signature_ok = secret is not None and verify_delivery(secret, body, headers)
        if not signature_ok:
            with self._lock:
                self.rejected[path] += 1
            return 401
        delivery_id = headers.get(DELIVERY_HEADER) or ""
        with self._lock:
            if delivery_id in self.received:
                self.duplicates[delivery_id] += 1
                return 200
            self.received[delivery_id] = Received(
                delivery_id=delivery_id,
                path=path,
                payload=json.loads(body),
                signature_ok=signature_ok,
                headers=dict(headers.items()),
            )
        return 200

    def count_for(self, path: str) -> int:
        with self._lock:
            return sum(1 for item in self.received.values() if item.path == path)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received.values())
