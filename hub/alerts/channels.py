"""Channel adapters behind one interface: HTTP webhook, e-mail over SMTP, Web Push and SMS.

Each adapter sends one rendered message to one address and classifies the outcome: sent, a
transient failure worth retrying, or a permanent failure (which may disable the channel, as
Web Push 404 and 410 do). Delivery is at least once, because a worker killed after sending
and before recording the result sends that message again. Every message therefore carries a
stable delivery key (`X-Hub-Delivery-Id`, the e-mail `Message-ID`, the SMS `reference`, the
Web Push `Topic`), and receivers drop repeats by it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import smtplib
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from email.message import EmailMessage
from functools import cached_property
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher
from sqlalchemy.orm import Session
from yarl import URL

from hub.alerts.policy import TenantAlertSettings, provider_missing
from hub.core.errors import NotFound
from hub.core.public_hosts import IPAddress, address_problem, parse_address
from hub.core.settings import get_settings
from hub.core.tenancy import TenantContext
from hub.requests.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from privacy.audit import audit
from privacy.keys import get_key_provider
from tenants.models import Tenant

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
# Web Push payloads are limited to 4,096 bytes; the JSON is trimmed to fit under this.
WEBPUSH_MAX_PAYLOAD = 3800
# Characters of one SMS alert text, as for Wireless Emergency Alerts.
SMS_MAX_CHARS = 360
WEBHOOK_KEY_REVEAL_ACTION = "alerts.webhook_key.reveal"


@dataclass(frozen=True)
class MessageText:
    """One language's text of an alert, rendered once per batch and shared by its recipients.

    A recipient's message adds two values of its own: the delivery key and, when the tenant's
    manifest has `alerts.public_base_url`, the unsubscribe link.
    """

    alert_id: str
    identifier: str
    sender: str
    # CAP `sent`, as the message has it: seconds and a numeric offset, UTC written -00:00.
    sent: str | None
    msg_type: str
    # CAP `references` of an Update or Cancel: "sender,identifier,sent" entries, space-separated.
    references: str | None
    status: str
    language: str
    event: str
    severity: str | None
    urgency: str | None
    certainty: str | None
    headline: str
    description: str
    instruction: str
    area: str
    expires: str | None
    web: str | None

    def as_dict(self, delivery_key: str, unsubscribe_url: str | None = None) -> dict[str, Any]:
        """Return one recipient's message as the JSON object webhooks and Web Push carry."""
        return {
            "delivery_key": delivery_key,
            **{name: getattr(self, name) for name in _TEXT_FIELDS},
            "unsubscribe_url": unsubscribe_url,
        }

    @cached_property
    def _json_parts(self) -> tuple[str, str]:
        # The JSON of `as_dict` around its two per-recipient values, its first and last keys.
        shared = json.dumps(self.as_dict(""), ensure_ascii=False)
        middle = shared[len('{"delivery_key": ""') : -len('"unsubscribe_url": null}')]
        return '{"delivery_key": ', middle + '"unsubscribe_url": '

    def json_body(self, delivery_key: str, unsubscribe_url: str | None = None) -> bytes:
        """Return the same bytes as `json.dumps(self.as_dict(...), ensure_ascii=False)` in
        UTF-8, with the shared part encoded only once per language."""
        head, middle = self._json_parts
        link = "null" if unsubscribe_url is None else encode_basestring(unsubscribe_url)
        return (head + encode_basestring(delivery_key) + middle + link + "}").encode("utf-8")

    def short_text(self, limit: int) -> str:
        """Return the SMS text: the headline and instruction, and for a Cancel its reason
        (the description) between them, cut to `limit` characters."""
        reason = self.description if self.msg_type == "Cancel" else ""
        text = " ".join(part for part in (self.headline, reason, self.instruction) if part)
        return text if len(text) <= limit else text[: limit - 1] + "…"


_TEXT_FIELDS = tuple(f.name for f in fields(MessageText))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    transient: bool = False
    # Short reason without personal data, such as `HTTP 503` or `connection refused`
    # (`error_reason`). It never contains the address.
    error: str | None = None
    # True when the address is gone for good and the channel must be disabled.
    disable: bool = False


