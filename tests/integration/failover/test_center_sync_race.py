"""Two API processes syncing one tenant's centers at once both succeed with one row."""

from __future__ import annotations

import uuid

from overflow_support import engine, hub_db, onboard_overflow_tenant  # noqa: F401
from sqlalchemy import func, select

from failover.centers import _insert_center, sync_tenant_centers
from failover.models import ContactCenter
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext
from tenants.models import Tenant


def test_insert_after_other_process_returns_its_row(engine):  # noqa: F811
    tenant_id = f"race{uuid.uuid4().hex[:6]}"
    onboarded = onboard_overflow_tenant(engine, tenant_id)

    # The first process (a heartbeat) syncs and commits the center.
    with unit_of_work(SystemContext("first process"), engine=engine) as first:
        sync_tenant_centers(first, first.get(Tenant, tenant_id))

    # The second process (a contact) had found no row before that commit, so it inserts.
    with unit_of_work(SystemContext("second process"), engine=engine) as second:
        fields = {
            "name": "Home center",
            "timezone": "UTC",
            "agents": 1,
            "skills": [],
            "languages": ["en"],
            "hours": {},
            "average_handle_seconds": 240.0,
            "max_waiting": 500,
        }
        center = _insert_center(second, onboarded.home, tenant_id, fields)
        owner = center.owner_tenant_id

    with unit_of_work(SystemContext("check"), engine=engine, write=False) as check:
        count = check.scalar(
            select(func.count())
            .select_from(ContactCenter)
            .where(ContactCenter.id == onboarded.home)
        )
    assert owner == tenant_id
    assert count == 1
