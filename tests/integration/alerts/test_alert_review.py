"""Review afterwards of alerts that one emergency manager approved alone, through the workflow
and the CLI. The API endpoint is tested in test_alert_api.py."""

from __future__ import annotations

import json
import re

import pytest
from alerts_support import add_tenant, cap_alert, manager, register_managers, table_rows
from sqlalchemy import Engine, select

from hub.alerts import workflow
from hub.core.db import unit_of_work
from hub.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from privacy.audit import AuditEntry

SINGLE_APPROVER = {"approval": {"single_approver_for_immediate_extreme": True}}


def single_approved(engine: Engine, tenant: str, identifier: str) -> str:
    """Compose and approve an Immediate and Extreme alert as em1 alone; return its id."""
    cap = cap_alert(identifier, urgency="Immediate", severity="Extreme")
    [row] = workflow.compose(engine, manager(tenant, "em1"), cap)
    approved = workflow.approve(engine, manager(tenant, "em1"), row["id"])
    assert approved["state"] == "approved"
    assert approved["awaiting_review"] is True
    return row["id"]


@pytest.fixture
def tenant(engine: Engine) -> str:
    return add_tenant(engine, alerts=SINGLE_APPROVER)


def test_review_by_second_manager(engine, tenant) -> None:
    alert_id = single_approved(engine, tenant, "REV-1")
    reviewed = workflow.review(engine, manager(tenant, "em2"), alert_id, "  Checked the area.  ")

    assert reviewed["awaiting_review"] is False
    assert reviewed["reviewed_by"] == "cli:em2"
    assert reviewed["review_note"] == "Checked the area."
    [status] = workflow.status(engine, manager(tenant), alert_id)
    assert status["reviewed_by"] == "cli:em2"
    with unit_of_work(manager(tenant), engine=engine) as session:
        entries = session.scalars(
            select(AuditEntry).where(
                AuditEntry.tenant_id == tenant, AuditEntry.action == "alert.review"
            )
        ).all()
    assert len(entries) == 1
    assert entries[0].actor == "cli:em2"


def test_review_listed_until_done(engine, tenant) -> None:
    waiting = single_approved(engine, tenant, "REV-2")
    [two_person] = workflow.compose(engine, manager(tenant, "em1"), cap_alert("REV-2B"))
    workflow.approve(engine, manager(tenant, "em2"), two_person["id"])

    listed = workflow.list_alerts(engine, manager(tenant), awaiting_review=True)
    assert [r["id"] for r in listed] == [waiting]
    workflow.review(engine, manager(tenant, "em2"), waiting)
    assert workflow.list_alerts(engine, manager(tenant), awaiting_review=True) == []


def test_review_unknown_alert(engine, tenant) -> None:
    with pytest.raises(NotFound, match="NOPE not found"):
        workflow.review(engine, manager(tenant, "em2"), "NOPE")


def test_review_not_single_approved(engine, tenant) -> None:
    [row] = workflow.compose(engine, manager(tenant, "em1"), cap_alert("REV-3"))
    workflow.approve(engine, manager(tenant, "em2"), row["id"])
    with pytest.raises(Conflict, match="needs no review") as raised:
        workflow.review(engine, manager(tenant, "em3"), row["id"])
    assert raised.value.code == "review_not_needed"


def test_review_by_approver_rejected(engine, tenant) -> None:
    alert_id = single_approved(engine, tenant, "REV-4")
    with pytest.raises(Forbidden, match="another emergency manager") as raised:
        workflow.review(engine, manager(tenant, "em1"), alert_id)
    assert raised.value.code == "reviewer_is_approver"


def test_review_twice_rejected(engine, tenant) -> None:
    alert_id = single_approved(engine, tenant, "REV-5")
    workflow.review(engine, manager(tenant, "em2"), alert_id)
    with pytest.raises(Conflict, match="already reviewed by em2 at") as raised:
        workflow.review(engine, manager(tenant, "em3"), alert_id)
    assert raised.value.code == "already_reviewed"


def test_review_note_too_long(engine, tenant) -> None:
    alert_id = single_approved(engine, tenant, "REV-6")
    with pytest.raises(InvalidInput, match="shorten it to 1000"):
        workflow.review(engine, manager(tenant, "em2"), alert_id, "x" * 1001)
    assert workflow.list_alerts(engine, manager(tenant), awaiting_review=True) != []


def test_review_other_tenant_not_found(engine, tenant) -> None:
    alert_id = single_approved(engine, tenant, "REV-7")
    stranger = add_tenant(engine, alerts=SINGLE_APPROVER)
    with pytest.raises(NotFound):
        workflow.review(engine, manager(stranger, "em2"), alert_id)


# A time as the CLI shows it to the tenant's emergency managers: New York time, then UTC.
TENANT_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d E[SD]T \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\)"


def test_review_command(engine, tenant, cli) -> None:
    register_managers(engine, tenant, "em1", "em2")
    alert_id = single_approved(engine, tenant, "REV-CLI")

    listed = cli("list", "--tenant", tenant, "--awaiting-review")
    assert listed.exit_code == 0, listed.output
    assert alert_id in listed.output
    [row] = table_rows(listed.output)
    assert row["id"] == alert_id
    assert re.fullmatch(f"awaiting review, due {TENANT_TIME}", row["note"])

    done = cli("review", alert_id, "--tenant", tenant, "--as", "EM2", "--note", "ok", "--json")
    assert done.exit_code == 0, done.output
    [row] = json.loads(done.stdout)
    assert row["reviewed_by"] == "cli:em2"
    assert row["reviewer"] == "em2"
    assert row["review_note"] == "ok"

    status = cli("status", alert_id, "--tenant", tenant)
    assert status.exit_code == 0, status.output
    assert re.search(f"reviewed by em2 at {TENANT_TIME}", status.output)


def test_review_names_key_holder(engine, tenant, cli) -> None:
    from test_alert_approvers import key_manager

    alert_id = single_approved(engine, tenant, "REV-KEY")
    bob_key = key_manager(engine, tenant, "bob")

    reviewed = workflow.review(engine, bob_key, alert_id)

    assert reviewed["reviewed_by"] == bob_key.actor
    assert reviewed["reviewer"] == f"bob ({bob_key.actor})"
    again = cli("review", alert_id, "--tenant", tenant, "--as", "bob")
    assert f"already reviewed by bob ({bob_key.actor}) at" in again.output


def test_review_command_errors(engine, tenant, cli) -> None:
    register_managers(engine, tenant, "em1", "em2")
    alert_id = single_approved(engine, tenant, "REV-CLI-2")

    same = cli("review", alert_id, "--tenant", tenant, "--as", "em1")
    assert same.exit_code != 0
    assert "another emergency manager must review it" in same.output
    assert "Traceback" not in same.output

    unknown = cli("review", "NOPE", "--tenant", tenant, "--as", "em2", "--json")
    assert unknown.exit_code != 0
    assert "not found" in json.loads(unknown.stdout)["error"]


def test_review_deadline_in_tenant_time(engine, tenant) -> None:
    cap = cap_alert("REV-TZ", urgency="Immediate", severity="Extreme")
    [row] = workflow.compose(engine, manager(tenant, "em1"), cap)

    approved = workflow.approve(engine, manager(tenant, "em1"), row["id"])

    message = approved["approval"]["message"]
    assert re.search(f"another must review it by {TENANT_TIME} with `hub alerts review", message)
