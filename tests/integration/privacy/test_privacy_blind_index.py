"""Blind indexes match a caller however the value was typed, and only within one tenant."""

from __future__ import annotations

import pytest

from hub.core.db import unit_of_work
from hub.core.errors import InvalidInput
from hub.core.tenancy import TenantContext
from privacy.blind_index import blind_index, blind_indexes_all_versions


def index(engine, tenant, kind, value, **kwargs):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return blind_index(session, tenant, kind, value, **kwargs)


def test_phone_formats_match(engine, tenant):
    first, version = index(engine, tenant, "phone", "(202) 555-0123")
    second, _ = index(engine, tenant, "phone", "+1 202 555 0123")
    assert first == second
    assert version == 1
    assert len(first) == 32


def test_phone_region_applies(engine, tenant):
    national, _ = index(engine, tenant, "phone", "020 7946 0018", default_region="GB")
    international, _ = index(engine, tenant, "phone", "+44 20 7946 0018")
    assert national == international


def test_email_case_and_space_match(engine, tenant):
    first, _ = index(engine, tenant, "email", "  Resident@Example.ORG ")
    second, _ = index(engine, tenant, "email", "resident@example.org")
    assert first == second


def test_kinds_do_not_collide(engine, tenant):
    email, _ = index(engine, tenant, "email", "a@b.co")
    phone, _ = index(engine, tenant, "phone", "+12025550123")
    assert email != phone


def test_tenants_get_different_indexes(engine, tenant, other_tenant):
    mine, _ = index(engine, tenant, "email", "resident@example.org")
    theirs, _ = index(engine, other_tenant, "email", "resident@example.org")
    assert mine != theirs


def test_none_gives_version_only(engine, tenant):
    assert index(engine, tenant, "email", None) == (None, 1)


@pytest.mark.parametrize("value", ["not a phone", "123", "+1 000 000 0000", ""])
def test_garbage_phone_rejected(engine, tenant, value):
    with pytest.raises(InvalidInput, match="phone number"):
        index(engine, tenant, "phone", value)


@pytest.mark.parametrize("value", ["no-at-sign", "two@@example.org", "a@nodot", "a b@example.org"])
def test_garbage_email_rejected(engine, tenant, value):
    with pytest.raises(InvalidInput, match="email address is invalid"):
        index(engine, tenant, "email", value)


def test_error_does_not_echo_value(engine, tenant):
    with pytest.raises(InvalidInput) as caught:
        index(engine, tenant, "phone", "call 555-SECRET")
    assert "SECRET" not in caught.value.message


def test_all_versions_lookup(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        by_version = blind_indexes_all_versions(session, tenant, "email", "A@example.org")
    assert by_version == {1: index(engine, tenant, "email", "a@example.org")[0]}
