"""API keys on SQLite and PostgreSQL: isolation between tenants, revocation, roles, auth."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Forbidden, HubError, InvalidInput, NotFound, Unauthorized
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import (
    ROLE_AGENCY,
    ROLE_OPEN311,
    ROLE_PARTNER_AGENT,
    ROLE_STAFF,
    SystemContext,
    TenantContext,
)
from privacy.models import AuditEntry
from tenants import keys as keys_module
from tenants.auth import authenticate, authenticate_for_tenant, key_from_headers, require_roles
from tenants.keys import (
    actor_person,
    create_api_key,
    list_api_keys,
    resolve_api_key,
    revoke_api_key,
    set_api_key_roles,
)
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard


@pytest.fixture
def two_tenants(db_url, make_manifest):
    engine = get_engine(db_url)
    tenants = []
    for name in ("boston", "san-francisco"):
        data = make_manifest(name)
        with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
            tenant, key = onboard(session, parse_manifest(data))
        tenants.append((tenant.id, key))
    return engine, tenants[0], tenants[1]


def test_key_format_and_hash_only(two_tenants):
    engine, (a, key_a), _ = two_tenants
    assert keys_module.KEY_PATTERN.match(key_a)
    with unit_of_work(TenantContext(a), engine=engine) as session:
        stored = session.scalars(select(keys_module.ApiKey)).all()
    assert len(stored) == 1
    assert key_a not in (stored[0].key_hash, stored[0].prefix)
    assert stored[0].key_hash == keys_module._hash(key_a)


def test_key_of_a_never_yields_b(two_tenants):
    engine, (a, key_a), (b, key_b) = two_tenants
    assert resolve_api_key(key_a, engine=engine).tenant_id == a
    assert resolve_api_key(key_b, engine=engine).tenant_id == b
    with pytest.raises(Unauthorized):
        authenticate_for_tenant(key_a, b, engine=engine)
    with pytest.raises(Unauthorized):
        authenticate_for_tenant(key_b, a, engine=engine)
    assert authenticate_for_tenant(key_a, a, engine=engine).tenant_id == a


def test_tampered_key_rejected(two_tenants):
    engine, (_, key_a), (_, key_b) = two_tenants
    prefix_a = key_a.split("_")[1]
    secret_b = key_b.split("_", 2)[2]
    assert resolve_api_key(f"hub_{prefix_a}_{secret_b}", engine=engine) is None
    assert resolve_api_key(key_a[:-1] + ("A" if key_a[-1] != "A" else "B"), engine=engine) is None
    assert resolve_api_key("", engine=engine) is None
    assert resolve_api_key("not-a-key", engine=engine) is None
    assert resolve_api_key(None, engine=engine) is None


def test_revocation_visible_after_ttl(two_tenants, monkeypatch):
    engine, (a, key_a), _ = two_tenants
    credential = resolve_api_key(key_a, engine=engine)
    # Revoke through a statement that bypasses this process's cache clearing, as another
    # process would; the cached result lasts until the TTL runs out.
    with unit_of_work(TenantContext(a, actor="test"), engine=engine) as session:
        row = session.get(keys_module.ApiKey, credential.key_id)
        row.revoked_at = keys_module.utcnow()
    assert resolve_api_key(key_a, engine=engine) is not None
    monkeypatch.setattr(keys_module, "CACHE_TTL_SECONDS", 0.0)
    keys_module.forget_cached_keys()
    assert resolve_api_key(key_a, engine=engine) is None


def test_revoke_in_process_is_immediate(two_tenants):
    engine, (a, key_a), _ = two_tenants
    credential = resolve_api_key(key_a, engine=engine)
    with unit_of_work(TenantContext(a, actor="cli:test"), engine=engine) as session:
        revoke_api_key(session, TenantContext(a, actor="cli:test"), credential.key_id)
    assert resolve_api_key(key_a, engine=engine) is None
    with unit_of_work(TenantContext(a), engine=engine) as session:
        actions = list(session.scalars(select(AuditEntry.action)))
    assert "api_key.revoke" in actions


def test_revoke_other_tenants_key_is_not_found(two_tenants):
    engine, (a, key_a), (b, _) = two_tenants
    key_id = resolve_api_key(key_a, engine=engine).key_id
    with pytest.raises(NotFound):
        with unit_of_work(TenantContext(b), engine=engine) as session:
            revoke_api_key(session, TenantContext(b), key_id)
    assert resolve_api_key(key_a, engine=engine) is not None


def test_create_list_and_role_change(two_tenants):
    engine, (a, _), (b, _) = two_tenants
    ctx = TenantContext(a, actor="cli:test")
    with unit_of_work(ctx, engine=engine) as session:
        row, raw = create_api_key(
            session, ctx, roles=[ROLE_AGENCY], label="Public works", agencies=["PWD_HWY"]
        )
        key_id = row.id
    context = authenticate(raw, any_of=[ROLE_AGENCY], engine=engine)
    assert context.tenant_id == a
    assert context.actor == f"apikey:{key_id}"
    with pytest.raises(Forbidden):
        authenticate(raw, any_of=[ROLE_STAFF], engine=engine)

    with unit_of_work(ctx, engine=engine) as session:
        set_api_key_roles(session, ctx, key_id, [ROLE_STAFF, ROLE_AGENCY])
    assert authenticate(raw, any_of=[ROLE_STAFF], engine=engine).has_role(ROLE_STAFF)

    with unit_of_work(ctx, engine=engine) as session:
        listed = [k.id for k in list_api_keys(session, ctx)]
        actions = list(session.scalars(select(AuditEntry.action)))
    assert key_id in listed
    assert "api_key.roles_change" in actions
    with unit_of_work(TenantContext(b), engine=engine) as session:
        other = [k.id for k in list_api_keys(session, TenantContext(b))]
    assert key_id not in other


def test_unknown_role_rejected(two_tenants):
    engine, (a, _), _ = two_tenants
    ctx = TenantContext(a)
    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            create_api_key(session, ctx, roles=["superuser"], label="x")
    assert "superuser" in caught.value.message


def test_holder_stored_and_checked(two_tenants):
    engine, (a, _), _ = two_tenants
    ctx = TenantContext(a, actor="cli:test")
    with unit_of_work(ctx, engine=engine) as session:
        personal_key, _ = create_api_key(
            session, ctx, roles=[ROLE_STAFF], label="duty officer", holder=" a.smith@nyc.gov "
        )
        desk_key, _ = create_api_key(session, ctx, roles=[ROLE_STAFF], label="shared desk")
        personal_id, desk_id = personal_key.id, desk_key.id
    with unit_of_work(ctx, engine=engine) as session:
        holders = {row.id: row.holder for row in list_api_keys(session, ctx)}
    assert holders[personal_id] == "a.smith@nyc.gov"
    assert holders[desk_id] is None

    for bad in ("", "alice smith", "cli:alice", "x" * 65):
        with pytest.raises(InvalidInput) as caught:
            with unit_of_work(ctx, engine=engine) as session:
                create_api_key(session, ctx, roles=[ROLE_STAFF], label="bad", holder=bad)
        assert repr(bad) in caught.value.message
        assert "such as alice" in caught.value.message
        assert caught.value.field == "holder"


def test_actor_person_cases(two_tenants):
    engine, (a, _), (b, _) = two_tenants
    ctx = TenantContext(a, actor="cli:test")
    with unit_of_work(ctx, engine=engine) as session:
        personal_key, _ = create_api_key(
            session, ctx, roles=[ROLE_STAFF], label="duty officer", holder="A.Smith@nyc.gov"
        )
        desk_key, _ = create_api_key(session, ctx, roles=[ROLE_STAFF], label="shared desk")
        personal, desk = f"apikey:{personal_key.id}", f"apikey:{desk_key.id}"
    cases = {
        personal: "a.smith@nyc.gov",
        desk: desk,
        "apikey:999999": "apikey:999999",
        "apikey:x": "apikey:x",
        "apikey:\u00b2": "apikey:\u00b2",
        "cli:Alice": "alice",
        "cli:": "cli:",
        "system": "system",
    }
    with unit_of_work(ctx, engine=engine) as session:
        for actor, person in cases.items():
            assert actor_person(session, actor) == person, actor
    # Another tenant's session cannot see the key, so it gets the actor id back.
    with unit_of_work(TenantContext(b), engine=engine) as session:
        assert actor_person(session, personal) == personal


def test_center_only_on_partner_keys(two_tenants):
    engine, (a, _), _ = two_tenants
    ctx = TenantContext(a)
    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            create_api_key(session, ctx, roles=[ROLE_PARTNER_AGENT], label="no center")
    assert "needs the id of its partner center" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            create_api_key(
                session,
                ctx,
                roles=[ROLE_AGENCY],
                label="x",
                center_id="partner-1",
                agencies=["PWD_HWY"],
            )
    assert "needs the partner_agent role" in caught.value.message


def test_role_change_keeps_center_rule(two_tenants):
    engine, (a, _), _ = two_tenants
    ctx = TenantContext(a)
    with unit_of_work(ctx, engine=engine) as session:
        plain = create_api_key(
            session, ctx, roles=[ROLE_AGENCY], label="agency", agencies=["PWD_HWY"]
        )[0].id
        partner = create_api_key(
            session, ctx, roles=[ROLE_PARTNER_AGENT], label="partner", center_id="partner-1"
        )[0].id

    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            set_api_key_roles(session, ctx, plain, [ROLE_AGENCY, ROLE_PARTNER_AGENT])
    assert f"API key {plain} names no center" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            set_api_key_roles(session, ctx, partner, [ROLE_AGENCY])
    assert "keeps the partner_agent role" in caught.value.message

    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            set_api_key_roles(session, ctx, partner, [ROLE_PARTNER_AGENT, ROLE_STAFF])
    assert "a partner_agent key takes no other role, but staff was given" in caught.value.message


def test_role_change_keeps_agency_rule(two_tenants):
    engine, (a, _), _ = two_tenants
    ctx = TenantContext(a)
    with unit_of_work(ctx, engine=engine) as session:
        agency = create_api_key(
            session, ctx, roles=[ROLE_AGENCY], label="agency", agencies=[" PWD_HWY", "PWD_HWY"]
        )[0]
        staff = create_api_key(session, ctx, roles=[ROLE_STAFF], label="staff")[0]
        agency_id, staff_id = agency.id, staff.id
        assert agency.agencies == ["PWD_HWY"]

    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            set_api_key_roles(session, ctx, staff_id, [ROLE_STAFF, ROLE_AGENCY])
    assert f"API key {staff_id} names no agency, so it cannot take the agency role" in (
        caught.value.message
    )
    with pytest.raises(InvalidInput) as caught:
        with unit_of_work(ctx, engine=engine) as session:
            set_api_key_roles(session, ctx, agency_id, [ROLE_STAFF])
    assert f"API key {agency_id} is for agencies PWD_HWY, so it keeps the agency role" in (
        caught.value.message
    )
    with unit_of_work(ctx, engine=engine) as session:
        changed = set_api_key_roles(session, ctx, agency_id, [ROLE_AGENCY, ROLE_STAFF])
        assert changed.agencies == ["PWD_HWY"]


def test_open311_key_lacks_staff_role(two_tenants):
    engine, (_, key_a), _ = two_tenants
    assert authenticate(key_a, any_of=[ROLE_OPEN311], engine=engine)
    with pytest.raises(Forbidden):
        authenticate(key_a, any_of=[ROLE_STAFF], engine=engine)


def test_key_from_headers():
    assert key_from_headers("Bearer abc", None) == "abc"
    assert key_from_headers("bearer  abc ", None) == "abc"
    assert key_from_headers(None, "xyz") == "xyz"
    assert key_from_headers("Basic abc", "xyz") == "xyz"
    assert key_from_headers(None, None) is None


def test_require_roles_dependency(two_tenants, monkeypatch):
    engine, (a, key_a), _ = two_tenants
    # The dependency resolves keys against the configured database, so point it at this one.
    monkeypatch.setenv("HUB_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    reset_settings_cache()

    app = FastAPI()

    @app.exception_handler(HubError)
    async def _error(_request, exc: HubError):
        return JSONResponse({"code": exc.code}, status_code=exc.status)

    @app.get("/whoami")
    def whoami(ctx: TenantContext = Depends(require_roles(ROLE_OPEN311))) -> dict:
        return {"tenant_id": ctx.tenant_id}

    @app.get("/staff")
    def staff(ctx: TenantContext = Depends(require_roles(ROLE_STAFF))) -> dict:
        return {"tenant_id": ctx.tenant_id}

    try:
        client = TestClient(app)
        bearer = client.get("/whoami", headers={"Authorization": f"Bearer {key_a}"})
        header = client.get("/whoami", headers={"X-Api-Key": key_a})
        missing = client.get("/whoami")
        wrong_role = client.get("/staff", headers={"X-Api-Key": key_a})
    finally:
        monkeypatch.delenv("HUB_DATABASE_URL")
        reset_settings_cache()
    assert bearer.json() == {"tenant_id": a}
    assert header.json() == {"tenant_id": a}
    assert missing.status_code == 403
    assert missing.json() == {"code": "invalid_api_key"}
    assert wrong_role.status_code == 403
    assert wrong_role.json() == {"code": "missing_role"}
