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
import json
import smtplib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from hub.alerts.policy import TenantAlertSettings
from hub.requests.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from privacy.keys import get_key_provider

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
# Web Push payloads are limited to 4,096 bytes; the JSON is trimmed to fit under this.
WEBPUSH_MAX_PAYLOAD = 3800
# Characters of one SMS alert text, as for Wireless Emergency Alerts.
SMS_MAX_CHARS = 360


@dataclass(frozen=True)
class Message:
    """The rendered text one recipient receives, already in their language."""

    delivery_key: str
    alert_id: str
    identifier: str
    msg_type: str
    status: str
    language: str
    event: str
    headline: str
    description: str
    instruction: str
    area: str
    expires: str | None
    web: str | None
    # Set when the tenant's manifest has `alerts.public_base_url`.
    unsubscribe_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def short_text(self, limit: int) -> str:
        text = " ".join(part for part in (self.headline, self.instruction) if part)
        return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    transient: bool = False
    # Short, non-personal error code such as `http_503` or `timeout`.
    error: str | None = None
    # True when the address is gone for good and the channel must be disabled.
    disable: bool = False


def classify_status(status: int, *, gone_disables: bool) -> Outcome:
    if 200 <= status < 300:
        return Outcome(ok=True)
    if status in (408, 425, 429) or status >= 500:
        return Outcome(ok=False, transient=True, error=f"http_{status}")
    return Outcome(ok=False, error=f"http_{status}", disable=gone_disables and status in (404, 410))


class Channel(ABC):
    name: str

    @abstractmethod
    async def send(self, address: str, message: Message) -> Outcome: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        return None


def webhook_secret(tenant_id: str) -> str:
    """Return the tenant's HMAC key for alert webhooks, derived from the root key."""
    return get_key_provider().derive(f"alerts.webhook:{tenant_id}").hex()


class WebhookChannel(Channel):
    name = "webhook"

    def __init__(self, http: aiohttp.ClientSession, tenant_id: str):
        self.http = http
        self.secret = webhook_secret(tenant_id)

    async def send(self, address: str, message: Message) -> Outcome:
        body = json.dumps(message.as_dict(), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(self.secret, body),
            DELIVERY_HEADER: message.delivery_key,
        }
        try:
            async with self.http.post(address, data=body, headers=headers) as response:
                await response.read()
                return classify_status(response.status, gone_disables=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(ok=False, transient=True, error=type(exc).__name__)


class SmsChannel(Channel):
    """Provider-neutral SMS: POST {to, text, reference} as JSON to the provider's URL.

    Manifest `alerts.providers.sms`: `url` and optionally `token` (sent as a bearer token).
    """

    name = "sms"

    def __init__(self, http: aiohttp.ClientSession, config: dict[str, Any]):
        self.http = http
        self.url = config.get("url")
        self.token = config.get("token")

    async def send(self, address: str, message: Message) -> Outcome:
        if not self.url:
            return Outcome(ok=False, error="sms_provider_not_configured")
        payload = {
            "to": address,
            "text": message.short_text(SMS_MAX_CHARS),
            "reference": message.delivery_key,
        }
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self.http.post(self.url, json=payload, headers=headers) as response:
                await response.read()
                return classify_status(response.status, gone_disables=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(ok=False, transient=True, error=type(exc).__name__)


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
    """

    name = "webpush"

    def __init__(self, http: aiohttp.ClientSession, tenant_id: str, config: dict[str, Any]):
        self.http = http
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

    async def send(self, address: str, message: Message) -> Outcome:
        subscription = json.loads(address)
        payload = json.dumps(message.as_dict(), ensure_ascii=False).encode("utf-8")
        if len(payload) > WEBPUSH_MAX_PAYLOAD:
            trimmed = message.as_dict() | {"description": ""}
            payload = json.dumps(trimmed, ensure_ascii=False).encode("utf-8")[:WEBPUSH_MAX_PAYLOAD]
        ttl = 86400
        if message.expires:
            from datetime import datetime

            remaining = datetime.fromisoformat(message.expires).timestamp() - time.time()
            ttl = max(int(remaining), 0)
        pusher = WebPusher(subscription, aiohttp_session=self.http)
        headers = self._vapid_headers(subscription["endpoint"])
        # RFC 8030: a push service replaces a still undelivered message that has the same
        # Topic, and receivers can drop repeats by it. Topic allows 32 URL-safe characters.
        headers["Topic"] = message.delivery_key[:32]
        headers["Urgency"] = "high"
        try:
            response = await pusher.send_async(
                data=payload,
                headers=headers,
                ttl=ttl,
                content_encoding="aes128gcm",
                timeout=REQUEST_TIMEOUT,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(ok=False, transient=True, error=type(exc).__name__)
        status = getattr(response, "status", 0)
        return classify_status(status, gone_disables=True)


class EmailChannel(Channel):
    """E-mail over SMTP with `smtplib`, one connection per batch, used by one thread at a time.

    Manifest `alerts.providers.smtp`: `host`, `port`, `sender`, and optionally `starttls`,
    `username` and `password`.
    """

    name = "email"

    def __init__(self, config: dict[str, Any]):
        self.host = config.get("host", "127.0.0.1")
        self.port = int(config.get("port", 25))
        self.sender = config.get("sender", "alerts@localhost")
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

    def _send_sync(self, address: str, message: Message) -> None:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = address
        email["Subject"] = message.headline or message.event
        email["Message-ID"] = f"<{message.delivery_key}@alerts.hub>"
        parts = (message.description, message.instruction, message.area, message.unsubscribe_url)
        body = "\n\n".join(part for part in parts if part)
        email.set_content(body or message.headline)
        # After set_content, which replaces every Content-* header.
        email["Content-Language"] = message.language
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._smtp.send_message(email)
        except smtplib.SMTPServerDisconnected:
            self._smtp = self._connect()
            self._smtp.send_message(email)

    async def send(self, address: str, message: Message) -> Outcome:
        async with self._lock:
            try:
                await asyncio.to_thread(self._send_sync, address, message)
            except smtplib.SMTPRecipientsRefused:
                return Outcome(ok=False, error="smtp_recipient_refused")
            except (smtplib.SMTPException, OSError) as exc:
                self._smtp = None
                return Outcome(ok=False, transient=True, error=type(exc).__name__)
        return Outcome(ok=True)

    async def close(self) -> None:
        if self._smtp is not None:
            try:
                await asyncio.to_thread(self._smtp.quit)
            except (smtplib.SMTPException, OSError) as exc:
                log.info("smtp_quit_failed", error=type(exc).__name__)
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
