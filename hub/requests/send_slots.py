"""Per-agency delivery rate limits, enforced by send slots reserved in the database.

An agency whose manifest sets `max_deliveries_per_minute` gets one send slot every
60 / rate seconds. Its `agencies` row keeps `next_send_slot_at`, the start of the next free
slot. Before a delivery to it is sent, `claim_deliveries` locks that row (SELECT ... FOR UPDATE
on PostgreSQL; SQLite write transactions begin IMMEDIATE, so they already run one at a time),
takes the slot at max(now, next_send_slot_at) and moves `next_send_slot_at` one interval past
it. Every worker process reserves through the same row, so any two slots of an agency are at
least one interval apart, however many workers run.

A slot at `now` is sent at once. A later slot stays with the delivery in
`Delivery.send_slot_at`: the delivery waits until then with no attempt counted, and the claim
at that time sends it without reserving again. A claim that comes one interval or more after
its slot, because no worker ran meanwhile, gives the slot up and reserves a new one. So a
backlog that fell due while the workers were stopped goes out at the agency's rate, not all at
once.

NOTE: a worker that runs a waiting delivery less than one interval late sends it then, so one
minute can hold one send more than the rate, from a slot that started in the minute before.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.clock import as_utc
from hub.requests.models import Delivery
from tenants.models import Agency


def slot_interval(agency: Agency | None) -> timedelta | None:
    """Return the time between two send slots of `agency`, or None when it has no cap."""
    if agency is None or not agency.max_deliveries_per_minute:
        return None
    return timedelta(seconds=60.0 / agency.max_deliveries_per_minute)


def lock_capped_agencies(session: Session, agencies: Iterable[Agency]) -> None:
    """Lock the rows of the agencies that have a cap until the transaction ends, and reload
    them, so their `next_send_slot_at` is the latest committed one.

    The rows are locked in id order, so two claims that reserve slots of the same agencies
    wait for each other instead of deadlocking.
    """
    ids = sorted(agency.id for agency in agencies if slot_interval(agency) is not None)
    if ids:
        session.scalars(
            select(Agency)
            .where(Agency.id.in_(ids))
            .order_by(Agency.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()


def reserve_send_slot(agency: Agency, row: Delivery, now: datetime) -> datetime:
    """Return the time at which `row` may be sent to `agency`: `now`, or a later slot that the
    delivery must wait for.

    The agency's row must be locked by `lock_capped_agencies` in the current transaction. A
    later slot is stored in `row.send_slot_at`, and the caller keeps the delivery until then.
    An agency without a cap always gets `now`.
    """
    interval = slot_interval(agency)
    reserved = row.send_slot_at
    if interval is None:
        row.send_slot_at = None
        return now
    if reserved is not None:
        reserved = as_utc(reserved)
        if reserved > now:
            return reserved
        row.send_slot_at = None
        if now - reserved < interval:
            return now

    start = agency.next_send_slot_at
    slot = now if start is None else max(now, as_utc(start))
    agency.next_send_slot_at = slot + interval
    if slot > now:
        row.send_slot_at = slot
    return slot
