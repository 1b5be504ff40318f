"""Agency webhook secrets at rest, on SQLite and PostgreSQL.

They are encrypted under the tenant's DEK and bound to their agency, DEK rotation re-encrypts
them, and the sealed export leaves them out. Onboarding keeps a rotated secret while the
manifest still carries the one it replaced."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select, text

from hub.core.db import get_engine, unit_of_work
from hub.core.errors import NotFound
from hub.core.tenancy import ROLE_ADMIN, SystemContext, TenantContext
from privacy.export import write_sealed_export
from privacy.fields import DecryptionFailed, ciphertext_version
from privacy.keys import Keyring
from privacy.models import KIND_DEK
from privacy.rotation import reencrypt_tenant, rotate_dek
from privacy.shred import open_sealed
from tenants import onboarding
from tenants.agencies import list_agencies, rotate_webhook_secret, webhook_secrets
from tenants.manifest import parse_manifest
from tenants.models import Agency, Tenant
from tenants.offboarding import offboard
from tenants.onboarding import OnboardingResult, onboard_manifest

GIVEN_SECRET = "manifest-secret-Zq81-canary-0001"
NEW_SECRET = "manifest-secret-Zq81-canary-0002"


def _onboard(engine, data: dict) -> OnboardingResult:
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        return onboard_manifest(session, parse_manifest(data))


def _manifest_with_secret(make_manifest, secret: str) -> dict:
    data = make_manifest()
    data["agencies"][0]["webhook_secret"] = secret
    return data


def _onboard_with_secret(engine, make_manifest) -> tuple[dict, str, str]:
    """Onboard a manifest whose first agency has `GIVEN_SECRET`; return the manifest data,
    the tenant id and that agency's code."""
    data = _manifest_with_secret(make_manifest, GIVEN_SECRET)
    _onboard(engine, data)
    return data, data["id"], data["agencies"][0]["code"]


def _secrets(engine, tenant_id: str, code: str) -> tuple[str | None, str | None]:
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        agency = session.scalars(select(Agency).where(Agency.code == code)).one()
        stored = webhook_secrets(session, agency)
        return stored.current, stored.previous


def _rotate(engine, tenant_id: str, code: str, hours: float = 24) -> str:
    ctx = TenantContext(tenant_id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        return rotate_webhook_secret(session, ctx, code, overlap_hours=hours).secret


def _raw_agency_rows(engine, tenant_id: str) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT * FROM agencies WHERE tenant_id = :tenant ORDER BY id"),
            {"tenant": tenant_id},
        )
        return [dict(row._mapping) for row in rows]


def test_secret_stored_encrypted(db_url, make_manifest):
    engine = get_engine(db_url)
    data = _manifest_with_secret(make_manifest, GIVEN_SECRET)
    _onboard(engine, data)
    code = data["agencies"][0]["code"]

    rows = _raw_agency_rows(engine, data["id"])
    stored = json.dumps(rows, default=lambda value: bytes(value).hex()).encode()

    assert _secrets(engine, data["id"], code) == (GIVEN_SECRET, None)
    assert GIVEN_SECRET.encode() not in stored
    assert GIVEN_SECRET.encode().hex().encode() not in stored
    assert all(row["webhook_secret_enc"] is not None for row in rows)
    assert all(row["dek_version"] == 1 for row in rows)
    assert {ciphertext_version(bytes(row["webhook_secret_enc"])) for row in rows} == {1}


def test_secret_moved_to_other_agency_fails(db_url, make_manifest):
    engine = get_engine(db_url)
    data = _manifest_with_secret(make_manifest, GIVEN_SECRET)
    _onboard(engine, data)
    first, second = (agency["code"] for agency in data["agencies"][:2])

    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        rows = {row.code: row for row in session.scalars(select(Agency))}
        rows[second].webhook_secret_enc = rows[first].webhook_secret_enc
    with unit_of_work(TenantContext(data["id"]), engine=engine) as session:
        moved = session.scalars(select(Agency).where(Agency.code == second)).one()
        with pytest.raises(DecryptionFailed, match="failed authentication"):
            webhook_secrets(session, moved)


def test_dek_rotation_reencrypts_secrets(db_url, make_manifest):
    engine = get_engine(db_url)
    data, tenant_id, code = _onboard_with_secret(engine, make_manifest)
    rotated = _rotate(engine, tenant_id, code)
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        assert rotate_dek(session, tenant_id, actor="test") == 2

    done = reencrypt_tenant(tenant_id, engine=engine, batch_size=1)

    assert done["agencies"] == len(data["agencies"])
    assert _secrets(engine, tenant_id, code) == (rotated, GIVEN_SECRET)
    rows = _raw_agency_rows(engine, tenant_id)
    assert {row["dek_version"] for row in rows} == {2}
    assert {ciphertext_version(bytes(row["webhook_secret_enc"])) for row in rows} == {2}
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        ring = Keyring.load(session, tenant_id)
        assert ring.rows[(KIND_DEK, 1)].retired_at is not None


def test_sealed_export_leaves_out_secrets(db_url, make_manifest, tmp_path):
    engine = get_engine(db_url)
    data = _manifest_with_secret(make_manifest, GIVEN_SECRET)
    _onboard(engine, data)
    ctx = TenantContext(data["id"], actor="test", roles=frozenset({ROLE_ADMIN}))
    private = X25519PrivateKey.generate()
    path = tmp_path / "records.sealed"

    with unit_of_work(ctx, engine=engine) as session:
        counts = write_sealed_export(session, ctx, private.public_key(), path)

    document = open_sealed(private, path.read_bytes())
    assert "agencies" not in counts
    assert "agencies" not in json.loads(document)["tables"]
    assert GIVEN_SECRET.encode() not in document


