"""The privacy report scans stored rows and fails each control on real evidence."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select, update

from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.errors import Forbidden, InvalidInput
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import ServiceRequest
from privacy.access import decrypt_fields
from privacy.audit import audit
from privacy.export import open_data_export, write_sealed_export
from privacy.open_data import record_export, write_export
from privacy.report import build_report, render_markdown
from privacy.shred import open_sealed
from privacy.tasks import run_retention_purge


def report(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return build_report(session, tenant)


def control(result, control_id):
    return next(c for c in result["controls"] if c["id"] == control_id)


def test_clean_tenant_passes(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 3)
    result = report(engine, tenant)
    assert result["passed"], json.dumps(result, default=str)
    coverage = control(result, "encryption_coverage")["evidence"]
    assert coverage["stored_values"] == 15
    assert coverage["share"] == 1.0
    assert "| Personal-data fields are stored encrypted | pass |" in render_markdown(result)


def test_coverage_scans_address_id(engine, tenant, seed_requests):
    seed_requests(engine, tenant, 1)
    coverage = control(report(engine, tenant), "encryption_coverage")["evidence"]
    scanned = {(item["table"], item["column"]) for item in coverage["columns"]}
    assert ("service_requests", "address_id_enc") in scanned
    assert ("service_requests", "address_enc") in scanned


def test_plaintext_in_cipher_column_fails(engine, tenant, seed_requests):
    ids = seed_requests(engine, tenant, 2)
    with unit_of_work(SystemContext("test tamper"), engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == ids[0])
            .values(email_enc=b"resident@example.org")
        )
    coverage = control(report(engine, tenant), "encryption_coverage")
    assert not coverage["passed"]
    assert coverage["evidence"]["stored_values"] - coverage["evidence"]["encrypted_values"] == 1


def test_retention_fails_then_purge_passes(engine, tenant, seed_requests, close_expired):
    ids = seed_requests(engine, tenant, 2)
    close_expired(engine, tenant, ids[0])
    retention = control(report(engine, tenant), "retention")
    assert not retention["passed"]
    assert retention["evidence"]["rows_past_retention"]["service_requests"] == 1
    assert run_retention_purge(tenant, engine=engine)["service_requests"] == 1
    assert run_retention_purge(tenant, engine=engine)["service_requests"] == 0
    assert control(report(engine, tenant), "retention")["passed"]
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        purged = session.get(ServiceRequest, ids[0])
        kept = session.get(ServiceRequest, ids[1])
    assert purged.email_enc is None
    assert purged.dek_version is None
    assert kept.email_enc is not None


def test_export_recorded_with_k(engine, tenant, seed_requests, tmp_path):
    seed_requests(engine, tenant, 6)
    ctx = TenantContext(tenant, actor="cli:operator", roles=frozenset({"tenant_admin"}))
    with unit_of_work(ctx, engine=engine) as session:
        export = open_data_export(session, ctx, free_text="redacted")
        files = write_export(export, tmp_path / "open.geojson", "geojson")
        record_export(session, tenant, actor=ctx.actor, export=export, fmt="geojson", files=files)
    document = json.loads(files[0].read_text())
    assert document["metadata"]["k"] == 5
    assert len(document["features"]) == 6
    assert "resident" not in files[0].read_text()
    exports = control(report(engine, tenant), "open_data_k_anonymity")
    assert exports["passed"]
    assert exports["evidence"]["exports"][0]["k"] == 5
    # The evidence ties the report line to the files the auditor received.
    listed = exports["evidence"]["exports"][0]
    assert listed["free_text"] == "redacted"
    assert listed["files"] == ["open.geojson", "open.geojson.meta.json"]
    assert listed["sha256"] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    decryptions = control(report(engine, tenant), "decryption_audit")["evidence"]
    assert decryptions["by_role_and_purpose"] == [
        {"roles": "tenant_admin", "purpose": "export.open_data_redaction", "count": 1}
    ]
    assert decryptions["rejected"] == 0


def test_export_ids_pseudonymous_by_default(engine, tenant, seed_requests):
    seeded = set(seed_requests(engine, tenant, 6))
    ctx = TenantContext(tenant, actor="cli:operator", roles=frozenset({"tenant_admin"}))
    with unit_of_work(ctx, engine=engine) as session:
        export = open_data_export(session, ctx)
        record_export(session, tenant, actor=ctx.actor, export=export, fmt="csv", files=[])
        with_open311_ids = open_data_export(session, ctx, ids="open311")
    published = {record["id"] for record in export.records}
    assert len(published) == 6
    assert not published & seeded
    assert {record["id"] for record in with_open311_ids.records} == seeded

    exports = control(report(engine, tenant), "open_data_k_anonymity")
    assert exports["passed"]
    assert "not the live Open311 API" in exports["title"]
    assert "live Open311 API" in exports["evidence"]["covers"]
    assert exports["evidence"]["exports"][0]["ids"] == "pseudonymous"
    assert exports["evidence"]["with_open311_ids"] == 0


def test_rejected_decryptions_in_evidence(engine, tenant, auditor):
    blobs = {"email_enc": None}
    with unit_of_work(auditor, engine=engine) as session:
        with pytest.raises(Forbidden):
            decrypt_fields(session, auditor, "service_requests", "R1", blobs, purpose="audit.look")

    decryptions = control(report(engine, tenant), "decryption_audit")
    # The auditor's attempt decrypted nothing, so the control holds.
    assert decryptions["passed"]
    assert decryptions["evidence"]["decryptions"] == 0
    assert decryptions["evidence"]["by_auditor"] == 0
    assert decryptions["evidence"]["rejected"] == 1
    assert decryptions["evidence"]["rejected_by_role_and_reason"] == [
        {"roles": "auditor,staff", "reason": "auditor_no_decrypt", "count": 1}
    ]


def test_sealed_export_opens_with_tenant_key(engine, tenant, seed_requests, tmp_path):
    seed_requests(engine, tenant, 3)
    private = X25519PrivateKey.generate()
    ctx = TenantContext(tenant, actor="cli:operator", roles=frozenset({"tenant_admin"}))
    path = tmp_path / "records.sealed"
    with unit_of_work(ctx, engine=engine) as session:
        counts = write_sealed_export(session, ctx, private.public_key(), path)
    assert {name: n for name, n in counts.items() if n} == {
        "service_requests": 3,
        "status_events": 3,
    }
    assert b"resident" not in path.read_bytes()
    document = json.loads(open_sealed(private, path.read_bytes()))
    emails = sorted(r["email"] for r in document["tables"]["service_requests"])
    assert emails == ["resident0@example.org", "resident1@example.org", "resident2@example.org"]
    assert document["tables"]["status_events"][0]["note"] == "noted"


def test_report_of_other_tenant_sees_no_rows(engine, tenant, other_tenant, seed_requests):
    seed_requests(engine, tenant, 2)
    with unit_of_work(TenantContext(other_tenant), engine=engine) as session:
        rows = session.scalars(select(ServiceRequest)).all()
        result = build_report(session, other_tenant)
    assert rows == []
    assert control(result, "encryption_coverage")["evidence"]["stored_values"] == 0


def test_purpose_evidence_flags_undeclared_use(
    engine, tenant, staff, declare_staff, seed_requests, tmp_path
):
    seed_requests(engine, tenant, 1)
    declare_staff(engine, tenant, ["staff.callback"])
    blobs = {"email_enc": None}
    with unit_of_work(staff, engine=engine) as session:
        decrypt_fields(session, staff, "service_requests", "R1", blobs, purpose="staff.callback")
        decrypt_fields(session, staff, "service_requests", "R2", blobs, purpose="staff.callback")
        # An entry written before purposes were checked, whose purpose no one declares.
        audit(
            session,
            tenant_id=tenant,
            actor="apikey:1",
            action="pii.decrypt",
            subject="service_requests:R3",
            details={"purpose": "staff.free_text", "table": "service_requests", "roles": []},
        )
    with unit_of_work(staff, engine=engine) as session:
        with pytest.raises(InvalidInput):
            decrypt_fields(session, staff, "service_requests", "R1", blobs, purpose="staff.nosy")
    with unit_of_work(staff, engine=engine) as session:
        write_sealed_export(
            session, staff, X25519PrivateKey.generate().public_key(), tmp_path / "sealed.bin"
        )

    result = report(engine, tenant)
    purposes = control(result, "purpose_limitation")
    evidence = purposes["evidence"]

    assert not purposes["passed"]
    assert not result["passed"]
    declared = {item["code"]: item for item in evidence["declared_purposes"]}
    assert declared["staff.callback"] == {
        "code": "staff.callback",
        "declared_by": "manifest",
        "description": "Test purpose staff.callback.",
    }
    assert declared["export.sealed"]["declared_by"] == "hub"
    assert declared["export.sealed"]["description"]
    # The manifest's own list replaces the default staff purposes.
    assert "staff.request_view" not in declared
    by_purpose = {item["purpose"]: item for item in evidence["decryptions_by_purpose"]}
    assert by_purpose["staff.callback"] == {
        "purpose": "staff.callback",
        "count": 2,
        "declared": True,
    }
    assert by_purpose["staff.free_text"] == {
        "purpose": "staff.free_text",
        "count": 1,
        "declared": False,
    }
    assert by_purpose["export.sealed"]["declared"] is True
    assert "staff.nosy" not in by_purpose
    assert evidence["undeclared_purposes_used"] == ["staff.free_text"]
    assert evidence["rejected_for_undeclared_purpose"] == 1
    assert evidence["period"]["from"] is not None
    assert evidence["period"]["to"] == result["generated_at"]

    markdown = render_markdown(result)
    title = "Every decryption was for a purpose that the hub or the tenant declares"
    assert f"| {title} | FAIL |" in markdown
    assert "- undeclared_purposes_used:\n  - staff.free_text" in markdown
    assert "code: staff.callback, declared_by: manifest" in markdown


def test_purpose_evidence_lists_defaults(engine, tenant, staff):
    blobs = {"email_enc": None}
    with unit_of_work(staff, engine=engine) as session:
        decrypt_fields(
            session, staff, "service_requests", "R1", blobs, purpose="staff.request_view"
        )

    purposes = control(report(engine, tenant), "purpose_limitation")

    assert purposes["passed"]
    declared = {item["code"]: item for item in purposes["evidence"]["declared_purposes"]}
    assert declared["staff.request_view"]["declared_by"] == "default"
    assert purposes["evidence"]["decryptions_by_purpose"] == [
        {"purpose": "staff.request_view", "count": 1, "declared": True}
    ]
    assert purposes["evidence"]["undeclared_purposes_used"] == []


def _resign_with(engine, tenant, private_key):
    """Rebuild the tenant's signed checkpoints and head under `private_key`, as a database
    writer with a key of their own could."""
    from privacy.audit import checkpoint_chain, checkpoint_message
    from privacy.models import AuditCheckpoint, AuditHead

    with unit_of_work(SystemContext("test"), engine=engine) as session:
        checkpoint_chain(session, tenant)
    public = private_key.public_key().public_bytes_raw().hex()
    with unit_of_work(SystemContext("test forger"), engine=engine) as session:
        rows = session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.chain == tenant))
        for row in [*rows, session.get(AuditHead, tenant)]:
            row.public_key = public
            row.signature = private_key.sign(checkpoint_message(tenant, row.seq, row.hash)).hex()


def test_audit_chain_signed_by_foreign_key_fails(engine, tenant, seed_requests):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed_requests(engine, tenant, 1)
    _resign_with(engine, tenant, Ed25519PrivateKey.generate())

    chain = control(report(engine, tenant), "audit_chain")

    assert not chain["passed"]
    kinds = {problem["kind"] for problem in chain["evidence"]["problems"]}
    assert "unknown_signer" in kinds


def test_audit_chain_trusts_keys_before_root_rotation(engine, tenant, seed_requests):
    from privacy.audit import checkpoint_chain, public_key_hex
    from privacy.keys import forget_key_provider
    from privacy.rotation import rotate_root

    seed_requests(engine, tenant, 1)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        checkpoint_chain(session, tenant)
    before = public_key_hex()

    rotate_root(engine=engine, actor="test", new_derived_keys=True)
    forget_key_provider()

    chain = control(report(engine, tenant), "audit_chain")
    assert chain["passed"], json.dumps(chain, default=str)
    assert before in chain["evidence"]["trusted_keys"]
    assert public_key_hex() in chain["evidence"]["trusted_keys"]


def _append_forged_rotation(engine, public_key):
    """Append a correctly linked `keys.rotate_root` entry naming `public_key` to the hub
    chain, as a database writer can: the hash chain has no secret, only the signed
    checkpoints do."""
    from privacy.audit import HUB_CHAIN, canonical_record, chain_head, hash_record
    from privacy.models import AuditEntry

    with unit_of_work(SystemContext("test forger"), engine=engine) as session:
        seq, prev_hash = chain_head(session, HUB_CHAIN)
        fields = {
            "chain": HUB_CHAIN,
            "seq": seq + 1,
            "tenant_id": None,
            "at": utcnow(),
            "actor": "cli:operator",
            "action": "keys.rotate_root",
            "subject": None,
            "details": {"audit_public_key": public_key},
            "prev_hash": prev_hash,
        }
        session.add(AuditEntry(**fields, hash=hash_record(canonical_record(**fields))))


def test_audit_chain_forged_rotation_key_fails(engine, tenant, seed_requests):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed_requests(engine, tenant, 1)
    forger = Ed25519PrivateKey.generate()
    forged_public = forger.public_key().public_bytes_raw().hex()
    _append_forged_rotation(engine, forged_public)
    _resign_with(engine, tenant, forger)

    chain = control(report(engine, tenant), "audit_chain")

    assert forged_public not in chain["evidence"]["trusted_keys"]
    assert not chain["passed"]
