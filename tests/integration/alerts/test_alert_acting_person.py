"""`hub alerts ... --as NAME` is required on every action the audit log attributes to a
person, and NAME must hold an active emergency_manager key of the tenant."""

from __future__ import annotations

import pytest
from alerts_support import add_tenant, cap_alert, manager, register_managers
from sqlalchemy import Engine, select

from hub.alerts import models as m
from hub.alerts import workflow
from hub.core.db import unit_of_work
from hub.core.errors import Forbidden, NotFound
from hub.core.tenancy import ROLE_OPEN311, TenantContext
from privacy.audit import AuditEntry
from tenants.keys import create_api_key, revoke_api_key

ALERT_YAML = """\
identifier: {identifier}
sender: em@region.example.org
status: Actual
msgType: Alert
scope: Public
info:
  - category: [Met]
    event: Flood
    urgency: Expected
    severity: Severe
    certainty: Likely
    area:
      - areaDesc: Coast
        circle: ["40.7,-74.0 5"]
"""


def alert_file(tmp_path, identifier: str) -> str:
    path = tmp_path / f"{identifier}.yaml"
    path.write_text(ALERT_YAML.format(identifier=identifier), encoding="utf-8")
    return str(path)


def audit_actions(engine: Engine, tenant: str) -> list[tuple[str, str]]:
    with unit_of_work(manager(tenant), engine=engine, write=False) as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant, AuditEntry.action.like("alert.%"))
            .order_by(AuditEntry.id)
        )
        return [(entry.action, entry.actor) for entry in entries]


def alert_state(engine: Engine, tenant: str, alert_id: str) -> str:
    with unit_of_work(manager(tenant), engine=engine, write=False) as session:
        return session.get(m.Alert, alert_id).state


def test_as_required_on_each_action(engine, cli, tmp_path) -> None:
    tenant = add_tenant(engine)
    for args in (
        ("compose", alert_file(tmp_path, "REQ-1"), "--tenant", tenant),
        ("approve", "ANY", "--tenant", tenant),
        ("review", "ANY", "--tenant", tenant),
        ("send", "ANY", "--tenant", tenant),
    ):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert "Missing option '--as'" in result.output, args


def test_unregistered_name_rejected(engine, cli) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "alice", "bob")
    [row] = workflow.compose(engine, manager(tenant, "alice"), cap_alert("ROSTER-1"))

    result = cli("approve", row["id"], "--tenant", tenant, "--as", "operator")

    assert result.exit_code != 0
    assert f"--as 'operator' is not an emergency manager of tenant {tenant}" in result.output
    assert "its emergency managers are alice, bob" in result.output
    assert f"hub tenants keys create --tenant {tenant} --role emergency_manager" in result.output
    assert "Traceback" not in result.output
    assert alert_state(engine, tenant, row["id"]) == m.DRAFT
    assert ("alert.approve", "cli:operator") not in audit_actions(engine, tenant)


def test_forgotten_second_person_stays_draft(engine, cli, tmp_path) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "alice", "bob")
    composed = cli("compose", alert_file(tmp_path, "ROSTER-2"), "--tenant", tenant, "--as", "alice")
    assert composed.exit_code == 0, composed.output
    [row] = workflow.list_alerts(engine, manager(tenant))

    missing = cli("approve", row["id"], "--tenant", tenant)
    own = cli("approve", row["id"], "--tenant", tenant, "--as", "alice")

    assert missing.exit_code == 2
    assert own.exit_code == 0, own.output
    assert "recorded as the first approval" in own.output
    assert alert_state(engine, tenant, row["id"]) == m.DRAFT
    second = cli("approve", row["id"], "--tenant", tenant, "--as", "bob")
    assert "approved by alice, bob" in second.output
    assert alert_state(engine, tenant, row["id"]) == m.APPROVED


def test_name_matched_without_case(engine, cli) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "Alice", "bob")
    [row] = workflow.compose(engine, manager(tenant, "bob"), cap_alert("ROSTER-3"))

    result = cli("approve", row["id"], "--tenant", tenant, "--as", "ALICE")

    assert result.exit_code == 0, result.output
    assert alert_state(engine, tenant, row["id"]) == m.APPROVED
    # The audit log names the person as the key records the holder.
    assert ("alert.approve", "cli:Alice") in audit_actions(engine, tenant)


def test_revoked_or_other_role_rejected(engine, cli) -> None:
    tenant = add_tenant(engine)
    other = add_tenant(engine)
    register_managers(engine, tenant, "alice")
    register_managers(engine, other, "dave")
    admin = TenantContext(tenant, actor="cli:admin")
    with unit_of_work(admin, engine=engine) as session:
        carol, _ = create_api_key(
            session, admin, roles=["emergency_manager"], label="c", holder="carol"
        )
        revoke_api_key(session, admin, carol.id)
        create_api_key(session, admin, roles=[ROLE_OPEN311], label="app", holder="erin")
    [row] = workflow.compose(engine, manager(tenant, "alice"), cap_alert("ROSTER-4"))

    for name in ("carol", "erin", "dave"):
        result = cli("approve", row["id"], "--tenant", tenant, "--as", name)
        assert result.exit_code != 0, name
        assert f"--as '{name}' is not an emergency manager of tenant {tenant}" in result.output
    assert alert_state(engine, tenant, row["id"]) == m.DRAFT


def test_send_needs_registered_name(engine, cli) -> None:
    tenant = add_tenant(engine)
    register_managers(engine, tenant, "alice", "bob")
    [row] = workflow.compose(engine, manager(tenant, "alice"), cap_alert("ROSTER-5"))
    workflow.approve(engine, manager(tenant, "bob"), row["id"])

    rejected = cli("send", row["id"], "--tenant", tenant, "--as", "operator")
    sent = cli("send", row["id"], "--tenant", tenant, "--as", "bob")

    assert rejected.exit_code != 0
    assert "'operator' is not an emergency manager" in rejected.output
    assert sent.exit_code == 0, sent.output
    assert ("alert.send", "cli:bob") in audit_actions(engine, tenant)


def test_named_manager_errors(engine) -> None:
    tenant = add_tenant(engine)
    with pytest.raises(NotFound, match="tenant nowhere not found"):
        workflow.named_manager(engine, "nowhere", "alice")
    with pytest.raises(Forbidden, match="it has no emergency manager yet") as raised:
        workflow.named_manager(engine, tenant, "alice")
    assert raised.value.code == "unknown_emergency_manager"
