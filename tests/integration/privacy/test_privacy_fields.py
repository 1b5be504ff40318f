"""Field encryption binds each ciphertext to its tenant, table, column, row and DEK version."""

from __future__ import annotations

import pytest

from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext
from privacy.fields import DecryptionFailed, FieldCipher, ciphertext_version, decrypt_value
from privacy.keys import Keyring, new_data_key_row
from privacy.models import KIND_DEK

TABLE = "service_requests"


def encrypt(engine, tenant, column, row_id, plaintext):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        cipher = FieldCipher.for_tenant(session, tenant)
        return cipher.encrypt(TABLE, column, row_id, plaintext)


def decrypt(engine, tenant, column, row_id, blob, table=TABLE):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return decrypt_value(session, tenant, table, column, row_id, blob)


def test_round_trip_keeps_unicode(engine, tenant):
    text = "Bache en la calle 5 \U0001f573 cerca de Ñandú"
    blob = encrypt(engine, tenant, "description_enc", "R1", text)
    assert text.encode() not in blob
    assert decrypt(engine, tenant, "description_enc", "R1", blob) == text


def test_none_stays_none(engine, tenant):
    assert encrypt(engine, tenant, "email_enc", "R1", None) is None
    assert decrypt(engine, tenant, "email_enc", "R1", None) is None


def test_same_plaintext_gives_new_ciphertext(engine, tenant):
    first = encrypt(engine, tenant, "email_enc", "R1", "a@example.org")
    second = encrypt(engine, tenant, "email_enc", "R1", "a@example.org")
    assert first != second


def test_ciphertext_records_format_and_version(engine, tenant):
    blob = encrypt(engine, tenant, "phone_enc", "R1", "+12025550123")
    assert blob[0] == 1
    assert ciphertext_version(blob) == 1


def test_every_tampered_byte_fails(engine, tenant):
    blob = encrypt(engine, tenant, "description_enc", "R2", "pothole")
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            decrypt(engine, tenant, "description_enc", "R2", bytes(tampered))


def test_truncated_ciphertext_fails(engine, tenant):
    blob = encrypt(engine, tenant, "description_enc", "R2", "pothole")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, tenant, "description_enc", "R2", blob[:10])


def test_moved_to_another_row_fails(engine, tenant):
    blob = encrypt(engine, tenant, "email_enc", "R3", "a@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, tenant, "email_enc", "R4", blob)


def test_moved_to_another_column_fails(engine, tenant):
    blob = encrypt(engine, tenant, "email_enc", "R3", "a@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, tenant, "phone_enc", "R3", blob)


def test_moved_to_another_table_fails(engine, tenant):
    blob = encrypt(engine, tenant, "note_enc", "7", "called back")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, tenant, "note_enc", "7", blob, table="status_events")


def test_moved_to_another_tenant_fails(engine, tenant, other_tenant):
    blob = encrypt(engine, tenant, "email_enc", "R3", "a@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, other_tenant, "email_enc", "R3", blob)


def add_dek_version(engine, tenant, version):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        ring = Keyring.load(session, tenant)
        session.add(new_data_key_row(ring, KIND_DEK, version))


def test_relabelled_dek_version_fails(engine, tenant):
    blob = encrypt(engine, tenant, "email_enc", "R5", "a@example.org")
    add_dek_version(engine, tenant, 2)
    relabelled = bytearray(blob)
    relabelled[1:5] = (2).to_bytes(4, "big")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, tenant, "email_enc", "R5", bytes(relabelled))


def test_unknown_dek_version_fails(engine, tenant):
    blob = encrypt(engine, tenant, "email_enc", "R5", "a@example.org")
    relabelled = bytearray(blob)
    relabelled[1:5] = (9).to_bytes(4, "big")
    with pytest.raises(DecryptionFailed):
        decrypt(engine, tenant, "email_enc", "R5", bytes(relabelled))


def test_new_primary_dek_and_old_versions_decrypt(engine, tenant):
    old = encrypt(engine, tenant, "email_enc", "R6", "old@example.org")
    add_dek_version(engine, tenant, 2)
    new = encrypt(engine, tenant, "email_enc", "R6", "new@example.org")
    assert ciphertext_version(new) == 2
    assert decrypt(engine, tenant, "email_enc", "R6", old) == "old@example.org"
    assert decrypt(engine, tenant, "email_enc", "R6", new) == "new@example.org"


def test_cipher_of_other_tenant_session_finds_no_keys(engine, tenant, other_tenant):
    with unit_of_work(TenantContext(other_tenant), engine=engine) as session:
        with pytest.raises(Exception, match="no encryption keys"):
            FieldCipher.for_tenant(session, tenant)
