"""Turn a raw API key into a `TenantContext`, for the API layer.

The plain functions (`authenticate`, `authenticate_for_tenant`, `key_from_headers`) hold the
rules; the FastAPI dependencies at the end only read the key from the request and call them.

Errors: a missing, malformed, unknown or revoked key raises `Unauthorized` (HTTP 403, the status
the Open311 GeoReport v2 spec gives for an invalid `api_key`). A valid key without the role raises
`Forbidden`. A valid key of another tenant than the one addressed raises `Unauthorized` with the
same message as an unknown key, so a caller learns nothing about other tenants' keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog
from fastapi import Header, Query, Request
from sqlalchemy import Engine

from hub.core.errors import Forbidden, Unauthorized
from hub.core.tenancy import TenantContext
from tenants.keys import ApiCredential, resolve_api_key

log = structlog.get_logger(__name__)

INVALID_KEY_MESSAGE = "api_key is missing or not valid"


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """Return the key from `Authorization: Bearer <key>` or `X-Api-Key: <key>`, or None."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def _require_credential(raw: str | None, engine: Engine | None) -> ApiCredential:
    credential = resolve_api_key(raw, engine=engine)
    if credential is None:
        raise Unauthorized(INVALID_KEY_MESSAGE, code="invalid_api_key")
    return credential


def _check_roles(credential: ApiCredential, any_of: Iterable[str]) -> None:
    wanted = frozenset(any_of)
    if wanted and not (credential.roles & wanted):
        log.info(
            "api_key_role_denied",
            tenant_id=credential.tenant_id,
            key_id=credential.key_id,
            required=sorted(wanted),
        )
        needed = ", ".join(sorted(wanted))
        raise Forbidden(
            f"this key lacks the role for this action; it needs one of: {needed}",
            code="missing_role",
        )


def authenticate(
    raw: str | None,
    *,
    any_of: Iterable[str] = (),
    request_id: str | None = None,
    engine: Engine | None = None,
) -> TenantContext:
    """Return the context for a key holding at least one role of `any_of` (no roles: any key)."""
    credential = _require_credential(raw, engine)
    _check_roles(credential, any_of)
    return credential.context(request_id)


def authenticate_for_tenant(
    raw: str | None,
    tenant_id: str,
    *,
    any_of: Iterable[str] = (),
    request_id: str | None = None,
    engine: Engine | None = None,
) -> TenantContext:
    """Like `authenticate`, for a call addressed to `tenant_id` (an Open311 `jurisdiction_id`):
    a key of any other tenant is rejected as invalid."""
    credential = credential_for_tenant(raw, tenant_id, any_of=any_of, engine=engine)
    return credential.context(request_id)


def credential_for_tenant(
    raw: str | None, tenant_id: str, *, any_of: Iterable[str] = (), engine: Engine | None = None
) -> ApiCredential:
    """Return the credential of a key valid for `tenant_id` and one of the roles `any_of`, as
    `authenticate_for_tenant` checks it, or raise."""
    credential = _require_credential(raw, engine)
    if credential.tenant_id != tenant_id:
        log.info(
            "api_key_wrong_tenant",
            key_tenant_id=credential.tenant_id,
            tenant_id=tenant_id,
            key_id=credential.key_id,
        )
        raise Unauthorized(INVALID_KEY_MESSAGE, code="invalid_api_key")
    _check_roles(credential, any_of)
    return credential


def credential_for(raw: str | None, *, engine: Engine | None = None) -> ApiCredential:
    """Return the full credential (with `center_id`) for a valid key, or raise Unauthorized."""
    return _require_credential(raw, engine)


# --- FastAPI glue ---------------------------------------------------------------------------


def request_id_of(request: Request) -> str | None:
    """Return the id the API's middleware gave the request: the client's X-Request-Id when it
    is short and plain, else a new one. None outside that middleware."""
    return getattr(request.state, "request_id", None)


def require_roles(*roles: str) -> Callable[..., TenantContext]:
    """Build a FastAPI dependency for the JSON API.

    The dependency reads the key from `Authorization: Bearer` or `X-Api-Key`, requires one of
    `roles` and sets `request.state.tenant_id` for the request metrics.
    """

    def dependency(
        request: Request,
        authorization: str | None = Header(None),
        x_api_key: str | None = Header(None),
    ) -> TenantContext:
        raw = key_from_headers(authorization, x_api_key)
        ctx = authenticate(raw, any_of=roles, request_id=request_id_of(request))
        request.state.tenant_id = ctx.tenant_id
        return ctx

    return dependency


def open311_api_key(
    api_key: str | None = Query(None, description="Open311 API key issued to the client."),
) -> str | None:
    """Read the Open311 `api_key` query parameter (a FastAPI dependency). The Open311 router
    then calls `authenticate_for_tenant` with the tenant of `jurisdiction_id`."""
    return api_key