def classify_status(status: int, *, gone_disables: bool) -> Outcome:
    if 200 <= status < 300:
        return Outcome(ok=True)
    error = f"HTTP {status}"
    if status in (408, 425, 429) or status >= 500:
        return Outcome(ok=False, transient=True, error=error)
    return Outcome(ok=False, error=error, disable=gone_disables and status in (404, 410))


def error_reason(exc: BaseException) -> str:
    """Return a short reason for a failed send, such as `connection refused` or `timed out`.

    The reason is stored, logged and shown to emergency managers, so it is built from the
    exception's type and errno only: messages of aiohttp and smtplib can contain the
    recipient's URL or address.
    """
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError | socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError | smtplib.SMTPServerDisconnected):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    errno = getattr(exc, "errno", None)
    if isinstance(exc, aiohttp.ClientOSError | OSError) and isinstance(errno, int) and errno > 0:
        return os.strerror(errno).lower()[:64]
    return type(exc).__name__[:64]


class Channel(ABC):
    name: str

    @abstractmethod
    async def send(
        self, address: str, text: MessageText, delivery_key: str, unsubscribe_url: str | None
    ) -> Outcome:
        """Send one recipient's message and classify the outcome.

        Network errors and timeouts become transient outcomes. `fanout` also catches anything
        else an adapter raises and retries it as transient.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        return None


def webhook_secret(tenant_id: str) -> str:
    """Return the tenant's HMAC key for alert webhooks, derived from the root key."""
    return get_key_provider().derive(f"alerts.webhook:{tenant_id}").hex()


def reveal_webhook_secret(session: Session, ctx: TenantContext) -> str:
    """Return the tenant's alert webhook key for a city app, and record the read in the
    tenant's audit log. Raises NotFound for an unknown tenant."""
    if session.get(Tenant, ctx.tenant_id) is None:
        raise NotFound(f"tenant {ctx.tenant_id} not found", code="unknown_tenant")
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=WEBHOOK_KEY_REVEAL_ACTION,
        subject=f"tenants:{ctx.tenant_id}",
    )
    return webhook_secret(ctx.tenant_id)


