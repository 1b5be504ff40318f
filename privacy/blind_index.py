"""Blind indexes: find a caller's rows by phone or email without decrypting the table, and
other rows by a value their module puts in canonical form (alert subscribers by their channel
addresses).

The index is HMAC-SHA256 under the tenant's index key over the kind and the normalized value,
truncated to 128 bits (32 hex digits). Values are normalized first (E.164 phones, trimmed
lower-case emails), so the same caller matches however the number or address was typed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Literal

import phonenumbers
from sqlalchemy.orm import Session

from hub.core.errors import InvalidInput
from privacy.encoding import length_prefixed
from privacy.keys import Keyring
from privacy.models import KIND_INDEX

IndexKind = Literal["email", "phone"]
INDEX_HEX_DIGITS = 32
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_EMAIL_LENGTH = 254


def normalize_phone(value: str, *, default_region: str = "US") -> str:
    """Return `value` in E.164 form; InvalidInput when it is not a valid phone number.

    The message never repeats the value, because a phone number is personal data.
    """
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(
            "phone number could not be parsed; give digits with an optional leading "
            "+ and country code, such as +12025550123",
            code="invalid_phone",
            field="phone",
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(
            f"phone number is not a valid number for region {default_region}; "
            "give it with its country code, such as +12025550123",
            code="invalid_phone",
            field="phone",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(value: str) -> str:
    """Return `value` trimmed and lower-cased; InvalidInput when it is not an email address."""
    email = value.strip().lower()
    if len(email) > _MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise InvalidInput(
            "email address is invalid; expected one @ and a domain with a dot, "
            f"at most {_MAX_EMAIL_LENGTH} characters",
            code="invalid_email",
            field="email",
        )
    return email


def normalize(kind: IndexKind, value: str, *, default_region: str = "US") -> str:
    if kind == "phone":
        return normalize_phone(value, default_region=default_region)
    if kind == "email":
        return normalize_email(value)
    raise InvalidInput(f"unknown blind index kind {kind!r}; use email or phone", field="kind")


def index_with_key(key: bytes, kind: str, normalized: str) -> str:
    digest = hmac.new(key, length_prefixed("hub-bidx-v1", kind, normalized), hashlib.sha256)
    return digest.hexdigest()[:INDEX_HEX_DIGITS]


def blind_index_normalized(
    session: Session, tenant_id: str, kind: str, normalized: str
) -> tuple[str, int]:
    """Return the blind index of `normalized` under the tenant's primary index key and its
    version. The caller puts the value in canonical form first. Indexes of different `kind`
    differ for the same text."""
    ring = Keyring.for_session(session, tenant_id)
    version = ring.primary_version(KIND_INDEX)
    return index_with_key(ring.key(KIND_INDEX, version), kind, normalized), version


def blind_indexes_normalized(
    session: Session, tenant_id: str, kind: str, normalized: str
) -> dict[int, str]:
    """Return {index version: blind index} of a value already in canonical form, for every
    index key version the tenant has. Reads the keys once per session, for bulk lookups."""
    return _indexes_by_version(Keyring.for_session(session, tenant_id), kind, normalized)


def _indexes_by_version(ring: Keyring, kind: str, normalized: str) -> dict[int, str]:
    return {
        version: index_with_key(ring.key(KIND_INDEX, version), kind, normalized)
        for version in ring.versions(KIND_INDEX)
    }


def blind_index(
    session: Session,
    tenant_id: str,
    kind: IndexKind,
    value: str | None,
    *,
    default_region: str = "US",
) -> tuple[str | None, int]:
    """Return the blind index of `value` under the tenant's primary index key and its version.

    None gives (None, version). Raises InvalidInput when the value does not normalize.
    """
    if value is None:
        return None, Keyring.for_session(session, tenant_id).primary_version(KIND_INDEX)
    normalized = normalize(kind, value, default_region=default_region)
    return blind_index_normalized(session, tenant_id, kind, normalized)


def blind_indexes_all_versions(
    session: Session,
    tenant_id: str,
    kind: IndexKind,
    value: str,
    *,
    default_region: str = "US",
) -> dict[int, str]:
    """Return {index version: blind index} for every index key version the tenant has.

    A lookup during index-key rotation matches rows indexed under any version.
    """
    normalized = normalize(kind, value, default_region=default_region)
    return _indexes_by_version(Keyring.load(session, tenant_id), kind, normalized)
