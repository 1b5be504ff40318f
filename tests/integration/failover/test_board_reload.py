"""A running live board picks up changed agreements, new partners and changed manifests on
its per-second reload, without the full reload a first load does."""

from __future__ import annotations

import copy

from overflow_support import onboard_test_partner
from sqlalchemy import select

from failover.models import Agreement
from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext
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