class AddressNotAllowed(Exception):
    """A webhook host resolved to an address that `address_problem` rejects."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.reason = f"{kind} address not allowed"


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Return the addresses of `host` for a TCP connection, as the system resolver gives them.

    Raises socket.gaierror when the name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [ipaddress.ip_address(info[4][0]) for info in infos]


class PublicPoster:
    """POST requests to URLs that residents give (webhooks, Web Push endpoints), to public
    addresses only.

    The host is resolved here, every address it resolves to is checked, and the request goes
    to those addresses only, so no second lookup can swap in another address after the check.
    They are tried in the order the lookup gave them, the next one only when a connection to
    the one before could not be made (so nothing was sent there); when none connects, the
    delivery is retried like any other transient failure. Host header and TLS server name
    stay those of the URL. Redirects are not followed, because
    a redirect could point anywhere. With `HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE` the addresses are
    not checked.
    """

    def __init__(self, http: aiohttp.ClientSession):
        self.http = http
        self.allow_private = get_settings().alert_webhooks_allow_private
        # One lookup per host and port for the channel's batch, shared by concurrent sends.
        self._lookups: dict[tuple[str, int], asyncio.Task[list[IPAddress]]] = {}

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        """Return the checked addresses to connect to, in the order to try them. Raises
        AddressNotAllowed, or socket.gaierror when the host does not resolve."""
        address = parse_address(host)
        if address is not None:
            addresses = [address]
        else:
            lookup = self._lookups.get((host, port))
            if lookup is None:
                lookup = asyncio.ensure_future(resolve_host(host, port))
                self._lookups[(host, port)] = lookup
            addresses = await asyncio.shield(lookup)
        if not self.allow_private:
            for candidate in addresses:
                kind = address_problem(candidate)
                if kind is not None:
                    raise AddressNotAllowed(kind)
        return addresses

    async def post(self, address: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """POST `body` to the URL `address` and classify the outcome. A 404 or 410 disables
        the channel, and a non-public address fails for good without a request."""
        try:
            url = URL(address)
        except ValueError:
            return Outcome(ok=False, error="not an http(s) URL")
        if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
            return Outcome(ok=False, error="not an http(s) URL")
        host = url.raw_host
        try:
            targets = await self._addresses(host, url.port)
            for target in targets[:-1]:
                try:
                    return await self._post_to(url, target, body, headers)
                except aiohttp.ClientConnectorError:
                    continue
            return await self._post_to(url, targets[-1], body, headers)
        except AddressNotAllowed as exc:
            return Outcome(ok=False, error=exc.reason)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Outcome(ok=False, transient=True, error=error_reason(exc))

    async def _post_to(
        self, url: URL, target: IPAddress, body: bytes, headers: dict[str, str]
    ) -> Outcome:
        """POST to `url` at the checked address `target`: a URL with a host name goes to
        `target`, with the name as Host header and TLS server name."""
        host = url.raw_host or ""
        request_url = url
        request_headers = dict(headers)
        tls_name = None
        if parse_address(host) is None:
            request_headers["Host"] = url.host_port_subcomponent or host
            request_url = url.with_host(str(target))
            tls_name = host.rstrip(".") if url.scheme == "https" else None
        async with self.http.post(
            request_url,
            data=body,
            headers=request_headers,
            allow_redirects=False,
            server_hostname=tls_name,
        ) as response:
            await response.read()
            return classify_status(response.status, gone_disables=True)


class WebhookChannel(Channel):
    """POST the message as JSON to the resident's URL, signed with the tenant's webhook key,
    through `PublicPoster`."""

    name = "webhook"

    def __init__(self, http: aiohttp.ClientSession, tenant_id: str):
        self.poster = PublicPoster(http)
        self.secret = webhook_secret(tenant_id)

    async def send(
        self, address: str, text: MessageText, delivery_key: str, unsubscribe_url: str | None
    ) -> Outcome:
        # Each body carries its own delivery key, so each is signed (HMAC-SHA256, microseconds).
        body = text.json_body(delivery_key, unsubscribe_url)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(self.secret, body),
            DELIVERY_HEADER: delivery_key,
        }
        return await self.poster.post(address, body, headers)


class SmsChannel(Channel):
    """Provider-neutral SMS: POST {to, text, reference} as JSON to the provider's URL.

    Manifest `alerts.providers.sms`: `url` and optionally `token` (sent as a bearer token).
    """

    name = "sms"

    def __init__(self, http: aiohttp.ClientSession, config: dict[str, Any]):
        self.http = http
        self.url = config.get("url")
        self.token = config.get("token")
        self.missing = provider_missing(self.name, config)

    async def send(
        self, address: str, text: MessageText, delivery_key: str, unsubscribe_url: str | None
    ) -> Outcome:
        if self.missing:
            return Outcome(ok=False, error=self.missing)
        payload = {
            "to": address,
            "text": text.short_text(SMS_MAX_CHARS),
            "reference": delivery_key,
        }
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self.http.post(self.url, json=payload, headers=headers) as response:
                await response.read()
                return classify_status(response.status, gone_disables=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(ok=False, transient=True, error=error_reason(exc))


def vapid_private_key(tenant_id: str) -> ec.EllipticCurvePrivateKey:
    """Derive the tenant's VAPID key (P-256) from the root key, so no key file is needed."""
    seed = get_key_provider().derive(f"alerts.vapid:{tenant_id}")
    order = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    return ec.derive_private_key(int.from_bytes(seed, "big") % (order - 1) + 1, ec.SECP256R1())


