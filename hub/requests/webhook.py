"""Outbound HTTP webhooks to agency back offices: signing, sending, classifying failures.

The receiver authenticates the hub by recomputing `X-Hub-Signature-256`, the HMAC-SHA256 of the
raw body under the agency's shared secret written as `sha256=<hex>`. For a while after the
secret is rotated, `X-Hub-Signature-256-Previous` carries the same signature made with the
replaced secret, and the receiver accepts a body that either header matches. It drops repeats
by `X-Hub-Delivery-Id`, because delivery is at least once: a worker that dies after the POST and
before recording it sends the same delivery again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import structlog

from hub.core.clock import as_utc, utcnow

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
PREVIOUS_SIGNATURE_HEADER = "X-Hub-Signature-256-Previous"
DELIVERY_HEADER = "X-Hub-Delivery-Id"
# Connect and read timeouts in seconds. A lease on the delivery row (routing.LEASE_SECONDS)
# must stay well above their sum so that no second worker claims a POST still in flight.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# `SendResult.error` of a webhook URL that httpx cannot parse or encode.
INVALID_URL_ERROR = "invalid webhook URL"
# Maximum response body, in bytes, that `post` reads so that the connection can be reused.
MAX_DRAINED_BODY_BYTES = 64 * 1024
# Maximum wait, in seconds, that a Retry-After header can ask for. A longer one is cut to this.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class SendResult:
    """Outcome of one POST. `error` is a status or an error class, never the response body."""

    ok: bool
    transient: bool
    error: str | None = None
    retry_after: float | None = None


def sign(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Check a signature header in constant time (used by receivers and tests)."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header)


def verify_delivery(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Check a delivery's signatures the way a receiver should: accept the body when
    `SIGNATURE_HEADER` or, during a rotation's overlap, `PREVIOUS_SIGNATURE_HEADER` matches
    `secret`. `headers` must look names up without regard to case, as HTTP libraries do."""
    return any(
        verify(secret, body, headers.get(name))
        for name in (SIGNATURE_HEADER, PREVIOUS_SIGNATURE_HEADER)
    )


_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.Client:
    # One pooled client per process: a client inherited through fork shares its sockets with
    # the parent, so a forked worker child builds its own.
    pid = os.getpid()
    with _clients_lock:
        client = _clients.get(pid)
        if client is None:
            client = httpx.Client(
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            )
            _clients[pid] = client
        return client


def retry_after_seconds(value: str, now: datetime | None = None) -> float | None:
    """Parse a Retry-After value (RFC 9110, section 10.2.3) into seconds from `now`.

    Takes a number of seconds or an HTTP-date such as `Fri, 31 Dec 1999 23:59:59 GMT`. A date
    in the past gives 0, and a wait over `MAX_RETRY_AFTER` is cut to it. Returns None for an
    empty or invalid value.
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(int(value))
    else:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (as_utc(moment) - (now or utcnow())).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def is_placeholder_url(url: str) -> bool:
    """Return whether `url` names a host under `.invalid`, the domain that RFC 6761 reserves
    for names that never resolve, as the example manifests use for agency endpoints."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False  # malformed, which `post` reports on its own
    return host == "invalid" or host.endswith(".invalid")


def _drain_short_body(response: httpx.Response) -> None:
    """Read and discard a body of at most `MAX_DRAINED_BODY_BYTES` that Content-Length
    announces, or the empty body of a 204 or 304, so that the connection goes back to the
    pool. Any other body is left unread, and closing the response then closes its connection.
    A failed read changes nothing, because the status has decided the outcome already."""
    length = response.headers.get("content-length", "").strip()
    short = length.isascii() and length.isdigit() and int(length) <= MAX_DRAINED_BODY_BYTES
    if not short and response.status_code not in (204, 304):
        return
    # A body trickled in small pieces could keep the loop going for long, so it stops after
    # about a second plus one read timeout.
    deadline = time.monotonic() + 1.0
    try:
        for _chunk in response.iter_raw():
            if time.monotonic() > deadline:
                return
    except httpx.HTTPError as exc:
        log.info("webhook_response_body_unread", error=type(exc).__name__)


def post(
    url: str,
    body: bytes,
    *,
    secret: str,
    delivery_id: str,
    previous_secret: str | None = None,
) -> SendResult:
    """POST `body` to `url`, signed with `secret` and also with `previous_secret` when given,
    and classify the outcome.

    Transient, so retried with backoff: connection errors, timeouts and other transport errors,
    HTTP 5xx, 408 and 429. Any other non-2xx status (including redirects, which are not followed) is
    permanent, because sending the same body again cannot succeed, and so is a placeholder
    host, which is never contacted, and a URL that cannot be parsed or encoded.
    """
    if is_placeholder_url(url):
        # Never looked up: a resolver would send the name to the network for nothing.
        return SendResult(ok=False, transient=False, error="placeholder host (.invalid)")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        SIGNATURE_HEADER: sign(secret, body),
        DELIVERY_HEADER: delivery_id,
        "User-Agent": "regional-311-hub",
    }
    if previous_secret:
        headers[PREVIOUS_SIGNATURE_HEADER] = sign(previous_secret, body)
    try:
        # Streamed, because the status line and headers decide the outcome. Reading a large
        # or slow body would hold memory, and a read timeout after a 2xx would count as
        # transient and send the accepted delivery again.
        with _client().stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
            retry_after = response.headers.get("retry-after", "")
            _drain_short_body(response)
    except httpx.TransportError as exc:
        return SendResult(ok=False, transient=True, error=type(exc).__name__)
    except (httpx.InvalidURL, ValueError):
        # The manifest checks only the scheme, so a URL such as `http://a..b/` gets here. httpx
        # raises InvalidURL, and the IDNA codec UnicodeError (a ValueError), on every attempt.
        # Propagated, either would end the routing task before `record_outcome`, so every
        # sweep would claim the delivery again and it would never go dead.
        return SendResult(ok=False, transient=False, error=INVALID_URL_ERROR)

    if 200 <= status < 300:
        return SendResult(ok=True, transient=False)
    if status in (408, 429) or status >= 500:
        return SendResult(
            ok=False,
            transient=True,
            error=f"HTTP {status}",
            retry_after=retry_after_seconds(retry_after),
        )
    return SendResult(ok=False, transient=False, error=f"HTTP {status}")
