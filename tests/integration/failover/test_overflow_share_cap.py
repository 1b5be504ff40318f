"""Share caps across API processes, and the service level against each tenant's own target.

Each simulated API process has its own engine and live board, as separate processes would.
"""

import threading
import uuid
from datetime import timedelta

import pytest
from overflow_support import (
    OverflowTenant,
    Partner,
    beat,
    onboard_overflow_tenant,
    onboard_test_partner,
)
from sqlalchemy import create_engine, func, select

from failover import store
from failover.board import LiveBoard
from failover.models import Agreement, Contact
from failover.service import (
    Caller,
    NewContact,
    abandon_contact,
    claim_contact,
    decision_view,
    route_contact,
    route_new_contact,
)
from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_AGENT, SystemContext, TenantContext

PARTNER_AGENTS = 20
# The test partner's agreement has a share cap of 0.5, so 10 open contacts fill it.
CAP = PARTNER_AGENTS // 2
CONTACTS_PER_PROCESS = CAP


def agent_of(tenant_id: str) -> Caller:
    return Caller(TenantContext(tenant_id, actor="test-agent", roles=frozenset({ROLE_AGENT})))


def switch_overflow_on(engine, board, tenant, partner) -> None:
    """Keep the home center busy for longer than the hold time, so overflow switches on."""
    start = utcnow()
    for at in (start, start + timedelta(seconds=61)):
        beat(engine, tenant.home, staffed=2, available=0, now=at)
        beat(engine, partner.center_id, staffed=PARTNER_AGENTS, available=PARTNER_AGENTS, now=at)
        board.refresh(now=at)
    beat(engine, tenant.home, staffed=2, available=0)
    beat(engine, partner.center_id, staffed=PARTNER_AGENTS, available=PARTNER_AGENTS)
    board.refresh()
    assert board.switches[tenant.id].overflow_on is True


def overflowing_tenant(engine, board) -> tuple[OverflowTenant, Partner]:
    """Onboard a tenant with one partner and switch its overflow on."""
    tenant = onboard_overflow_tenant(engine, f"rep-{uuid.uuid4().hex[:8]}")
    partner = onboard_test_partner(engine, tenant, agents=PARTNER_AGENTS)
    switch_overflow_on(engine, board, tenant, partner)
    return tenant, partner


def route_in_session(engine, board, caller: Caller, contact: NewContact) -> tuple[dict, bool]:
    with unit_of_work(caller.ctx, engine=engine) as session:
        stored, created = route_contact(session, caller, board, contact)
        return decision_view(stored), created


def route_as_api(engine, board, caller: Caller, contact: NewContact) -> tuple[dict, bool]:
    # The API's path: a transaction of one round trip on PostgreSQL, a session on SQLite.
    return route_new_contact(engine, caller, board, contact)


def route_many(engine, board, tenant_id: str, count: int, route=route_in_session) -> None:
    caller = agent_of(tenant_id)
    for _ in range(count):
        route(
            engine,
            board,
            caller,
            NewContact(channel="call", language="en", service_group="streets"),
        )


def partner_counts(engine, tenant_id: str, center_id: str) -> tuple[int, int]:
    """Return the contacts stored at the partner and the agreement's open-contact counter."""
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        stored = session.scalar(
            select(func.count())
            .select_from(Contact)
            .where(Contact.tenant_id == tenant_id, Contact.center_id == center_id)
        )
        counter = session.scalar(
            select(Agreement.open_contacts).where(
                Agreement.tenant_id == tenant_id, Agreement.center_id == center_id
            )
        )
    return int(stored or 0), int(counter or 0)


