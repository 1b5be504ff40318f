"""Regional alerts: sending the approved parts while another tenant's approval is missing,
what `send` reports for each part, and Cancels that leave parts out."""

from __future__ import annotations

import json

import pytest
from alerts_support import (
    BOSTON_POINT,
    NYC_POINT,
    add_resident,
    add_tenant,
    cap_alert,
    manager,
    register_managers,
)
from sqlalchemy import Engine, func, select

from hub.alerts import models as m
from hub.alerts import workflow
from hub.core.db import unit_of_work
from hub.core.errors import Forbidden

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")


@pytest.fixture
def region(engine: Engine, webhook_receiver) -> tuple[str, str]:
    """Two tenants of one region, each with a resident and two emergency managers."""
    origin = add_tenant(engine)
    guest = add_tenant(engine)
    register_managers(engine, origin, "em1", "em2")
    register_managers(engine, guest, "em1", "em2")
    add_resident(engine, origin, NYC_POINT, {"webhook": webhook_receiver.url("/origin")})
    add_resident(engine, guest, BOSTON_POINT, {"webhook": webhook_receiver.url("/guest")})
    return origin, guest


def compose_regional(engine: Engine, origin: str, guest: str, cap) -> dict[str, dict]:
    rows = workflow.compose(engine, manager(origin), cap, tenants=[guest])
    return {row["tenant_id"]: row for row in rows}


def deliveries(engine: Engine, tenant: str, alert_id: str) -> int:
    with unit_of_work(manager(tenant), engine=engine, write=False) as session:
        return session.scalar(
            select(func.count()).select_from(m.Delivery).where(m.Delivery.alert_id == alert_id)
        )


def state(engine: Engine, tenant: str, alert_id: str) -> str:
    with unit_of_work(manager(tenant), engine=engine, write=False) as session:
        return session.get(m.Alert, alert_id).state


def test_error_names_every_unapproved_part(engine, region) -> None:
    origin, guest = region
    parts = compose_regional(engine, origin, guest, cap_alert("REG-ALL-1"))

    with pytest.raises(Forbidden) as raised:
        workflow.send(engine, manager(origin), parts[origin]["id"])

    message = raised.value.message
    assert raised.value.code == "not_approved"
    assert "2 part(s) are not approved yet" in message
    for tenant, part in parts.items():
        assert f"`hub alerts approve {part['id']} --tenant {tenant} --as NAME`" in message
    assert "`--approved-only` sends only approved parts, and none is approved yet" in message


def test_error_suggests_approved_only(engine, region) -> None:
    origin, guest = region
    parts = compose_regional(engine, origin, guest, cap_alert("REG-ALL-2"))
    workflow.approve(engine, manager(origin, "em2"), parts[origin]["id"])

    with pytest.raises(Forbidden) as raised:
        workflow.send(engine, manager(origin), parts[origin]["id"])

    message = raised.value.message
    assert "1 part(s) are not approved yet" in message
    assert f"alert {parts[guest]['id']} of tenant {guest}" in message
    assert f"alert {parts[origin]['id']} of tenant" not in message
    assert (
        f"send the approved parts ({origin}) now and each other part once it is approved, run "
        f"`hub alerts send {parts[origin]['id']} --tenant {origin} --as NAME --approved-only`"
    ) in message
    assert deliveries(engine, origin, parts[origin]["id"]) == 0


def test_approved_only_sends_own_part(engine, region, cli) -> None:
    origin, guest = region
    parts = compose_regional(engine, origin, guest, cap_alert("REG-PART-1"))
    workflow.approve(engine, manager(origin, "em2"), parts[origin]["id"])

    first = cli("send", parts[origin]["id"], "--tenant", origin, "--as", "em1", "--approved-only")

    assert first.exit_code == 0, first.output
    output = " ".join(first.output.split())
    assert f"{origin} (alert {parts[origin]['id']}): 1 deliveries queued" in output
    assert f"{guest} (alert {parts[guest]['id']}): not approved yet, so nothing was sent" in output
    assert deliveries(engine, origin, parts[origin]["id"]) == 1
    assert deliveries(engine, guest, parts[guest]["id"]) == 0
    assert state(engine, guest, parts[guest]["id"]) == m.DRAFT

    # The guest part still needs its own approval, then goes with the next send.
    with pytest.raises(Forbidden, match="1 part\\(s\\) are not approved yet"):
        workflow.send(engine, manager(origin), parts[origin]["id"])
    workflow.approve(engine, manager(guest, "em2"), parts[guest]["id"])
    second = json.loads(
        cli("send", parts[origin]["id"], "--tenant", origin, "--as", "em1", "--json").stdout
    )
    outcomes = {part["tenant_id"]: part["outcome"] for part in second["tenants"]}
    assert outcomes == {origin: "already_sent", guest: "queued"}
    assert second["deliveries"] == 1
    assert deliveries(engine, guest, parts[guest]["id"]) == 1