def vapid_public_key(tenant_id: str) -> str:
    """Return the tenant's VAPID public key as browsers take it (URL-safe base64)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    raw = (
        vapid_private_key(tenant_id)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class WebPushChannel(Channel):
    """Web Push with VAPID (RFC 8291 encryption and RFC 8292 signatures, through pywebpush).

    Manifest `alerts.providers.webpush.subject`: the `sub` claim, a mailto: or https: URL.
    pywebpush only encrypts: the resident gives the endpoint, so the request goes through
    `PublicPoster` like a webhook's.
    """

    name = "webpush"

    def __init__(self, http: aiohttp.ClientSession, tenant_id: str, config: dict[str, Any]):
        self.poster = PublicPoster(http)
        self.vapid = Vapid02(private_key=vapid_private_key(tenant_id))
        self.subject = config.get("subject", "mailto:alerts@example.invalid")
        self._headers: dict[str, tuple[float, dict[str, str]]] = {}

    def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        cached = self._headers.get(audience)
        now = time.time()
        if cached is None or cached[0] < now + 600:
            expiry = now + 12 * 3600
            claims = {"sub": self.subject, "aud": audience, "exp": int(expiry)}
            cached = (expiry, self.vapid.sign(claims))
            self._headers[audience] = cached
        return dict(cached[1])

    async def send(
        self, address: str, text: MessageText, delivery_key: str, unsubscribe_url: str | None
    ) -> Outcome:
        subscription = json.loads(address)
        message = text.as_dict(delivery_key, unsubscribe_url)
        payload = json.dumps(message, ensure_ascii=False).encode("utf-8")
        if len(payload) > WEBPUSH_MAX_PAYLOAD:
            trimmed = message | {"description": ""}
            payload = json.dumps(trimmed, ensure_ascii=False).encode("utf-8")[:WEBPUSH_MAX_PAYLOAD]
        ttl = 86400
        if text.expires:
            from datetime import datetime

            remaining = datetime.fromisoformat(text.expires).timestamp() - time.time()
            ttl = max(int(remaining), 0)
        body = WebPusher(subscription).encode(payload, "aes128gcm")["body"]
        headers = self._vapid_headers(subscription["endpoint"])
        headers["Content-Encoding"] = "aes128gcm"
        headers["TTL"] = str(ttl)
        # RFC 8030: a push service replaces a still undelivered message that has the same
        # Topic, and receivers can drop repeats by it. Topic allows 32 URL-safe characters.
        headers["Topic"] = delivery_key[:32]
        headers["Urgency"] = "high"
        return await self.poster.post(subscription["endpoint"], body, headers)


class EmailChannel(Channel):
    """E-mail over SMTP with `smtplib`, one connection per batch, used by one thread at a time.

    Manifest `alerts.providers.smtp`: `host` and `sender`, and optionally `port` (25),
    `starttls`, `username` and `password`. Without a host or a sender every message fails at
    once, as SMS without a provider does, instead of trying a mail server on this machine.
    """

    name = "email"

    def __init__(self, config: dict[str, Any]):
        self.missing = provider_missing(self.name, config)
        self.host = config.get("host")
        self.port = int(config.get("port", 25))
        self.sender = config.get("sender")
        self.starttls = bool(config.get("starttls", False))
        self.username = config.get("username")
        self.password = config.get("password")
        self._smtp: smtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, timeout=15)
        if self.starttls:
            smtp.starttls()
        if self.username:
            smtp.login(self.username, self.password or "")
        return smtp

    def _send_sync(
        self, address: str, text: MessageText, delivery_key: str, unsubscribe_url: str | None
    ) -> None:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = address
        email["Subject"] = text.headline or text.event
        email["Message-ID"] = f"<{delivery_key}@alerts.hub>"
        parts = (text.description, text.instruction, text.area, unsubscribe_url)
        body = "\n\n".join(part for part in parts if part)
        email.set_content(body or text.headline)
        # After set_content, which replaces every Content-* header.
        email["Content-Language"] = text.language
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._smtp.send_message(email)
        except smtplib.SMTPServerDisconnected:
            self._smtp = self._connect()
            self._smtp.send_message(email)

    async def send(
        self, address: str, text: MessageText, delivery_key: str, unsubscribe_url: str | None
    ) -> Outcome:
        if self.missing:
            return Outcome(ok=False, error=self.missing)
        async with self._lock:
            try:
                await asyncio.to_thread(
                    self._send_sync, address, text, delivery_key, unsubscribe_url
                )
            except smtplib.SMTPRecipientsRefused:
                return Outcome(ok=False, error="SMTP recipient refused")
            except (smtplib.SMTPException, OSError) as exc:
                self._smtp = None
                return Outcome(ok=False, transient=True, error=error_reason(exc))
        return Outcome(ok=True)

    async def close(self) -> None:
        if self._smtp is not None:
            try:
                await asyncio.to_thread(self._smtp.quit)
            except (smtplib.SMTPException, OSError) as exc:
                log.info("smtp_quit_failed", error=error_reason(exc))
            self._smtp = None


def build_channels(
    http: aiohttp.ClientSession, settings: TenantAlertSettings
) -> dict[str, Channel]:
    return {
        "webhook": WebhookChannel(http, settings.tenant_id),
        "sms": SmsChannel(http, settings.provider("sms")),
        "webpush": WebPushChannel(http, settings.tenant_id, settings.provider("webpush")),
        "email": EmailChannel(settings.provider("smtp")),
    }
