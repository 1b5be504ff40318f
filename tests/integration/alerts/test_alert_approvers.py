"""The two-person rule counts people, not credentials: an API key counts as its holder, the CLI
`--as NAME` as NAME, and a key without a holder as a person of its own."""

from __future__ import annotations

import pytest
from alerts_support import add_tenant, cap_alert, manager
from sqlalchemy import Engine

from hub.alerts import workflow
from hub.core.db import unit_of_work
from hub.core.errors import Forbidden
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, TenantContext
from tenants.auth import authenticate
from tenants.keys import create_api_key, revoke_api_key

SINGLE_APPROVER = {"approval": {"single_approver_for_immediate_extreme": True}}


def key_manager(engine: Engine, tenant_id: str, holder: str | None = None) -> TenantContext:
    """Create an emergency_manager key held by `holder` and return the context that requests
    with the key get, as the API builds it."""
    admin = TenantContext(tenant_id, actor="cli:admin")
    with unit_of_work(admin, engine=engine) as session:
        _, raw = create_api_key(
            session, admin, roles=[ROLE_EMERGENCY_MANAGER], label="test", holder=holder
        )
    return authenticate(raw, any_of=[ROLE_EMERGENCY_MANAGER], engine=engine)


def test_holder_and_cli_name_one_person(engine) -> None:
    tenant = add_tenant(engine)
    alice_key = key_manager(engine, tenant, "alice")
    [row] = workflow.compose(engine, alice_key, cap_alert("PERSON-1"))

    first = workflow.approve(engine, manager(tenant, "alice"), row["id"])
    assert first["state"] == "draft"
    assert first["approval"]["outcome"] == "awaiting_second_approver"
    assert f"because alice ({alice_key.actor}) composed the alert" in first["approval"]["message"]
    assert "other than alice must approve it" in first["approval"]["message"]

    # Names are compared without regard to case.
    again = workflow.approve(engine, manager(tenant, "Alice"), row["id"])
    assert again["state"] == "draft"
    assert again["approval"]["outcome"] == "awaiting_second_approver"

    done = workflow.approve(engine, manager(tenant, "bob"), row["id"])
    assert done["state"] == "approved"
    assert done["approval"]["message"] == "approved by alice, alice (cli:Alice), bob"
    assert done["approval"]["approvers"] == ["cli:Alice", "cli:alice", "cli:bob"]


def test_holder_kept_after_revocation(engine) -> None:
    tenant = add_tenant(engine)
    alice_key = key_manager(engine, tenant, "alice")
    [row] = workflow.compose(engine, alice_key, cap_alert("PERSON-2"))
    admin = TenantContext(tenant, actor="cli:admin")
    with unit_of_work(admin, engine=engine) as session:
        revoke_api_key(session, admin, int(alice_key.actor.removeprefix("apikey:")))

    result = workflow.approve(engine, manager(tenant, "alice"), row["id"])

    assert result["state"] == "draft"
    assert result["approval"]["outcome"] == "awaiting_second_approver"


def test_two_holders_satisfy_rule(engine) -> None:
    tenant = add_tenant(engine)
    alice_key = key_manager(engine, tenant, "alice")
    bob_key = key_manager(engine, tenant, "bob")
    [row] = workflow.compose(engine, alice_key, cap_alert("PERSON-3"))

    result = workflow.approve(engine, bob_key, row["id"])

    assert result["state"] == "approved"
    assert result["approval"]["outcome"] == "approved"
    assert result["approval"]["message"] == f"approved by bob ({bob_key.actor})"


def test_key_without_holder_own_person(engine) -> None:
    tenant = add_tenant(engine)
    shared_key = key_manager(engine, tenant)
    [row] = workflow.compose(engine, shared_key, cap_alert("PERSON-4"))

    own = workflow.approve(engine, shared_key, row["id"])
    assert own["state"] == "draft"
    assert f"other than {shared_key.actor} must approve it" in own["approval"]["message"]

    done = workflow.approve(engine, manager(tenant, "em2"), row["id"])
    assert done["state"] == "approved"
    assert done["approval"]["message"] == f"approved by {shared_key.actor}, em2"


def test_regional_holder_one_person(engine) -> None:
    origin = add_tenant(engine)
    guest = add_tenant(engine)
    alice_key = key_manager(engine, origin, "alice")
    rows = workflow.compose(engine, alice_key, cap_alert("PERSON-5"), tenants=[guest])
    guest_row = next(r for r in rows if r["tenant_id"] == guest)

    result = workflow.approve(engine, manager(guest, "alice"), guest_row["id"])

    states = {state["tenant_id"]: state for state in result["tenants"]}
    assert states[guest]["outcome"] == "awaiting_second_approver"
    assert "other than alice must approve it" in states[guest]["message"]
    assert states[origin]["outcome"] == "awaiting_approval"


def test_single_approver_review_by_person(engine) -> None:
    tenant = add_tenant(engine, alerts=SINGLE_APPROVER)
    alice_key = key_manager(engine, tenant, "alice")
    cap = cap_alert("PERSON-6", urgency="Immediate", severity="Extreme")
    [row] = workflow.compose(engine, alice_key, cap)

    approved = workflow.approve(engine, manager(tenant, "alice"), row["id"])
    assert approved["state"] == "approved"
    assert approved["awaiting_review"] is True

    with pytest.raises(Forbidden, match="alice composed or approved") as raised:
        workflow.review(engine, manager(tenant, "alice"), row["id"])
    assert raised.value.code == "reviewer_is_approver"
    reviewed = workflow.review(engine, manager(tenant, "bob"), row["id"])
    assert reviewed["reviewed_by"] == "cli:bob"
