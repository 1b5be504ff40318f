"""API keys and their roles.

A key looks like `hub_<prefix>_<secret>`: `prefix` is 12 random hex characters stored in clear
to find the row, `secret` is 32 random bytes in URL-safe base64. Only the SHA-256 of the whole
key is stored; the key is shown once, when it is created. A fast hash is enough because the
key carries 256 random bits, so there is nothing to guess.

`resolve_api_key` runs on every Open311 POST, so resolved keys (and unknown ones) are cached in
the process for `CACHE_TTL_SECONDS`. A revocation made in this process clears the cache at once;
other processes stop accepting the key within the TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog
from sqlalchemy import URL, Engine, select
from sqlalchemy.orm import Session

from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Forbidden, InvalidInput, NotFound
from hub.core.tenancy import (
    ALL_ROLES,
    ROLE_AGENCY,
    ROLE_EMERGENCY_MANAGER,
    ROLE_PARTNER_AGENT,
    SystemContext,
    TenantContext,
)
from privacy.audit import audit
from tenants.metrics import API_KEY_LOOKUPS
from tenants.models import Agency, ApiKey, Tenant

log = structlog.get_logger(__name__)

KEY_PATTERN = re.compile(r"^hub_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
# A key holder's name, such as `alice` or `a.smith@nyc.gov`. It has no colon, so it can never
# equal an actor id such as `apikey:3`, and no spaces, so it can be typed as `--as NAME`.
HOLDER_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
CACHE_TTL_SECONDS = 5.0
# Upper bound on cached lookups, so a flood of random keys cannot grow memory without limit.
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class ApiCredential:
    """The grant of a valid key: its tenant, its roles and, for partner agents, its center.

    `agencies` are the codes of the agencies an agency key acts for, and empty on other keys.
    `max_posts_per_minute` is the key's own Open311 POST limit: None uses the tenant's, and
    0 means no limit.
    """

    tenant_id: str
    key_id: int
    roles: frozenset[str]
    center_id: str | None = None
    agencies: frozenset[str] = frozenset()
    max_posts_per_minute: int | None = None

    @property
    def actor(self) -> str:
        """The non-personal actor id recorded in status events and audit entries."""
        return f"apikey:{self.key_id}"

    def context(self, request_id: str | None = None) -> TenantContext:
        return TenantContext(
            tenant_id=self.tenant_id, actor=self.actor, roles=self.roles, request_id=request_id
        )


def check_roles(roles: list[str] | tuple[str, ...] | frozenset[str]) -> list[str]:
    """Return the roles sorted and deduplicated; raise InvalidInput naming an unknown one."""
    if not roles:
        raise InvalidInput(
            "a key needs at least one role; choose from " + ", ".join(sorted(ALL_ROLES))
        )
    unknown = sorted(set(roles) - ALL_ROLES)
    if unknown:
        raise InvalidInput(
            f"unknown role {unknown[0]!r}; choose from {', '.join(sorted(ALL_ROLES))}",
            field="roles",
        )
    return sorted(set(roles))


def _check_center_role(roles: list[str], center_id: str | None) -> None:
    """Raise InvalidInput unless a key has a center exactly when it has the partner_agent role.

    A partner agent works only at the center its key names, and the other roles act for the
    tenant as a whole, so a center on any other key would be ignored.
    """
    partner = ROLE_PARTNER_AGENT in roles
    if partner and center_id is None:
        raise InvalidInput(
            "a partner_agent key needs the id of its partner center; give it with --center",
            field="center_id",
        )
    if center_id is not None and not partner:
        raise InvalidInput(
            f"a key for center {center_id!r} needs the partner_agent role, the only role "
            "that acts at one center; add --role partner_agent or leave out --center",
            field="roles",
        )
    _check_partner_alone(roles)


def _check_partner_alone(roles: list[str]) -> None:
    """Raise InvalidInput when the partner_agent role comes with another role: the others act
    for the whole tenant, which an outside center's agent must not do."""
    others = [role for role in roles if role != ROLE_PARTNER_AGENT]
    if ROLE_PARTNER_AGENT in roles and others:
        raise InvalidInput(
            f"a partner_agent key takes no other role, but {', '.join(others)} was given; "
            "create a separate key for the tenant's own staff",
            field="roles",
        )