def test_share_cap_holds_across_processes(engine, hub_db):
    tenant = onboard_overflow_tenant(engine, f"cap-{uuid.uuid4().hex[:8]}")
    partner = onboard_test_partner(engine, tenant, agents=PARTNER_AGENTS)
    second_engine = create_engine(hub_db)
    boards = [LiveBoard(engine), LiveBoard(second_engine)]
    switch_overflow_on(engine, boards[0], tenant, partner)
    boards[1].refresh()
    # Neither board counts the other's contacts until a reload, so each would fill the whole cap.
    for board in boards:
        assert board.share_limit(partner.center_id, tenant.id, utcnow()) == CAP

    # One process stores contacts in sessions, the other as the API does, so the cap is
    # enforced across both ways of storing.
    threads = [
        threading.Thread(
            target=route_many,
            args=(process_engine, board, tenant.id, CONTACTS_PER_PROCESS, route),
        )
        for process_engine, board, route in zip(
            (engine, second_engine), boards, (route_in_session, route_as_api), strict=True
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    second_engine.dispose()

    stored, counter = partner_counts(engine, tenant.id, partner.center_id)
    assert stored == CAP
    assert counter == CAP
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        total = session.scalar(
            select(func.count()).select_from(Contact).where(Contact.tenant_id == tenant.id)
        )
    assert total == 2 * CONTACTS_PER_PROCESS


@pytest.mark.parametrize("route", [route_in_session, route_as_api])
def test_repeated_external_id_keeps_one_slot(engine, board, route):
    tenant, partner = overflowing_tenant(engine, board)
    caller = agent_of(tenant.id)
    contact = NewContact(
        channel="call", language="en", service_group="streets", external_id="pbx-7"
    )
    first, created = route(engine, board, caller, contact)
    assert created is True
    assert first["center_id"] == partner.center_id
    again, created = route(engine, board, caller, contact)
    assert created is False
    assert again == first
    # After the repeat, the partner still counts one open contact.
    assert partner_counts(engine, tenant.id, partner.center_id) == (1, 1)


def test_stored_external_id_takes_no_slot(engine, board, monkeypatch):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes and gives back the slot in the contact's own transaction")
    tenant, partner = overflowing_tenant(engine, board)
    caller = agent_of(tenant.id)
    contact = NewContact(
        channel="call", language="en", service_group="streets", external_id="pbx-8"
    )
    first, _created = route_as_api(engine, board, caller, contact)
    released = []
    original = store._release_slot
    monkeypatch.setattr(
        store, "_release_slot", lambda *args: released.append(args) or original(*args)
    )

    again, created = route_as_api(engine, board, caller, contact)
    assert created is False
    assert again == first
    # Giving the slot back in a transaction of its own would leak it if the process stopped
    # between the two, so a repeat of a stored contact must not take one.
    assert released == []
    assert partner_counts(engine, tenant.id, partner.center_id) == (1, 1)


def test_share_slot_released_when_contact_ends(engine, board):
    tenant = onboard_overflow_tenant(engine, f"slt-{uuid.uuid4().hex[:8]}")
    partner = onboard_test_partner(engine, tenant, agents=PARTNER_AGENTS)
    switch_overflow_on(engine, board, tenant, partner)
    route_many(engine, board, tenant.id, 2)
    assert partner_counts(engine, tenant.id, partner.center_id) == (2, 2)

    supervisor = Caller(
        TenantContext(tenant.id, actor="test-sup", roles=frozenset({"supervisor", ROLE_AGENT}))
    )
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        contact_id = session.scalars(
            select(Contact.id).where(Contact.center_id == partner.center_id).limit(1)
        ).one()
    with unit_of_work(supervisor.ctx, engine=engine) as session:
        abandon_contact(session, supervisor, contact_id)
    assert partner_counts(engine, tenant.id, partner.center_id) == (2, 1)
    with unit_of_work(supervisor.ctx, engine=engine) as session:
        abandon_contact(session, supervisor, contact_id)
    assert partner_counts(engine, tenant.id, partner.center_id) == (2, 1)


def test_service_level_uses_tenant_target(engine, board):
    strict = onboard_overflow_tenant(engine, f"sls-{uuid.uuid4().hex[:8]}")
    lenient = onboard_overflow_tenant(engine, f"sll-{uuid.uuid4().hex[:8]}", target_seconds=60)
    arrived = utcnow() - timedelta(minutes=5)
    for tenant in (strict, lenient):
        beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    for tenant in (strict, lenient):
        caller = agent_of(tenant.id)
        with unit_of_work(caller.ctx, engine=engine) as session:
            contact, _ = route_contact(
                session,
                caller,
                board,
                NewContact(channel="call", language="en", service_group="streets"),
                now=arrived,
            )
        # Claimed after 45 s: outside the default 30 s target, inside a 60 s one.
        with unit_of_work(caller.ctx, engine=engine) as session:
            claim_contact(session, caller, contact.id, now=arrived + timedelta(seconds=45))
    board.refresh()

    now = utcnow()
    assert board.center_view(strict.home, now)["service_level_last_hour"] == 0.0
    assert board.center_view(lenient.home, now)["service_level_last_hour"] == 1.0
