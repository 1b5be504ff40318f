"""Helpers and fixtures for the overflow tests: tenants with a home center, partner centers, keys.

Ids are unique per test, so tests can share one PostgreSQL database. Test modules import the
fixtures they use from here, which pytest registers like fixtures defined in the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from open311_support import hub_db, manifest_data  # noqa: F401
from sqlalchemy import select

from failover.api import current_board
from failover.board import LiveBoard
from failover.centers import onboard_partner
from failover.manifest import parse_partner_manifest
from failover.models import ContactCenter
from failover.service import Caller, record_heartbeat
from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import (
    ROLE_AGENT,
    ROLE_PARTNER_AGENT,
    ROLE_SUPERVISOR,
    SystemContext,
    TenantContext,
)
from tenants.keys import create_api_key
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard

HANDLE_SECONDS = 240
THRESHOLDS = {
    "high_wait_seconds": 90,
    "low_wait_seconds": 30,
    "high_hold_seconds": 60,
    "low_hold_seconds": 120,
    "heartbeat_timeout_seconds": 30,
}


@dataclass
class OverflowTenant:
    id: str
    home: str
    supervisor: str
    agent: str
    open311: str
    jurisdiction: str


@dataclass
class Partner:
    center_id: str
    agent_key: str


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def onboard_overflow_tenant(
    engine,
    tenant_id: str,
    *,
    target_seconds: float | None = None,
    languages: list[str] | None = None,
) -> OverflowTenant:
    jurisdiction = f"{tenant_id}.example.org"
    data = manifest_data(tenant_id, jurisdiction)
    if languages is not None:
        data["languages"] = languages
    home = f"{tenant_id}-home"
    data["overflow"] = {
        "centers": [
            {
                "id": home,
                "name": "Home center",
                "agents": 2,
                "skills": ["streets", "sanitation"],
                "languages": ["en", "es"],
                "hours": {
                    day: ["00:00-24:00"]
                    for day in (
                        "monday",
                        "tuesday",
                        "wednesday",
                        "thursday",
                        "friday",
                        "saturday",
                        "sunday",
                    )
                },
                "average_handle_seconds": HANDLE_SECONDS,
            }
        ],
        "thresholds": THRESHOLDS,
    }
    if target_seconds is not None:
        data["overflow"]["service_level_target_seconds"] = target_seconds
    manifest = parse_manifest(data)
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        _, open311_key = onboard(session, manifest, actor="test")
        ctx = TenantContext(tenant_id, actor="test")
        supervisor = create_api_key(session, ctx, roles=[ROLE_SUPERVISOR, ROLE_AGENT], label="sup")[
            1
        ]
        agent = create_api_key(session, ctx, roles=[ROLE_AGENT], label="agent")[1]
    return OverflowTenant(tenant_id, home, supervisor, agent, open311_key or "", jurisdiction)


def onboard_test_partner(
    engine,
    tenant: OverflowTenant,
    *,
    data_level: str = "minimal",
    languages: tuple[str, ...] = ("en", "es"),
    cost_weight: float = 1.0,
    agents: int = 20,
) -> Partner:
    center_id = f"partner-{uuid.uuid4().hex[:8]}"
    manifest = parse_partner_manifest(
        {
            "center": {
                "id": center_id,
                "name": "Test partner",
                "timezone": "America/Chicago",
                "agents": agents,
                "skills": ["streets", "sanitation"],
                "languages": list(languages),
                "average_handle_seconds": HANDLE_SECONDS,
            },
            "agreements": [
                {
                    "tenant": tenant.id,
                    "share_cap": 0.5,
                    "data_level": data_level,
                    "cost_weight": cost_weight,
                }
            ],
        }
    )
    with unit_of_work(SystemContext("test partner"), engine=engine) as session:
        onboard_partner(session, manifest, actor="test")
        ctx = TenantContext(tenant.id, actor="test")
        key = create_api_key(
            session, ctx, roles=[ROLE_PARTNER_AGENT], label="partner agent", center_id=center_id
        )[1]
    return Partner(center_id, key)


def beat(engine, center_id: str, *, staffed: int, available: int, now=None, sync=True) -> None:
    """Record a heartbeat as the center's own system would send it.

    With `sync`, a board reload first copies tenants' own centers from their manifests. That
    reload also evaluates every switch at the real time, so tests that move a simulated clock
    across a switch's hold time pass `sync=False` once the centers exist.
    """
    if sync:
        LiveBoard(engine).refresh()
    with unit_of_work(SystemContext("test heartbeat"), engine=engine) as session:
        owner = session.scalar(
            select(ContactCenter.owner_tenant_id).where(ContactCenter.id == center_id)
        )
        if owner is None:
            roles, center = frozenset({ROLE_PARTNER_AGENT}), center_id
        else:
            roles, center = frozenset({ROLE_SUPERVISOR}), None
        caller = Caller(TenantContext(owner or "system", actor="test", roles=roles), center)
        record_heartbeat(
            session, caller, center_id, agents_staffed=staffed, agents_available=available, now=now
        )


@pytest.fixture
def engine(hub_db):  # noqa: F811
    return get_engine(hub_db)


@pytest.fixture
def board(engine) -> LiveBoard:
    """A live board without its refresh thread, so each test decides when time moves."""
    return LiveBoard(engine)


@pytest.fixture
def tenant(engine) -> OverflowTenant:
    return onboard_overflow_tenant(engine, f"ovf-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def other_tenant(engine) -> OverflowTenant:
    return onboard_overflow_tenant(engine, f"ovg-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def client(hub_db, board) -> Iterator[TestClient]:  # noqa: F811
    from hub.api.app import create_app

    # The test's own board, without its refresh thread, replaces the one the app starts.
    app = create_app(start_relay=False, start_board=False)
    app.dependency_overrides[current_board] = lambda: board
    with TestClient(app) as test_client:
        yield test_client
