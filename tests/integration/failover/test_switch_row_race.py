"""Two API processes evaluating one tenant's surge at once share one switch row."""

from __future__ import annotations

import threading
import uuid

from overflow_support import onboard_overflow_tenant
from sqlalchemy import event, func, select

from failover.board import _locked_switch_row
from failover.models import OverflowSwitch
from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import TenantContext


def test_concurrent_first_use_shares_one_row(pg_url):
    engine = get_engine(pg_url)
    tenant_id = f"switch{uuid.uuid4().hex[:6]}"
    onboard_overflow_tenant(engine, tenant_id)
    ctx = TenantContext(tenant_id, actor="test")

    # Both sessions find no row, then both insert: the barrier holds each one's first flush
    # until the other has also looked, which is the race two API processes run into.
    both_looked = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []
    row_ids: list[int] = []

    def evaluate() -> None:
        try:
            with unit_of_work(ctx, engine=engine) as session:
                waited = []

                @event.listens_for(session, "before_flush")
                def _hold(*_args: object) -> None:
                    if not waited:
                        waited.append(True)
                        both_looked.wait()

                row = _locked_switch_row(session, tenant_id)
                row.overflow_on = True
                session.flush()
                row_ids.append(row.id)
        except BaseException as exc:  # noqa: BLE001 - reported by the asserts below
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    with unit_of_work(ctx, engine=engine, write=False) as check:
        count = check.scalar(select(func.count()).select_from(OverflowSwitch))
    assert errors == []
    assert count == 1
    assert len(set(row_ids)) == 1