def test_offboarding_shreds_secrets(db_url, make_manifest, tmp_path):
    engine = get_engine(db_url)
    data, tenant_id, code = _onboard_with_secret(engine, make_manifest)
    _rotate(engine, tenant_id, code)
    private = X25519PrivateKey.generate()

    result = offboard(
        tenant_id,
        export_dir=tmp_path / "out",
        public_key=private.public_key().public_bytes_raw(),
        shred=True,
        actor="test",
        engine=engine,
    )

    assert result["shredded"] is True
    assert "agencies" not in result["rows"]
    ctx = TenantContext(tenant_id)
    with unit_of_work(ctx, engine=engine) as session:
        listed = list_agencies(session, ctx)
        agency = session.scalars(select(Agency).where(Agency.code == code)).one()
        with pytest.raises(NotFound, match="crypto-shredded"):
            webhook_secrets(session, agency)
    assert len(listed) == len(data["agencies"])
    assert all(item.webhook_secret_set for item in listed)


def test_manifest_secret_kept_after_rotation(db_url, make_manifest, monkeypatch):
    engine = get_engine(db_url)
    data, tenant_id, code = _onboard_with_secret(engine, make_manifest)
    rotated = _rotate(engine, tenant_id, code)
    edited = copy.deepcopy(data)
    edited["name"] = data["name"] + " (edited)"

    with structlog.testing.capture_logs() as logs:
        # An earlier test may have cached the module's logger with its own configuration, and
        # a cached logger does not see capture_logs.
        monkeypatch.setattr(onboarding, "log", structlog.get_logger(onboarding.__name__))
        result = _onboard(engine, edited)

    assert result.outcome == "updated"
    assert result.replaced_manifest_secrets == (code,)
    assert _secrets(engine, tenant_id, code) == (rotated, GIVEN_SECRET)
    warnings = [entry for entry in logs if entry["event"] == "manifest_webhook_secret_replaced"]
    assert [entry["agency"] for entry in warnings] == [code]
    assert warnings[0]["log_level"] == "warning"
    assert "remove the agency's webhook_secret line" in warnings[0]["fix"]
    assert GIVEN_SECRET not in json.dumps(logs, default=str)


def test_unchanged_manifest_warns_after_rotation(db_url, make_manifest):
    engine = get_engine(db_url)
    data, tenant_id, code = _onboard_with_secret(engine, make_manifest)
    rotated = _rotate(engine, tenant_id, code)

    result = _onboard(engine, data)

    assert result.outcome == "unchanged"
    assert result.replaced_manifest_secrets == (code,)
    assert _secrets(engine, tenant_id, code) == (rotated, GIVEN_SECRET)


def test_new_manifest_secret_applied_after_rotation(db_url, make_manifest):
    engine = get_engine(db_url)
    data, tenant_id, code = _onboard_with_secret(engine, make_manifest)
    rotated = _rotate(engine, tenant_id, code)
    changed = copy.deepcopy(data)
    changed["agencies"][0]["webhook_secret"] = NEW_SECRET

    result = _onboard(engine, changed)

    assert result.replaced_manifest_secrets == ()
    assert _secrets(engine, tenant_id, code) == (NEW_SECRET, GIVEN_SECRET)
    assert rotated != NEW_SECRET
    # The new secret is now the one onboarding applied last, so a rotation after it makes the
    # same manifest a leftover in turn.
    _rotate(engine, tenant_id, code)
    changed["name"] = data["name"] + " (edited)"
    assert _onboard(engine, changed).replaced_manifest_secrets == (code,)


def test_manifest_secret_without_rotation_applied(db_url, make_manifest):
    engine = get_engine(db_url)
    data, tenant_id, code = _onboard_with_secret(engine, make_manifest)
    edited = copy.deepcopy(data)
    edited["name"] = data["name"] + " (edited)"

    result = _onboard(engine, edited)

    assert result.replaced_manifest_secrets == ()
    assert _secrets(engine, tenant_id, code) == (GIVEN_SECRET, None)


def test_manifest_digest_is_keyed(db_url, make_manifest):
    engine = get_engine(db_url)
    data = _manifest_with_secret(make_manifest, GIVEN_SECRET)
    data["agencies"][1]["webhook_secret"] = GIVEN_SECRET
    _onboard(engine, data)

    rows = _raw_agency_rows(engine, data["id"])
    digests = [row["manifest_secret_digest"] for row in rows[:2]]

    assert all(digests)
    # Bound to the agency: the same secret gives each agency its own digest.
    assert digests[0] != digests[1]
    assert GIVEN_SECRET not in json.dumps(rows, default=str)
    assert rows[2]["manifest_secret_digest"] is None


def test_manifest_hash_is_keyed(db_url, make_manifest):
    engine = get_engine(db_url)
    data, tenant_id, _code = _onboard_with_secret(engine, make_manifest)
    canonical = json.dumps(
        parse_manifest(data).model_dump(mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )

    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        stored = session.get(Tenant, tenant_id).manifest_hash

    # A plain SHA-256 of the manifest, whose other fields the tenants table stores, would let
    # a database dump test guesses of the webhook secret.
    assert stored != hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert len(stored) == 64
    assert _onboard(engine, data).outcome == "unchanged"
