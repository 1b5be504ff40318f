"""Resident opt-in: places as H3 cells, languages, channels with encrypted addresses, consent.

Addresses are checked, then encrypted under the tenant's DEK bound to the channel row; the
plaintext never reaches the database, logs or task arguments. Unsubscribing needs only the
link token returned at opt-in; the hub stores its SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import phonenumbers
import structlog
from sqlalchemy import ColumnElement, Select, delete, literal, select, update
from sqlalchemy.orm import Session, aliased

from hub.alerts.cells import place_cells
from hub.alerts.models import (
    CHANNELS,
    Subscriber,
    SubscriberCell,
    SubscriberChannel,
)
from hub.alerts.targeting import address_of
from hub.core.clock import as_utc, utcnow
from hub.core.db import advisory_xact_lock, engine_of
from hub.core.errors import InvalidInput, NotFound
from hub.core.ids import tracking_code
from hub.core.public_hosts import host_problem
from hub.core.settings import get_settings
from hub.core.tenancy import TenantContext
from hub.requests.catalog import in_service_area
from privacy.blind_index import blind_index_normalized, blind_indexes_normalized
from privacy.fields import FieldCipher
from privacy.keys import get_key_provider
from tenants.languages import TAG_RULE, canonical_tags, is_language_tag
from tenants.registry import get_tenant

log = structlog.get_logger(__name__)

ADDRESS_TABLE = "alert_subscriber_channels"
ADDRESS_COLUMN = "address_enc"
# Blind index kind of `Subscriber.channels_bidx`, apart from the email and phone indexes.
CHANNELS_INDEX_KIND = "alert_subscriber_channels"
MAX_PLACES = 10
# First key of the two-key advisory lock under which the opt-ins of one tenant (imports and
# the API) match stored subscribers. The second key is the hash of the tenant id.
#
# Without it, two opt-ins running at once could both miss a resident that the other had added
# but not committed yet, and both add it. An import takes it once per chunk of records, and an
# API opt-in once. On SQLite the write lock that BEGIN IMMEDIATE takes does the same.
# Opt-ins into other tenants do not wait for this lock, and an opt-in that waits is delayed, not
# rejected.
# A unique index on (tenant_id, channels_bidx) was not used instead, because it would not match
# a subscriber indexed under an older index key version.
_MATCH_LOCK_CLASS = 311_0008
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class SubscriptionInput:
    """One resident's opt-in. `places` are (latitude, longitude) pairs; `channels` maps a
    channel name to its address (a Web Push subscription is its JSON text)."""

    places: list[tuple[float, float]]
    languages: list[str]
    channels: dict[str, str]
    consent_at: datetime
    test_opt_in: bool = False
    source: str = "api"
    extra: dict[str, object] = field(default_factory=dict)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def unsubscribe_token(tenant_id: str, subscriber_id: str) -> str:
    """Return the subscriber's unsubscribe link token: an HMAC of the id under a tenant key
    derived from the root key, so every message can carry the link without storing it."""
    return _token(_unsubscribe_key(tenant_id), subscriber_id)


def _unsubscribe_key(tenant_id: str) -> bytes:
    return get_key_provider().derive(f"alerts.unsubscribe:{tenant_id}")


def _token(key: bytes, subscriber_id: str) -> str:
    digest = hmac.new(key, subscriber_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def unsubscribe_url(base_url: str, tenant_id: str, subscriber_id: str) -> str:
    return unsubscribe_links(base_url, tenant_id)(subscriber_id)


def unsubscribe_links(base_url: str, tenant_id: str) -> Callable[[str], str]:
    """Return a function from subscriber id to `unsubscribe_url`, deriving the key only once."""
    key = _unsubscribe_key(tenant_id)
    prefix = f"{base_url.rstrip('/')}/alerts/{tenant_id}/unsubscribe/"

    def link(subscriber_id: str) -> str:
        return prefix + _token(key, subscriber_id)

    return link


def channel_address_id(subscriber_id: str, channel: str) -> str:
    """Row id the address ciphertext is bound to: subscriber and channel together."""
    return f"{subscriber_id}:{channel}"


def normalize_address(channel: str, address: str) -> str:
    """Check one address for its channel and return it in canonical form.

    Raises InvalidInput naming the channel, never echoing the address (personal data).
    """
    address = address.strip()
    if channel == "email":
        if not _EMAIL.match(address):
            raise InvalidInput("email address is invalid; expected name@domain", field="email")
        return address.lower()
    if channel == "sms":
        try:
            number = phonenumbers.parse(address, "US")
        except phonenumbers.NumberParseException as exc:
            raise InvalidInput(
                "sms number is invalid; use E.164 such as +16175550100", field="sms"
            ) from exc
        if not phonenumbers.is_valid_number(number):
            raise InvalidInput("sms number is invalid; use E.164 such as +16175550100", field="sms")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if channel == "webhook":
        check_public_url(address, "webhook", "webhook URL", "https://app.example.org/alerts")
        return address
    if channel == "webpush":
        try:
            subscription = json.loads(address)
            endpoint = subscription["endpoint"]
            keys = subscription["keys"]
            keys["p256dh"], keys["auth"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                "webpush subscription must be the browser's PushSubscription JSON with "
                "endpoint and keys.p256dh and keys.auth",
                field="webpush",
            ) from exc
        check_public_url(
            endpoint, "webpush", "webpush endpoint", "https://push.example.net/send/abc"
        )
        return json.dumps(subscription, separators=(",", ":"), sort_keys=True)
    raise InvalidInput(
        f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}", field="channels"
    )


def check_public_url(address: object, channel: str, label: str, example: str) -> None:
    """Reject a resident's URL on `channel` (a webhook URL or a Web Push endpoint) that is
    not http(s) or whose host is not public (`hub.core.public_hosts.host_problem`), unless
    `HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE` is set. Messages call the URL `label` and give
    `example` as a valid one.

    The sender checks the addresses the host resolves to again at each delivery.
    """
    try:
        parts = urlsplit(address) if isinstance(address, str) else None
        if parts is not None:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{label} must be an http(s) URL, such as {example}", field=channel)
    if get_settings().alert_webhooks_allow_private:
        return
    problem = host_problem(parts.hostname)
    if problem is not None:
        raise InvalidInput(
            f"{label} is not allowed: its host {problem}. The hub sends alerts only to "
            "public addresses; give the URL of a server reachable from the internet",
            field=channel,
        )


def check_input(data: SubscriptionInput) -> dict[str, str]:
    """Validate an opt-in and return its normalized channel addresses."""
    if not data.places:
        raise InvalidInput(
            "places is empty; give at least one latitude and longitude", field="places"
        )
    if len(data.places) > MAX_PLACES:
        raise InvalidInput(f"at most {MAX_PLACES} places are allowed", field="places")
    # The message names the place by its position only, because coordinates are personal data.
    for number, (lat, lon) in enumerate(data.places, start=1):
        if not (-90 <= lat <= 90) or not (-180 <= lon <= 180):
            raise InvalidInput(
                f"place {number} is out of range; latitude must be within [-90, 90] and "
                "longitude within [-180, 180]",
                field="places",
            )
    for language in data.languages:
        if not is_language_tag(language):
            raise InvalidInput(
                f"language {language!r} is not {TAG_RULE}",
                field="languages",
            )
    if not data.channels:
        raise InvalidInput(
            f"channels is empty; give an address for at least one of {', '.join(CHANNELS)}",
            field="channels",
        )
    if data.consent_at.tzinfo is None:
        raise InvalidInput(
            "consent_at has no timezone offset; give one, such as 2026-01-15T09:30:00-05:00",
            field="consent_at",
        )
    return {channel: normalize_address(channel, a) for channel, a in data.channels.items()}


def check_places_in_area(
    session: Session, tenant_id: str, places: list[tuple[float, float]]
) -> None:
    """Reject a place outside the tenant's service area, where none of its alerts reach.

    A place given longitude first, as GeoJSON orders it, lands outside, so the message names
    the order. Like `check_input`, it names the place by its position only.
    """
    tenant = get_tenant(tenant_id, engine=engine_of(session))
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", code="unknown_tenant")
    for number, (lat, lon) in enumerate(places, start=1):
        if not in_service_area(tenant, lat, lon):
            raise InvalidInput(
                f"place {number} is outside the service area of {tenant.name}; give each "
                "place as [latitude, longitude]",
                field="places",
            )


def channels_text(addresses: dict[str, str]) -> str:
    """Return the canonical text of normalized channel addresses, the same for any order."""
    return json.dumps(sorted(addresses.items()), separators=(",", ":"), ensure_ascii=False)


def find_by_channels(session: Session, ctx: TenantContext, data: SubscriptionInput) -> str | None:
    """Return the id of the tenant's subscriber, active or unsubscribed, whose channels and
    addresses are exactly those of `data`, or None. Matches through the blind index under
    every index key version, so no address is decrypted.

    Raises InvalidInput when `data` is invalid (`check_input`).
    """
    text = channels_text(check_input(data))
    indexes = blind_indexes_normalized(session, ctx.tenant_id, CHANNELS_INDEX_KIND, text)
    return session.scalar(
        select(Subscriber.id)
        .where(
            Subscriber.tenant_id == ctx.tenant_id,
            Subscriber.channels_bidx.in_(list(indexes.values())),
        )
        .limit(1)
    )


def lock_matching(session: Session, tenant_id: str) -> None:
    """Hold the tenant's opt-in lock until the transaction ends (`_MATCH_LOCK_CLASS`), so
    that `find_by_channels` also finds the residents that other opt-ins committed."""
    advisory_xact_lock(session, _MATCH_LOCK_CLASS, tenant_id)


def opt_in(session: Session, ctx: TenantContext, data: SubscriptionInput) -> tuple[str, str, bool]:
    """Subscribe a resident, or update the subscriber with the same channels and addresses.

    A city app sends a resident's whole choice each time, so a repeated opt-in replaces the
    stored places, languages, test opt-in and consent time, and turns the subscriber and its
    channels on again if they were off. Without the match a second opt-in made a second
    subscriber, and each alert reached the resident twice. Returns the subscriber id, its
    unsubscribe token, and whether the subscriber is new.
    """
    lock_matching(session, ctx.tenant_id)
    existing = find_by_channels(session, ctx, data)
    if existing is None:
        subscriber_id, token = subscribe(session, ctx, data)
        return subscriber_id, token, True
    check_places_in_area(session, ctx.tenant_id, data.places)
    subscriber = session.get(Subscriber, existing)
    assert subscriber is not None, "the matched subscriber is in the tenant's session"
    subscriber.languages = canonical_tags(data.languages)
    subscriber.test_opt_in = data.test_opt_in
    subscriber.consent_at = as_utc(data.consent_at)
    subscriber.active = True
    subscriber.unsubscribed_at = None
    session.execute(
        update(SubscriberChannel)
        .where(SubscriberChannel.subscriber_id == existing)
        .values(active=True, disabled_reason=None)
    )
    session.execute(delete(SubscriberCell).where(SubscriberCell.subscriber_id == existing))
    _add_places(session, ctx, existing, data.places)
    session.flush()
    log.info("alert_subscriber_updated", subscriber_id=existing, source=data.source)
    return existing, unsubscribe_token(ctx.tenant_id, existing), False


def _add_places(
    session: Session, ctx: TenantContext, subscriber_id: str, places: list[tuple[float, float]]
) -> None:
    for lat, lon in set(places):
        fine, medium, coarse = place_cells(lat, lon)
        session.add(
            SubscriberCell(
                tenant_id=ctx.tenant_id,
                subscriber_id=subscriber_id,
                cell_fine=fine,
                cell_medium=medium,
                cell_coarse=coarse,
            )
        )


def subscribe(
    session: Session,
    ctx: TenantContext,
    data: SubscriptionInput,
    *,
    cipher: FieldCipher | None = None,
) -> tuple[str, str]:
    """Add a subscriber; return its id and the unsubscribe token (shown once)."""
    addresses = check_input(data)
    check_places_in_area(session, ctx.tenant_id, data.places)
    cipher = cipher or FieldCipher.for_tenant(session, ctx.tenant_id)
    channels_bidx, bidx_version = blind_index_normalized(
        session, ctx.tenant_id, CHANNELS_INDEX_KIND, channels_text(addresses)
    )
    subscriber_id = tracking_code(16)
    token = unsubscribe_token(ctx.tenant_id, subscriber_id)
    session.add(
        Subscriber(
            id=subscriber_id,
            tenant_id=ctx.tenant_id,
            languages=canonical_tags(data.languages),
            test_opt_in=data.test_opt_in,
            consent_at=as_utc(data.consent_at),
            unsubscribe_hash=hash_token(token),
            source=data.source,
            channels_bidx=channels_bidx,
            bidx_version=bidx_version,
        )
    )
    session.flush()
    for channel, address in addresses.items():
        session.add(
            SubscriberChannel(
                tenant_id=ctx.tenant_id,
                subscriber_id=subscriber_id,
                channel=channel,
                address_enc=cipher.encrypt(
                    ADDRESS_TABLE,
                    ADDRESS_COLUMN,
                    channel_address_id(subscriber_id, channel),
                    address,
                ),
                dek_version=cipher.dek_version,
            )
        )
    _add_places(session, ctx, subscriber_id, data.places)
    session.flush()
    _link_addresses(session, ctx, subscriber_id, addresses)
    log.info("alert_subscriber_added", subscriber_id=subscriber_id, channels=sorted(addresses))
    return subscriber_id, token


def _address_kind(channel: str) -> str:
    return f"{ADDRESS_TABLE}:{channel}"


def _link_addresses(
    session: Session, ctx: TenantContext, subscriber_id: str, addresses: dict[str, str]
) -> None:
    """Index the new subscriber's channel addresses and link each row to the tenant's other
    rows of the same channel and address (`SubscriberChannel.address_key`).

    Two subscribers can share an address: a resident who opted in with an e-mail address,
    then again with the same address and a phone number, is two subscribers. Linked rows get
    one message per alert between them. The match runs under every index key version; the
    caller holds the tenant's opt-in lock (`lock_matching`) where opt-ins can run at once.
    """
    rows = session.execute(
        select(SubscriberChannel.id, SubscriberChannel.channel).where(
            SubscriberChannel.subscriber_id == subscriber_id
        )
    ).all()
    for row_id, channel in rows:
        kind = _address_kind(channel)
        address_bidx, version = blind_index_normalized(
            session, ctx.tenant_id, kind, addresses[channel]
        )
        indexes = blind_indexes_normalized(session, ctx.tenant_id, kind, addresses[channel])
        first = session.execute(
            select(SubscriberChannel.id, SubscriberChannel.address_key)
            .where(
                SubscriberChannel.tenant_id == ctx.tenant_id,
                SubscriberChannel.channel == channel,
                SubscriberChannel.address_bidx.in_(list(indexes.values())),
                SubscriberChannel.id != row_id,
            )
            .order_by(SubscriberChannel.id)
            .limit(1)
        ).first()
        session.execute(
            update(SubscriberChannel)
            .where(SubscriberChannel.id == row_id)
            .values(
                address_bidx=address_bidx,
                bidx_version=version,
                address_key=None if first is None else (first.address_key or first.id),
            )
        )


def unsubscribe(session: Session, ctx: TenantContext, token: str) -> str:
    """Deactivate the subscriber whose link token this is; return its id.

    An unknown token and another tenant's token both raise NotFound.
    """
    subscriber = session.scalar(
        select(Subscriber).where(Subscriber.unsubscribe_hash == hash_token(token))
    )
    if subscriber is None:
        raise NotFound("unsubscribe link is invalid or was already used", code="not_found")
    if subscriber.active:
        subscriber.active = False
        subscriber.unsubscribed_at = utcnow()
        own_rows = select(SubscriberChannel.id).where(
            SubscriberChannel.subscriber_id == subscriber.id
        )
        session.execute(
            update(SubscriberChannel)
            .where(_linked_to(ctx.tenant_id, own_rows))
            .values(active=False, disabled_reason="unsubscribed")
        )
        log.info("alert_subscriber_unsubscribed", subscriber_id=subscriber.id)
    return subscriber.id


def _linked_to(tenant_id: str, row_ids: Select[tuple[int]]) -> ColumnElement[bool]:
    """Return the condition for the tenant's channel rows linked to any of `row_ids` (those
    rows included), so that a resident who stops an address stops it for every subscriber."""
    inner = aliased(SubscriberChannel)
    addresses = select(address_of(inner)).where(inner.id.in_(row_ids))
    return (SubscriberChannel.tenant_id == tenant_id) & address_of(SubscriberChannel).in_(addresses)


def disable_channel(session: Session, ctx: TenantContext, channel_row_id: int, reason: str) -> None:
    """Stop sending to one address after a permanent failure (for example Web Push 410), for
    every subscriber of the tenant who gave it."""
    session.execute(
        update(SubscriberChannel)
        .where(_linked_to(ctx.tenant_id, select(literal(channel_row_id))))
        .values(active=False, disabled_reason=reason)
    )
    log.info("alert_channel_disabled", channel_row_id=channel_row_id, reason=reason)
