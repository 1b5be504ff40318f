"""Residents' alert webhooks and Web Push endpoints: non-public URLs rejected at opt-in and
import, addresses checked again at delivery, the connection made to the checked address, no
redirects followed, and the command that gives city apps the key to check signatures with.

Every test starts with `HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE` off, and no test lets a DNS query
leave the machine: host names resolve through `FakeDns`.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp.resolver
import http_ece
import pytest
from alerts_support import (
    NYC_POINT,
    HttpReceiver,
    add_resident,
    add_tenant,
    cap_alert,
    manager,
    push_subscription,
)
from sqlalchemy import Engine, select
from test_alert_api import auth, hub_url, setup  # noqa: F401 - fixtures of the API tests
from test_alert_fanout import approve, compose, run_batches, send

from hub.alerts import channels, workflow
from hub.alerts import models as m
from hub.alerts.importer import import_subscribers
from hub.cli import operator
from hub.core.db import unit_of_work
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from privacy.models import AuditEntry

RATES = {"rate_limits": {"webhook": 1000, "webpush": 1000}}
# A name under .invalid never resolves (RFC 6761), so a lookup that the fake DNS misses fails
# instead of reaching a real server.
HOOK_HOST = "hooks.example.invalid"

# Webhook URLs that opt-in rejects, with the part of the message that gives the reason.
REJECTED_URLS = {
    "http://127.0.0.1:18871/hook": "is a loopback address",
    "http://[::1]:8080/hook": "is a loopback address",
    "http://[::ffff:127.0.0.1]/hook": "is a loopback address",
    "http://169.254.169.254/latest/meta-data/": "is a link-local address",
    "http://[fe80::1]/hook": "is a link-local address",
    "http://10.0.0.7/hook": "is a private address",
    "http://192.168.1.20:8080/hook": "is a private address",
    "http://[fd12:3456::7]/hook": "is a private address",
    "http://0.0.0.0:8080/hook": "is an unspecified address",
    "http://224.0.0.1/hook": "is a multicast address",
    "http://100.64.0.1/hook": "is a reserved address",
    "http://2130706433/hook": "legacy numeric form",
    "http://127.1/hook": "legacy numeric form",
    "http://localhost:8080/hook": "names the local machine or network",
    "http://printer.local/hook": "names the local machine or network",
    "http://metadata.google.internal/computeMetadata/v1/": "names the local machine or network",
    "http://alerts/hook": "a name without a dot",
    "file:///etc/passwd": "must be an http(s) URL",
    "gopher://app.example.org/hook": "must be an http(s) URL",
}


class FakeDns:
    """Host names with their addresses for `channels.resolve_host`, and every other lookup
    recorded and failed."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.other_lookups: list[str] = []

    async def resolve_host(self, host: str, port: int) -> list[channels.IPAddress]:
        self.lookups.append(host)
        return [ipaddress.ip_address(address) for address in self.answers[host]]

    async def other_resolve(self, _resolver: object, host: str, *args: object, **kw: object):
        self.other_lookups.append(host)
        raise OSError(f"lookup of {host} outside the fake DNS")


