"""A running live board picks up changed agreements, new partners and changed manifests on
its per-second reload, without the full reload a first load does."""

from __future__ import annotations

import copy

from overflow_support import beat, onboard_test_partner
from sqlalchemy import select

from failover.board import LiveBoard
from failover.models import Agreement
from failover.service import Caller, NewContact, route_new_contact
from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_AGENT, SystemContext, TenantContext
from tenants.models import Tenant


def terms_at(board, tenant_id: str, center_id: str):
    return next(t for t in board.agreements.get(tenant_id, []) if t.center_id == center_id)


def test_board_reloads_changed_agreements(engine, board, tenant):
    partner = onboard_test_partner(engine, tenant)
    board.refresh()
    assert terms_at(board, tenant.id, partner.center_id).cost_weight == 1.0

    with unit_of_work(SystemContext("test change"), engine=engine) as session:
        row = session.scalars(
            select(Agreement).where(Agreement.center_id == partner.center_id)
        ).one()
        row.cost_weight = 3.0
        row.updated_at = utcnow()
    later = onboard_test_partner(engine, tenant)

    board.refresh(configuration=False)
    assert terms_at(board, tenant.id, partner.center_id).cost_weight == 3.0
    assert later.center_id in board.centers


def test_changed_manifest_resyncs_own_centers(engine, board, tenant):
    board.refresh()
    assert board.centers[tenant.home].agents == 2

    with unit_of_work(SystemContext("test change"), engine=engine) as session:
        row = session.get(Tenant, tenant.id)
        manifest = copy.deepcopy(row.manifest)
        manifest["overflow"]["centers"][0]["agents"] = 5
        row.manifest = manifest

    # The first reload reads the new manifest version; the next syncs the centers from it.
    board.refresh(configuration=False)
    board.refresh(configuration=False)
    assert board.centers[tenant.home].agents == 5


def store_contact(engine, board, tenant_id: str) -> None:
    caller = Caller(TenantContext(tenant_id, actor="test-agent", roles=frozenset({ROLE_AGENT})))
    route_new_contact(
        engine, caller, board, NewContact(channel="call", language="en", service_group="streets")
    )


def test_reload_keeps_last_statistics(engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    store_contact(engine, board, tenant.id)

    # The background reload skips the hour's statistics between their intervals, but still
    # counts the waiting contact.
    board.refresh(configuration=False, statistics=False)
    view = board.center_view(tenant.home, utcnow())
    assert view["arrival_rate_per_minute"] == 0
    assert view["waiting"] == 1

    board.refresh(configuration=False)
    assert board.center_view(tenant.home, utcnow())["arrival_rate_per_minute"] == 0.2
    store_contact(engine, board, tenant.id)
    board.refresh(configuration=False, statistics=False)
    view = board.center_view(tenant.home, utcnow())
    assert view["arrival_rate_per_minute"] == 0.2
    assert view["waiting"] == 2


def test_statistics_read_at_interval(engine, tenant, monkeypatch):
    calls = []
    board = LiveBoard(engine, refresh_seconds=0.01)
    reload = board.refresh

    def one_reload(**kwargs):
        calls.append(kwargs["statistics"])
        reload(**kwargs)
        board.stop()

    monkeypatch.setattr(board, "refresh", one_reload)
    board._run()
    assert calls == [True]
    calls.clear()
    board._stop.clear()
    board._run()
    # The first reload took them less than STATISTICS_SECONDS ago.
    assert calls == [False]


def test_unaudited_decisions_found_per_tenant(engine, board, tenant):
    beat(engine, tenant.home, staffed=2, available=2)
    board.refresh()
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        assert tenant.id not in board._unaudited_due(session.connection(), board.tenants)
    store_contact(engine, board, tenant.id)
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        assert board._unaudited_due(session.connection(), board.tenants) == [tenant.id]
