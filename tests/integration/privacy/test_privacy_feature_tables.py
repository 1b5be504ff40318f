"""Alert channel addresses and overflow contacts under DEK rotation, the coverage scan,
retention and the sealed export, like the service requests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select, update

from failover.models import CONTACTS_TABLE, Contact
from hub.alerts.models import SubscriberChannel
from hub.alerts.subscriptions import (
    ADDRESS_COLUMN,
    ADDRESS_TABLE,
    SubscriptionInput,
    channel_address_id,
    subscribe,
)
from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext
from privacy.export import write_sealed_export
from privacy.fields import FieldCipher, ciphertext_version, decrypt_value
from privacy.registry import encrypted_tables
from privacy.report import encryption_coverage
from privacy.retention import expired_rows, purge_expired
from privacy.rotation import reencrypt_tenant, rotate_dek, rows_per_version
from privacy.shred import open_sealed

EMAIL = "channel.owner@example.org"
PHONE = "+16175550166"
CONTACT_COLUMNS = ("caller_name_enc", "phone_enc", "address_enc", "summary_enc")


def add_subscriber(engine, tenant):
    ctx = TenantContext(tenant, actor="apikey:1", roles=frozenset({"staff"}))
    data = SubscriptionInput(
        places=[(42.3601, -71.0589)],
        languages=["en"],
        channels={"email": EMAIL, "sms": PHONE},
        consent_at=datetime(2026, 1, 5, tzinfo=UTC),
    )
    with unit_of_work(ctx, engine=engine) as session:
        subscriber_id, _token = subscribe(session, ctx, data)
    return subscriber_id


def add_contact(engine, tenant, *, finished_at=None):
    contact_id = str(uuid.uuid4())
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant)
        plain = {
            "caller_name_enc": "Orla Contactson",
            "phone_enc": PHONE,
            "address_enc": "12 Overflow Street",
            "summary_enc": "streetlight out",
        }
        session.add(
            Contact(
                id=contact_id,
                tenant_id=tenant,
                channel="voice",
                language="en",
                service_group="streets",
                state="completed" if finished_at else "waiting",
                decision_id=str(uuid.uuid4()),
                decision_reason="home",
                arrived_at=datetime(2024, 1, 1, tzinfo=UTC),
                finished_at=finished_at,
                dek_version=cipher.dek_version,
                **{
                    name: cipher.encrypt(CONTACTS_TABLE, name, contact_id, value)
                    for name, value in plain.items()
                },
            )
        )
    return contact_id


def channel_plaintexts(engine, tenant):
    """Map each channel to (address, DEK version of its ciphertext, stored dek_version)."""
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        out = {}
        for row in session.scalars(select(SubscriberChannel)):
            row_id = channel_address_id(row.subscriber_id, row.channel)
            address = decrypt_value(
                session, tenant, ADDRESS_TABLE, ADDRESS_COLUMN, row_id, row.address_enc
            )
            out[row.channel] = (address, ciphertext_version(row.address_enc), row.dek_version)
        return out


def contact_plaintexts(engine, tenant, contact_id):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        row = session.get(Contact, contact_id)
        values = {
            name: decrypt_value(
                session, tenant, CONTACTS_TABLE, name, contact_id, getattr(row, name)
            )
            for name in CONTACT_COLUMNS
        }
        versions = {ciphertext_version(getattr(row, name)) for name in CONTACT_COLUMNS}
        return values, versions, row.dek_version


def test_feature_tables_are_registered():
    names = {entry.table for entry in encrypted_tables()}
    assert "alert_subscriber_channels" in names
    assert "overflow_contacts" in names


def test_subscribe_records_dek_version(engine, tenant):
    add_subscriber(engine, tenant)
    channels = channel_plaintexts(engine, tenant)
    assert channels["email"] == (EMAIL, 1, 1)
    assert channels["sms"] == (PHONE, 1, 1)


def test_rotation_reencrypts_channels_and_contacts(engine, tenant):
    add_subscriber(engine, tenant)
    contact_id = add_contact(engine, tenant)
    before, _, _ = contact_plaintexts(engine, tenant, contact_id)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert rotate_dek(session, tenant, actor="test") == 2

    done = reencrypt_tenant(tenant, engine=engine, batch_size=1)

    assert done["alert_subscriber_channels"] == 2
    assert done["overflow_contacts"] == 1
    channels = channel_plaintexts(engine, tenant)
    assert channels["email"] == (EMAIL, 2, 2)
    assert channels["sms"] == (PHONE, 2, 2)
    after, versions, stored_version = contact_plaintexts(engine, tenant, contact_id)
    assert after == before
    assert versions == {2}
    assert stored_version == 2
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert rows_per_version(session, tenant) == {2: 3}


def test_coverage_scan_counts_feature_tables(engine, tenant):
    add_subscriber(engine, tenant)
    add_contact(engine, tenant)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        control = encryption_coverage(session, tenant)
    columns = {(c["table"], c["column"]): c for c in control["evidence"]["columns"]}
    assert columns[("alert_subscriber_channels", "address_enc")]["stored"] == 2
    assert columns[("alert_subscriber_channels", "address_enc")]["encrypted"] == 2
    for name in CONTACT_COLUMNS:
        assert columns[("overflow_contacts", name)]["encrypted"] == 1
    assert control["passed"]


def test_coverage_scan_flags_plaintext_contact(engine, tenant):
    contact_id = add_contact(engine, tenant)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        session.execute(
            update(Contact).where(Contact.id == contact_id).values(phone_enc=PHONE.encode())
        )
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        control = encryption_coverage(session, tenant)
    assert not control["passed"]
    columns = {(c["table"], c["column"]): c for c in control["evidence"]["columns"]}
    assert columns[("overflow_contacts", "phone_enc")]["encrypted"] == 0


def test_retention_purges_finished_contacts(engine, tenant):
    old = add_contact(engine, tenant, finished_at=datetime(2020, 1, 1, tzinfo=UTC))
    open_contact = add_contact(engine, tenant)
    recent = add_contact(engine, tenant, finished_at=datetime.now(UTC) - timedelta(days=1))
    days = {"personal_data": 730}
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert expired_rows(session, tenant, days)["overflow_contacts"] == 1
        purged = purge_expired(session, tenant, days, actor="test")
    assert purged["overflow_contacts"] == 1
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        assert session.get(Contact, old).phone_enc is None
        assert session.get(Contact, old).dek_version is None
        assert session.get(Contact, open_contact).phone_enc is not None
        assert session.get(Contact, recent).phone_enc is not None


def test_sealed_export_contains_channel_addresses(engine, tenant, tmp_path):
    add_subscriber(engine, tenant)
    private = X25519PrivateKey.generate()
    ctx = TenantContext(tenant, actor="cli:operator", roles=frozenset({"tenant_admin"}))
    path = tmp_path / "records.sealed"
    with unit_of_work(ctx, engine=engine) as session:
        counts = write_sealed_export(session, ctx, private.public_key(), path)
    assert counts["alert_subscriber_channels"] == 2
    document = json.loads(open_sealed(private, path.read_bytes()))
    addresses = sorted(r["address"] for r in document["tables"]["alert_subscriber_channels"])
    assert addresses == sorted([EMAIL, PHONE])


def test_other_tenant_rows_not_reencrypted(engine, tenant, other_tenant):
    add_subscriber(engine, other_tenant)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        rotate_dek(session, tenant, actor="test")
    done = reencrypt_tenant(tenant, engine=engine)
    assert done["alert_subscriber_channels"] == 0
    channels = channel_plaintexts(engine, other_tenant)
    assert channels["email"] == (EMAIL, 1, 1)