def test_approved_only_nothing_approved(engine, region) -> None:
    origin, guest = region
    parts = compose_regional(engine, origin, guest, cap_alert("REG-PART-2"))
    with pytest.raises(Forbidden, match="none is approved yet"):
        workflow.send(engine, manager(origin), parts[origin]["id"], approved_only=True)
    assert state(engine, origin, parts[origin]["id"]) == m.DRAFT


def test_approved_only_every_part_left_held(engine, region, cli) -> None:
    origin, guest = region
    parts = compose_regional(engine, origin, guest, cap_alert("REG-PART-3"))
    for tenant, part in parts.items():
        with unit_of_work(manager(tenant), engine=engine) as session:
            row = session.get(m.Alert, part["id"])
            row.state = m.HELD
            row.hold_reason = "the alert it updates is unknown here"

    result = cli("send", parts[origin]["id"], "--tenant", origin, "--as", "em1", "--approved-only")

    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "nothing was sent, because every part left is held" in output
    assert f"alert {parts[guest]['id']} of tenant {guest} is held" in output
    assert deliveries(engine, origin, parts[origin]["id"]) == 0


def test_cancel_leaving_parts_warns(engine, region, cli, tmp_path) -> None:
    origin, guest = region
    first = cap_alert("REG-CANCEL-1")
    parts = compose_regional(engine, origin, guest, first)
    reference = f"{first.sender},{first.identifier},{first.sent.isoformat()}"
    path = tmp_path / "cancel.yaml"
    path.write_text(
        "identifier: REG-CANCEL-1-C\nsender: em@region.example.org\nstatus: Actual\n"
        f"msgType: Cancel\nscope: Public\nreferences: {reference}\nnote: Sent in error.\n",
        encoding="utf-8",
    )

    composed = cli("compose", str(path), "--tenant", origin, "--as", "em1")

    assert composed.exit_code == 0, composed.output
    warning = " ".join(composed.stderr.split())
    assert f"Cancel REG-CANCEL-1-C covers only {origin}" in warning
    assert f"parts in {guest} (alert {parts[guest]['id']}, draft)" in warning
    assert f"compose the Cancel again with a new identifier and `--also {guest}`" in warning

    # The regional Cancel names no part left out.
    both = cap_alert("REG-CANCEL-1-C2", msg_type="Cancel", references=reference, with_info=False)
    rows = workflow.compose(engine, manager(origin), both, tenants=[guest])
    assert not [w for row in rows for w in row["warnings"] if "covers only" in w]


def test_cancel_of_unsent_alert_reported(engine, region, cli) -> None:
    origin, guest = region
    first = cap_alert("REG-CANCEL-2")
    parts = compose_regional(engine, origin, guest, first)
    reference = f"{first.sender},{first.identifier},{first.sent.isoformat()}"
    cancel = cap_alert("REG-CANCEL-2-C", msg_type="Cancel", references=reference, with_info=False)
    [cancel_row] = workflow.compose(engine, manager(origin), cancel)
    workflow.approve(engine, manager(origin, "em2"), cancel_row["id"])

    sent = cli("send", cancel_row["id"], "--tenant", origin, "--as", "em1")

    output = " ".join(sent.output.split())
    assert sent.exit_code == 0, sent.output
    assert (
        f"0 deliveries queued; it cancels alert {parts[origin]['id']}, which was never sent, so "
        f"nobody was reached and alert {parts[origin]['id']} will never be sent"
    ) in output

    # Sending the original now reaches only the guest tenant, and the output reports both parts.
    workflow.approve(engine, manager(guest, "em2"), parts[guest]["id"])
    original = cli("send", parts[origin]["id"], "--tenant", origin, "--as", "em1")
    output = " ".join(original.output.split())
    assert original.exit_code == 0, original.output
    assert f"{origin} (alert {parts[origin]['id']}): cancelled before it was sent" in output
    assert f"{guest} (alert {parts[guest]['id']}): 1 deliveries queued" in output
