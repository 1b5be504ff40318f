"""The live board starts with the API process, so switches are evaluated before the first
overflow request, and its reload on a hub without contact centers skips the live figures."""

from __future__ import annotations

import time
import uuid

from fastapi.testclient import TestClient
from overflow_support import onboard_overflow_tenant
from sqlalchemy import event, select

from failover.board import LiveBoard, loaded_board
from failover.models import OverflowSwitch
from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext

# Seconds the test waits for the first evaluation: the board reloads every second.
EVALUATION_TIMEOUT = 10.0


def stored_switch(engine, tenant_id: str) -> OverflowSwitch | None:
    with unit_of_work(SystemContext("test read"), engine=engine, write=False) as session:
        query = select(OverflowSwitch).where(OverflowSwitch.tenant_id == tenant_id)
        return session.scalars(query).one_or_none()


def test_api_start_evaluates_switches(engine, tenant):
    from hub.api.app import create_app

    with TestClient(create_app(start_relay=False)):
        # No overflow request reaches the app: only its start can have started the board.
        deadline = time.monotonic() + EVALUATION_TIMEOUT
        switch = stored_switch(engine, tenant.id)
        while switch is None and time.monotonic() < deadline:
            time.sleep(0.2)
            switch = stored_switch(engine, tenant.id)
        running = loaded_board(engine)

    assert switch is not None, f"no switch stored within {EVALUATION_TIMEOUT} s of the start"
    # No center has sent a heartbeat, so the new tenant is in disaster mode.
    assert switch.disaster
    assert running is not None
    assert loaded_board(engine) is None, "the board outlived the app"


def test_reload_without_centers_skips_live_reads(sqlite_url):
    # A database of the test's own: on the shared PostgreSQL database other tests' centers exist.
    engine = get_engine(sqlite_url)
    board = LiveBoard(engine)
    board.refresh()
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        board.refresh(configuration=False)
        assert not any("overflow_heartbeats" in s for s in statements)
        assert not any("overflow_switches" in s for s in statements)

        statements.clear()
        onboard_overflow_tenant(engine, f"ovs-{uuid.uuid4().hex[:8]}")
        # The first reload reads the new manifest; the second copies its centers and reads
        # their live figures.
        board.refresh(configuration=False)
        board.refresh(configuration=False)
        assert any("overflow_heartbeats" in s for s in statements)
        assert any("overflow_switches" in s for s in statements)
    finally:
        event.remove(engine, "before_cursor_execute", record)