def split_agency_codes(values: list[str] | tuple[str, ...]) -> list[str]:
    """Return the agency codes in `values`, each of which may be a comma-separated list,
    without surrounding spaces, empty entries or repeats, in the order given."""
    codes: list[str] = []
    for value in values:
        for code in value.split(","):
            code = code.strip()
            if code and code not in codes:
                codes.append(code)
    return codes


def check_agencies(
    session: Session, tenant_id: str, roles: list[str], agencies: list[str]
) -> list[str]:
    """Return the agency codes of a new key, sorted.

    Raises InvalidInput unless the key has agencies exactly when it has the agency role, and
    each code names an active agency of the tenant. An agency key may update only the
    requests routed to its agencies.
    """
    agency_role = ROLE_AGENCY in roles
    if agency_role and not agencies:
        raise InvalidInput(
            "an agency key needs the code of each agency it acts for; give them with "
            "--agency CODE (repeat it, or separate codes with commas)",
            field="agencies",
        )
    if agencies and not agency_role:
        raise InvalidInput(
            f"a key for agencies {', '.join(agencies)} needs the agency role, the only role "
            "that acts for agencies; add --role agency or leave out --agency",
            field="roles",
        )
    known = set(
        session.scalars(
            select(Agency.code).where(Agency.tenant_id == tenant_id, Agency.active.is_(True))
        )
    )
    for code in agencies:
        if code in known:
            continue
        if not known:
            raise InvalidInput(
                f"agency {code!r} is not an agency of tenant {tenant_id}, which has no active "
                "agencies; add them to its manifest and onboard it again",
                field="agencies",
            )
        raise InvalidInput(
            f"agency {code!r} is not an agency of tenant {tenant_id}; use a code from its "
            f"manifest: {', '.join(sorted(known))}",
            field="agencies",
        )
    return sorted(set(agencies))


def check_post_limit(limit: int | None, *, name: str = "max_posts_per_minute") -> int | None:
    """Return a key's own POST limit per minute, raising InvalidInput unless it is None (the
    tenant's limit), 0 (no limit) or a positive number."""
    if limit is not None and limit < 0:
        raise InvalidInput(
            f"{name} {limit} is negative; give POST requests per minute, 0 for no limit, or "
            "leave it out to use the tenant's open311.max_posts_per_minute_per_key",
            field="max_posts_per_minute",
        )
    return limit


def check_holder(holder: str, *, name: str = "key holder") -> str:
    """Check a key holder's name and return it without surrounding spaces.

    Raises InvalidInput unless the name matches HOLDER_PATTERN. The message refers to the
    value as `name`, such as `--holder` in the CLI."""
    clean = holder.strip()
    if HOLDER_PATTERN.fullmatch(clean) is None:
        raise InvalidInput(
            f"{name} {holder!r} is invalid; use 1 to 64 letters, digits, '.', '_', '-' or '@', "
            "such as alice or a.smith@nyc.gov",
            field="holder",
        )
    return clean


def actor_person(session: Session, actor: str) -> str:
    """Return the person behind an actor id, as the two-person alert rule counts people.

    `apikey:N` is the key's holder, or stays `apikey:N` when the key names no holder or this
    session cannot see the key. `cli:NAME` is NAME, and any other actor is itself. Names are
    case-folded, so `cli:Alice` and a key held by `alice` are one person.
    """
    kind, _, name = actor.partition(":")
    if kind == "cli" and name:
        return name.casefold()
    if kind == "apikey" and re.fullmatch(r"[0-9]+", name):
        holder = session.scalar(select(ApiKey.holder).where(ApiKey.id == int(name)))
        return holder.casefold() if holder else actor
    return actor


def emergency_manager_holders(session: Session, tenant_id: str) -> list[str]:
    """Return the holders of the tenant's active emergency_manager keys, sorted without
    regard to case. These are the people who may act on the tenant's alerts by name."""
    rows = session.execute(
        select(ApiKey.holder, ApiKey.roles).where(
            ApiKey.tenant_id == tenant_id,
            ApiKey.revoked_at.is_(None),
            ApiKey.holder.is_not(None),
        )
    )
    holders = {holder for holder, roles in rows if ROLE_EMERGENCY_MANAGER in roles}
    return sorted(holders, key=str.casefold)


