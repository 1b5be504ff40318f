"""The audited decryption path: auditors are rejected and every call leaves one audit entry,
rejected and failed calls included."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

import privacy.export  # noqa: F401 - declares the export purposes the tests decrypt for
from hub.core.db import unit_of_work
from hub.core.errors import Forbidden, InvalidInput
from hub.core.tenancy import TenantContext
from privacy.access import OTHER_PURPOSE, check_caller, decrypt_fields, decrypt_rows
from privacy.audit import subject_hmac
from privacy.fields import DecryptionFailed, FieldCipher
from privacy.models import AuditEntry
from privacy.purposes import declare_purpose, staff_purposes

TABLE = "service_requests"


def sealed_row(engine, tenant, row_id):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant)
        return {
            "email_enc": cipher.encrypt(TABLE, "email_enc", row_id, "resident@example.org"),
            "phone_enc": cipher.encrypt(TABLE, "phone_enc", row_id, "+12025550123"),
            "address_enc": None,
        }


def decrypt_entries(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant, AuditEntry.action.like("pii.%"))
            .order_by(AuditEntry.seq)
        ).all()


def test_staff_decrypts_with_purpose(engine, tenant, staff):
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(staff, engine=engine) as session:
        plain = decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.request_view")
    assert plain["email_enc"] == "resident@example.org"
    assert plain["phone_enc"] == "+12025550123"
    assert plain["address_enc"] is None


def test_decryption_writes_one_audit_entry(engine, tenant, staff):
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(staff, engine=engine) as session:
        decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.request_view")
    entries = decrypt_entries(engine, tenant)
    assert len(entries) == 1
    entry = entries[0]
    assert entry.action == "pii.decrypt"
    assert entry.actor == "apikey:1"
    assert entry.details["purpose"] == "staff.request_view"
    assert entry.details["columns"] == ["email_enc", "phone_enc"]
    assert entry.details["roles"] == ["staff"]
    assert len(entry.subject) == 64
    assert "R1" not in entry.subject


def test_auditor_cannot_decrypt(engine, tenant, auditor):
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(auditor, engine=engine) as session:
        with pytest.raises(Forbidden):
            decrypt_fields(session, auditor, TABLE, "R1", blobs, purpose="staff.request_view")
    with unit_of_work(auditor, engine=engine) as session:
        with pytest.raises(Forbidden):
            decrypt_rows(session, auditor, TABLE, [("R1", blobs)], purpose="export.sealed")

    # Each rejection is audited after the caller's transaction rolled back, and nothing was
    # decrypted.
    entries = decrypt_entries(engine, tenant)
    assert [entry.action for entry in entries] == ["pii.decrypt_rejected"] * 2
    assert [entry.actor for entry in entries] == ["apikey:2"] * 2
    assert [entry.details["purpose"] for entry in entries] == [
        "staff.request_view",
        "export.sealed",
    ]
    for entry in entries:
        assert entry.details["reason"] == "auditor_no_decrypt"
        assert entry.details["roles"] == ["auditor", "staff"]
    assert entries[0].subject == _subject(engine, tenant, f"{TABLE}:R1")
    assert entries[1].subject == _subject(engine, tenant, f"{TABLE}:batch")


def _subject(engine, tenant, subject: str) -> str:
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return subject_hmac(session, tenant, subject)


def _altered(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 1])


def test_failed_decryption_is_audited(engine, tenant, staff):
    blobs = sealed_row(engine, tenant, "R1")
    blobs["email_enc"] = _altered(blobs["email_enc"])
    with pytest.raises(DecryptionFailed):
        with unit_of_work(staff, engine=engine) as session:
            decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.request_view")

    [entry] = decrypt_entries(engine, tenant)
    assert entry.action == "pii.decrypt_rejected"
    assert entry.actor == "apikey:1"
    assert entry.details["reason"] == "decryption_failed"
    assert entry.subject == _subject(engine, tenant, f"{TABLE}:R1")


def test_failed_batch_names_the_row(engine, tenant, staff):
    good = sealed_row(engine, tenant, "R1")
    bad = sealed_row(engine, tenant, "R2")
    bad["phone_enc"] = _altered(bad["phone_enc"])
    with pytest.raises(DecryptionFailed):
        with unit_of_work(staff, engine=engine) as session:
            decrypt_rows(
                session, staff, TABLE, [("R1", good), ("R2", bad)], purpose="export.sealed"
            )

    [entry] = decrypt_entries(engine, tenant)
    assert entry.details["reason"] == "decryption_failed"
    assert entry.details["rows"] == 2
    assert entry.subject == _subject(engine, tenant, f"{TABLE}:R2")


def test_rejection_audited_after_commit(engine, tenant, auditor):
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(auditor, engine=engine) as session:
        with pytest.raises(Forbidden):
            decrypt_fields(session, auditor, TABLE, "R1", blobs, purpose="staff.request_view")
        # The caller goes on and commits its transaction.

    [entry] = decrypt_entries(engine, tenant)
    assert entry.action == "pii.decrypt_rejected"
    assert entry.details["reason"] == "auditor_no_decrypt"


def test_purpose_must_be_a_code(engine, tenant, staff):
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(staff, engine=engine) as session:
        with pytest.raises(InvalidInput):
            decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="Looked at it")


def test_batch_writes_one_entry(engine, tenant, staff):
    rows = [(f"R{i}", sealed_row(engine, tenant, f"R{i}")) for i in range(3)]
    with unit_of_work(staff, engine=engine) as session:
        plain = decrypt_rows(session, staff, TABLE, rows, purpose="export.sealed")
    assert [p["email_enc"] for p in plain] == ["resident@example.org"] * 3
    entries = decrypt_entries(engine, tenant)
    assert len(entries) == 1
    assert entries[0].action == "pii.decrypt_batch"
    assert entries[0].details["rows"] == 3


def test_other_tenant_context_cannot_decrypt(engine, tenant, other_tenant):
    blobs = sealed_row(engine, tenant, "R1")
    intruder = TenantContext(other_tenant, actor="apikey:9", roles=frozenset({"staff"}))
    with unit_of_work(intruder, engine=engine) as session:
        with pytest.raises(Exception, match="failed authentication"):
            decrypt_fields(session, intruder, TABLE, "R1", blobs, purpose="staff.request_view")


def _decryptions(purpose: str, outcome: str = "ok") -> float:
    value = REGISTRY.get_sample_value(
        "hub_privacy_decryptions_total", {"table": TABLE, "purpose": purpose, "outcome": outcome}
    )
    return value or 0.0


def test_manifest_only_purpose_counts_as_other(engine, tenant, staff, declare_staff):
    blobs = sealed_row(engine, tenant, "R1")
    declared = declare_purpose("test.declared_view", "A hub purpose that this test declares.")
    declare_staff(engine, tenant, ["staff.my_own_reason"])
    before = {label: _decryptions(label) for label in (declared, OTHER_PURPOSE)}

    with unit_of_work(staff, engine=engine) as session:
        decrypt_fields(session, staff, TABLE, "R1", blobs, purpose=declared)
        decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.my_own_reason")

    assert _decryptions(declared) - before[declared] == 1
    assert _decryptions(OTHER_PURPOSE) - before[OTHER_PURPOSE] == 1
    assert _decryptions("staff.my_own_reason") == 0
    # The audit entries keep each purpose as given.
    purposes = [entry.details["purpose"] for entry in decrypt_entries(engine, tenant)]
    assert purposes[-2:] == [declared, "staff.my_own_reason"]


def test_default_purposes_when_manifest_declares_none(engine, tenant, staff, declare_staff):
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(staff, engine=engine) as session:
        defaults = staff_purposes(session, tenant)
    assert [(p.code, p.declared_by) for p in defaults] == [("staff.request_view", "default")]
    assert defaults[0].description

    # An empty list declares none as well.
    declare_staff(engine, tenant, [])
    with unit_of_work(staff, engine=engine) as session:
        assert [p.code for p in staff_purposes(session, tenant)] == ["staff.request_view"]
        plain = decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.request_view")
    assert plain["email_enc"] == "resident@example.org"


def test_undeclared_purpose_is_rejected_and_audited(engine, tenant, staff, declare_staff):
    blobs = sealed_row(engine, tenant, "R1")
    declare_staff(engine, tenant, ["staff.callback", "staff.records"])
    labels = ("staff.request_view", OTHER_PURPOSE)
    before = {label: _decryptions(label, "forbidden") for label in labels}
    with unit_of_work(staff, engine=engine) as session:
        with pytest.raises(InvalidInput) as raised:
            decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.request_view")
        with pytest.raises(InvalidInput):
            decrypt_rows(session, staff, TABLE, [("R1", blobs)], purpose="staff.curious")

    error = raised.value
    assert error.code == "undeclared_purpose"
    assert error.status == 400
    assert "'staff.request_view' is not declared" in error.message
    assert "staff.callback, staff.records" in error.message
    assert "privacy.decryption_purposes" in error.message

    entries = decrypt_entries(engine, tenant)
    assert [entry.action for entry in entries] == ["pii.decrypt_rejected"] * 2
    assert [entry.details["purpose"] for entry in entries] == [
        "staff.request_view",
        "staff.curious",
    ]
    assert [entry.details["reason"] for entry in entries] == ["undeclared_purpose"] * 2
    # The metric names a default staff purpose and counts any other as "other".
    for label in labels:
        assert _decryptions(label, "forbidden") - before[label] == 1


def test_declared_staff_purpose_is_accepted(engine, tenant, staff, declare_staff):
    blobs = sealed_row(engine, tenant, "R1")
    declare_staff(engine, tenant, ["staff.callback"])
    with unit_of_work(staff, engine=engine) as session:
        plain = decrypt_fields(session, staff, TABLE, "R1", blobs, purpose="staff.callback")
    assert plain["phone_enc"] == "+12025550123"
    [entry] = decrypt_entries(engine, tenant)
    assert entry.action == "pii.decrypt"
    assert entry.details["purpose"] == "staff.callback"


def test_hub_purpose_holds_for_any_manifest(engine, tenant, staff, declare_staff):
    blobs = sealed_row(engine, tenant, "R1")
    declare_staff(engine, tenant, ["staff.callback"])
    with unit_of_work(staff, engine=engine) as session:
        plain = decrypt_rows(session, staff, TABLE, [("R1", blobs)], purpose="export.sealed")
    assert plain[0]["email_enc"] == "resident@example.org"


def test_staff_cannot_give_a_hub_purpose(engine, tenant, staff, declare_staff):
    """A purpose a person names must be a staff purpose, even when the hub's code uses it."""
    declare_staff(engine, tenant, ["staff.callback"])
    with unit_of_work(staff, engine=engine) as session:
        with pytest.raises(InvalidInput) as raised:
            check_caller(session, staff, TABLE, "R1", purpose="export.sealed")
    assert raised.value.code == "undeclared_purpose"
    assert "'export.sealed' is one the hub uses for its own work" in raised.value.message
    assert "staff.callback" in raised.value.message
    [entry] = decrypt_entries(engine, tenant)
    assert entry.action == "pii.decrypt_rejected"
    assert entry.details["reason"] == "undeclared_purpose"

    # A manifest that lists the code for staff allows it.
    declare_staff(engine, tenant, ["staff.callback", "export.sealed"])
    with unit_of_work(staff, engine=engine) as session:
        check_caller(session, staff, TABLE, "R1", purpose="export.sealed")


def test_rejection_audited_after_outer_transaction(engine, tenant, auditor):
    """A savepoint's end inside the caller's transaction does not write the entry yet."""
    blobs = sealed_row(engine, tenant, "R1")
    with unit_of_work(auditor, engine=engine) as session:
        with pytest.raises(Forbidden):
            decrypt_fields(session, auditor, TABLE, "R1", blobs, purpose="staff.request_view")
        with session.begin_nested():
            pass
        written_before_end = decrypt_entries(engine, tenant)

    assert written_before_end == []
    [entry] = decrypt_entries(engine, tenant)
    assert entry.action == "pii.decrypt_rejected"