@pytest.fixture(autouse=True)
def allow_private(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """Turn `HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE` off, whatever the environment has. The test
    turns it on and off with the function this returns."""

    def set_allowed(value: bool) -> None:
        monkeypatch.setenv("HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE", "true" if value else "false")
        reset_settings_cache()

    set_allowed(False)
    yield set_allowed
    monkeypatch.delenv("HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE")
    reset_settings_cache()


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(channels, "resolve_host", fake.resolve_host)
    monkeypatch.setattr(aiohttp.resolver.ThreadedResolver, "resolve", fake.other_resolve)
    return fake


def opt_in_body(url: str) -> dict:
    return {
        "places": [list(NYC_POINT)],
        "channels": {"webhook": url},
        "consent_at": datetime.now(UTC).isoformat(),
    }


def send_once(engine: Engine, tenant: str, identifier: str) -> str:
    [row] = compose(engine, tenant, cap_alert(identifier))
    approve(engine, tenant, row.id, "em2")
    send(engine, [row])
    run_batches(engine, tenant, row.id)
    return row.id


def test_opt_in_rejects_internal_webhooks(setup) -> None:  # noqa: F811 - fixture
    client, app_key = setup["client"], setup["keys"]["a_app"]

    for url, reason in REJECTED_URLS.items():
        response = client.post(
            "/api/v1/alert-subscriptions", json=opt_in_body(url), headers=auth(app_key)
        )

        assert response.status_code == 400, url
        assert reason in response.text, (url, response.text)
        assert "webhook" in response.text, url
        assert url not in response.text, url


def test_opt_in_accepts_public_webhook(setup) -> None:  # noqa: F811 - fixture
    url = f"https://alerts.app.example.org/hooks/{uuid.uuid4().hex}"

    response = setup["client"].post(
        "/api/v1/alert-subscriptions", json=opt_in_body(url), headers=auth(setup["keys"]["a_app"])
    )

    assert response.status_code == 201, response.text


def test_opt_in_allows_loopback_when_set(setup, allow_private) -> None:  # noqa: F811 - fixture
    allow_private(True)

    response = setup["client"].post(
        "/api/v1/alert-subscriptions",
        json=opt_in_body("http://127.0.0.1:18871/hook"),
        headers=auth(setup["keys"]["a_app"]),
    )

    assert response.status_code == 201, response.text


def test_import_skips_internal_webhook(engine: Engine, tmp_path: Path) -> None:
    tenant = add_tenant(engine)
    path = tmp_path / "opt-in.csv"
    path.write_text(
        "lat,lon,webhook,consent_at\n"
        "40.7128,-74.0060,http://192.168.1.20/hook,2026-01-01T00:00:00-05:00\n"
        "40.7128,-74.0060,https://alerts.app.example.org/hook,2026-01-01T00:00:00-05:00\n",
        encoding="utf-8",
    )

    result = import_subscribers(engine, tenant, path)

    assert result["imported"] == 1
    assert result["skipped"] == 1
    [problem] = result["problems"]
    assert "webhook" in problem
    assert "is a private address" in problem
    assert "192.168.1.20" not in problem


def test_delivery_refuses_internal_address(
    engine: Engine, allow_private, dns: FakeDns, webhook_receiver: HttpReceiver
) -> None:
    """Addresses stored while the setting was on, or a name that resolves to loopback since
    the opt-in, fail for good with the reason, and nothing is sent."""
    tenant = add_tenant(engine, alerts=RATES)
    allow_private(True)
    add_resident(engine, tenant, NYC_POINT, {"webhook": webhook_receiver.url("/literal")})
    rebound = f"http://{HOOK_HOST}:{webhook_receiver.port}/rebound"
    add_resident(engine, tenant, NYC_POINT, {"webhook": rebound})
    allow_private(False)
    # One public address is not enough: every address the name resolves to is checked.
    dns.answers[HOOK_HOST] = ["93.184.215.14", "127.0.0.1"]

    alert_id = send_once(engine, tenant, "SSRF-1")

    assert webhook_receiver.received.keys == {}
    [status] = workflow.status(engine, manager(tenant), alert_id)
    assert status["deliveries"] == {"webhook": {"failed": 2}}
    assert status["errors"] == {"webhook": {"loopback address not allowed": 2}}
    assert dns.other_lookups == []
    with unit_of_work(TenantContext(tenant), engine=engine, write=False) as session:
        active = session.scalars(select(m.SubscriberChannel.active)).all()
    assert active == [True, True]


def test_delivery_connects_to_checked_address(
    engine: Engine, allow_private, dns: FakeDns, webhook_receiver: HttpReceiver
) -> None:
    """The request goes to the address the hub resolved, once per host in a batch, with the
    URL's host in the Host header, and no second lookup takes place."""
    tenant = add_tenant(engine, alerts=RATES)
    allow_private(True)
    authority = f"{HOOK_HOST}:{webhook_receiver.port}"
    for path in ("/a", "/b"):
        add_resident(engine, tenant, NYC_POINT, {"webhook": f"http://{authority}{path}"})
    dns.answers[HOOK_HOST] = ["127.0.0.1"]

    send_once(engine, tenant, "PIN-1")

    entries = sorted(webhook_receiver.received.bodies.values(), key=lambda e: e["path"])
    assert [e["path"] for e in entries] == ["/a", "/b"]
    assert [e["headers"]["Host"] for e in entries] == [authority, authority]
    assert dns.lookups == [HOOK_HOST]
    assert dns.other_lookups == []


def test_delivery_tries_next_checked_address(
    engine: Engine, allow_private, dns: FakeDns, webhook_receiver: HttpReceiver
) -> None:
    """When no connection to the first address of a name can be made, the next one it
    resolved to gets the request, once."""
    tenant = add_tenant(engine, alerts=RATES)
    allow_private(True)
    authority = f"{HOOK_HOST}:{webhook_receiver.port}"
    add_resident(engine, tenant, NYC_POINT, {"webhook": f"http://{authority}/next"})
    # The receiver listens on 127.0.0.1 only, so a connection to 127.0.0.2 is refused.
    dns.answers[HOOK_HOST] = ["127.0.0.2", "127.0.0.1"]

    alert_id = send_once(engine, tenant, "NEXT-1")

    assert [e["path"] for e in webhook_receiver.received.bodies.values()] == ["/next"]
    [status] = workflow.status(engine, manager(tenant), alert_id)
    assert status["deliveries"] == {"webhook": {"sent": 1}}


def test_delivery_follows_no_redirect(engine: Engine, allow_private) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    allow_private(True)
    redirecting = HttpReceiver(status=302, headers={"Location": "/elsewhere"}).start()
    try:
        add_resident(engine, tenant, NYC_POINT, {"webhook": redirecting.url("/hook")})

        alert_id = send_once(engine, tenant, "REDIRECT-1")
    finally:
        redirecting.stop()

    assert sum(redirecting.received.keys.values()) == 1
    [status] = workflow.status(engine, manager(tenant), alert_id)
    assert status["errors"] == {"webhook": {"HTTP 302": 1}}
    assert status["deliveries"] == {"webhook": {"failed": 1}}


def test_opt_in_rejects_internal_webpush(setup) -> None:  # noqa: F811 - fixture
    client, app_key = setup["client"], setup["keys"]["a_app"]
    endpoints = {
        "http://169.254.169.254/latest/meta-data/": "is a link-local address",
        "https://[::ffff:10.0.0.7]/push": "is a private address",
        "https://localhost:8443/push": "names the local machine or network",
    }

    for endpoint, reason in endpoints.items():
        subscription, _key, _auth = push_subscription(endpoint)
        body = opt_in_body("") | {"channels": {"webpush": subscription}}
        response = client.post("/api/v1/alert-subscriptions", json=body, headers=auth(app_key))

        assert response.status_code == 400, endpoint
        assert "webpush endpoint is not allowed" in response.text, response.text
        assert reason in response.text, (endpoint, response.text)


def test_webpush_refuses_internal_address(
    engine: Engine, allow_private, dns: FakeDns, webhook_receiver: HttpReceiver
) -> None:
    """A push endpoint whose name resolves to loopback since the opt-in fails for good, and
    nothing is sent."""
    tenant = add_tenant(engine, alerts=RATES)
    allow_private(True)
    endpoint = f"http://{HOOK_HOST}:{webhook_receiver.port}/push"
    subscription, _key, _auth = push_subscription(endpoint)
    add_resident(engine, tenant, NYC_POINT, {"webpush": subscription})
    allow_private(False)
    dns.answers[HOOK_HOST] = ["127.0.0.1"]

    alert_id = send_once(engine, tenant, "PUSH-SSRF-1")

    assert webhook_receiver.received.keys == {}
    [status] = workflow.status(engine, manager(tenant), alert_id)
    assert status["deliveries"] == {"webpush": {"failed": 1}}
    assert status["errors"] == {"webpush": {"loopback address not allowed": 1}}
    assert dns.other_lookups == []


def test_webpush_connects_to_checked_address(engine: Engine, allow_private, dns: FakeDns) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    allow_private(True)
    push = HttpReceiver(status=201, key_header="Topic").start()
    try:
        authority = f"{HOOK_HOST}:{push.port}"
        subscription, key, secret = push_subscription(f"http://{authority}/push/1")
        add_resident(engine, tenant, NYC_POINT, {"webpush": subscription})
        dns.answers[HOOK_HOST] = ["127.0.0.1"]

        alert_id = send_once(engine, tenant, "PUSH-PIN-1")
    finally:
        push.stop()

    [pushed] = push.received.bodies.values()
    assert pushed["path"] == "/push/1"
    assert pushed["headers"]["Host"] == authority
    assert pushed["headers"]["Content-Encoding"] == "aes128gcm"
    assert pushed["headers"]["Authorization"].startswith("vapid ")
    message = json.loads(
        http_ece.decrypt(pushed["body"], private_key=key, auth_secret=secret, version="aes128gcm")
    )
    assert message["alert_id"] == alert_id
    assert dns.lookups == [HOOK_HOST]
    assert dns.other_lookups == []


def test_webhook_key_printed_and_audited(engine: Engine, cli, monkeypatch) -> None:
    tenant = add_tenant(engine)

    def reveal_actors() -> list[str]:
        with engine.connect() as conn:
            return list(
                conn.scalars(
                    select(AuditEntry.actor).where(
                        AuditEntry.tenant_id == tenant,
                        AuditEntry.action == "alerts.webhook_key.reveal",
                    )
                )
            )

    def reveals() -> int:
        return len(reveal_actors())

    as_json = cli("webhook-key", "--tenant", tenant, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "tenant_id": tenant,
        "webhook_key": channels.webhook_secret(tenant),
    }
    assert reveals() == 1

    text = cli("webhook-key", "--tenant", tenant)
    assert text.exit_code == 0, text.output
    assert channels.webhook_secret(tenant) in text.stdout
    assert reveals() == 2

    # The entry names the person, as the other CLI commands record them.
    monkeypatch.setenv("HUB_OPERATOR", "dana.it")
    reset_settings_cache()
    named = cli("webhook-key", "--tenant", tenant)
    assert named.exit_code == 0, named.output
    assert reveal_actors()[-1] == "cli:dana.it"


def test_webhook_key_audits_operator(engine: Engine, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = add_tenant(engine)
    monkeypatch.setenv("HUB_OPERATOR", "ana@example.gov")
    reset_settings_cache()
    operator.set_operator(None)

    result = cli("webhook-key", "--tenant", tenant, "--json")

    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        actors = conn.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.tenant_id == tenant,
                AuditEntry.action == "alerts.webhook_key.reveal",
            )
        ).all()
    assert actors == ["cli:ana@example.gov"]


def test_webhook_key_unknown_tenant(engine: Engine, cli) -> None:
    result = cli("webhook-key", "--tenant", "no-such-city")

    assert result.exit_code == 2
    assert "tenant no-such-city not found" in result.output
    assert "Traceback" not in result.output