def registered_emergency_manager(
    session: Session, tenant_id: str, name: str, *, option: str = "--as"
) -> str:
    """Return the holder of an active emergency_manager key of the tenant whose name is
    `name`, ignoring case, in the spelling the key records.

    Raises Forbidden naming the value (given as `option`), the registered names and the
    command that registers a person. The CLI has no credential, so this roster is what ties
    a name typed there to a person the tenant registered.
    """
    holders = emergency_manager_holders(session, tenant_id)
    wanted = name.strip().casefold()
    for holder in holders:
        if holder.casefold() == wanted:
            return holder
    registered = (
        f"its emergency managers are {', '.join(holders)}"
        if holders
        else "it has no emergency manager yet"
    )
    raise Forbidden(
        f"{option} {name!r} is not an emergency manager of tenant {tenant_id}: no active "
        f"emergency_manager key of the tenant has that holder, and {registered}. Register "
        f"the person with `hub tenants keys create --tenant {tenant_id} --role "
        f'emergency_manager --label "OEM NAME" --holder NAME`',
        code="unknown_emergency_manager",
    )


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str]:
    """Return a new raw key and its prefix."""
    prefix = secrets.token_hex(6)
    return f"hub_{prefix}_{secrets.token_urlsafe(32)}", prefix


def _audit_key(
    session: Session, ctx: TenantContext, action: str, row: ApiKey, **details: object
) -> None:
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action=action,
        subject=f"api_keys:{row.id}",
        details={"key_id": row.id, **details},
    )


def create_api_key(
    session: Session,
    ctx: TenantContext,
    *,
    roles: list[str] | tuple[str, ...],
    label: str,
    center_id: str | None = None,
    holder: str | None = None,
    agencies: list[str] | tuple[str, ...] = (),
    max_posts_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for `ctx.tenant_id` and return the row and the raw key (shown once).

    `holder` names the person who uses the key, as in `check_holder`. `agencies` are agency
    codes or comma-separated lists of them, required for the agency role, as `check_agencies`
    checks them. `max_posts_per_minute` is the key's own Open311 POST limit (see
    `check_post_limit`). The session may be the tenant's own
    or a system session; the caller commits.
    """
    clean_roles = check_roles(roles)
    _check_center_role(clean_roles, center_id)
    clean_agencies = check_agencies(
        session, ctx.tenant_id, clean_roles, split_agency_codes(agencies)
    )
    if holder is not None:
        holder = check_holder(holder)
    check_post_limit(max_posts_per_minute)
    label = label.strip()
    if not label or len(label) > 120:
        raise InvalidInput("key label must be 1 to 120 characters", field="label")
    raw, prefix = generate_key()
    row = ApiKey(
        tenant_id=ctx.tenant_id,
        prefix=prefix,
        key_hash=_hash(raw),
        label=label,
        roles=clean_roles,
        center_id=center_id,
        holder=holder,
        agencies=clean_agencies,
        max_posts_per_minute=max_posts_per_minute,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    _audit_key(
        session,
        ctx,
        "api_key.create",
        row,
        roles=clean_roles,
        center_id=center_id,
        holder=holder,
        agencies=clean_agencies,
        max_posts_per_minute=max_posts_per_minute,
    )
    log.info("api_key_created", tenant_id=ctx.tenant_id, key_id=row.id, roles=clean_roles)
    return row, raw


def list_api_keys(session: Session, ctx: TenantContext) -> list[ApiKey]:
    """Return the tenant's keys, newest first, revoked ones included."""
    return list(
        session.scalars(
            select(ApiKey)
            .where(ApiKey.tenant_id == ctx.tenant_id)
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        )
    )


def _own_key(session: Session, ctx: TenantContext, key_id: int) -> ApiKey:
    row = session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == ctx.tenant_id, ApiKey.id == key_id)
    ).first()
    if row is None:
        # Another tenant's key is reported exactly like a missing one.
        raise NotFound(f"API key {key_id} not found for tenant {ctx.tenant_id}")
    return row


def revoke_api_key(session: Session, ctx: TenantContext, key_id: int) -> ApiKey:
    """Revoke a key of the tenant; revoking twice keeps the first revocation time."""
    row = _own_key(session, ctx, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        _audit_key(session, ctx, "api_key.revoke", row)
        log.info("api_key_revoked", tenant_id=ctx.tenant_id, key_id=row.id)
    forget_cached_keys()
    return row


def set_api_key_roles(
    session: Session, ctx: TenantContext, key_id: int, roles: list[str] | tuple[str, ...]
) -> ApiKey:
    """Replace a key's roles (audited with the old and new roles)."""
    row = _own_key(session, ctx, key_id)
    if row.revoked_at is not None:
        raise InvalidInput(f"API key {key_id} is revoked; create a new key instead")
    clean_roles = check_roles(roles)
    partner = ROLE_PARTNER_AGENT in clean_roles
    if partner and row.center_id is None:
        raise InvalidInput(
            f"API key {key_id} names no center, so it cannot take the partner_agent role; "
            "create a partner_agent key with --center instead",
            field="roles",
        )
    if row.center_id is not None and not partner:
        raise InvalidInput(
            f"API key {key_id} is for center {row.center_id!r}, so it keeps the partner_agent "
            "role; create another key for the other roles",
            field="roles",
        )
    _check_partner_alone(clean_roles)
    _check_agency_role_kept(row, clean_roles)
    previous = list(row.roles)
    if previous != clean_roles:
        row.roles = clean_roles
        session.flush()
        _audit_key(session, ctx, "api_key.roles_change", row, previous=previous, roles=clean_roles)
        log.info("api_key_roles_changed", tenant_id=ctx.tenant_id, key_id=row.id)
    forget_cached_keys()
    return row


def _check_agency_role_kept(row: ApiKey, roles: list[str]) -> None:
    """Raise InvalidInput when a role change would add the agency role to a key that names no
    agency, or drop it from a key that names agencies."""
    agency_role = ROLE_AGENCY in roles
    if agency_role and not row.agencies:
        raise InvalidInput(
            f"API key {row.id} names no agency, so it cannot take the agency role; create an "
            "agency key with --agency CODE instead",
            field="roles",
        )
    if row.agencies and not agency_role:
        raise InvalidInput(
            f"API key {row.id} is for agencies {', '.join(row.agencies)}, so it keeps the "
            "agency role; create another key for the other roles",
            field="roles",
        )


# --- resolution on the hot path -------------------------------------------------------------


class _KeyCache:
    """A bounded LRU of key hash -> (expiry, credential or None for an unknown key)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[URL, str], tuple[float, ApiCredential | None]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: tuple[URL, str]) -> tuple[bool, ApiCredential | None]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if entry[0] < time.monotonic():
                del self._entries[key]
                return False, None
            self._entries.move_to_end(key)
            return True, entry[1]

    def put(self, key: tuple[URL, str], value: ApiCredential | None) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + CACHE_TTL_SECONDS, value)
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_MAX_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _KeyCache()


def forget_cached_keys() -> None:
    """Drop every cached key lookup in this process."""
    _cache.clear()


def _lookup(engine: Engine, prefix: str, digest: str) -> ApiCredential | None:
    with unit_of_work(SystemContext("api key lookup"), engine=engine, write=False) as session:
        row = session.execute(
            select(ApiKey, Tenant.status)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.prefix == prefix)
        ).first()
    if row is None:
        return None
    key, tenant_status = row
    if not hmac.compare_digest(key.key_hash, digest):
        return None
    if key.revoked_at is not None or tenant_status != "active":
        return None
    return ApiCredential(
        tenant_id=key.tenant_id,
        key_id=key.id,
        roles=frozenset(key.roles),
        center_id=key.center_id,
        agencies=frozenset(key.agencies or ()),
        max_posts_per_minute=key.max_posts_per_minute,
    )


def resolve_api_key(raw: str | None, *, engine: Engine | None = None) -> ApiCredential | None:
    """Return the credential for a raw key, or None when it is malformed, unknown, revoked or
    belongs to an offboarded tenant. Bad input returns None; database errors propagate."""
    if not raw:
        API_KEY_LOOKUPS.labels(outcome="missing").inc()
        return None
    match = KEY_PATTERN.match(raw.strip())
    if match is None:
        API_KEY_LOOKUPS.labels(outcome="malformed").inc()
        return None
    engine = engine or get_engine()
    digest = _hash(raw.strip())
    cache_key = (engine.url, digest)
    hit, credential = _cache.get(cache_key)
    if not hit:
        credential = _lookup(engine, match.group(1), digest)
        _cache.put(cache_key, credential)
    outcome = "valid" if credential else "rejected"
    if hit:
        outcome += "_cached"
    API_KEY_LOOKUPS.labels(outcome=outcome).inc()
    return credential
