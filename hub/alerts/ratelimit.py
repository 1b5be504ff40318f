"""Token buckets per (tenant, channel), shared by every worker process through the database.

A bucket holds up to `capacity` tokens and gains `rate` tokens per second. A worker takes the
tokens for a whole chunk of messages in one UPDATE, so the cost is one statement per chunk,
not per message. The UPDATE refills and takes in the same statement under the row lock
(PostgreSQL) or the database write lock (SQLite), so two workers never take the same tokens.

A take may leave the bucket negative. The worker then owes tokens, and `Grant.delay` spaces
its messages so that the k-th token taken after the bucket was full goes out no earlier than
(k + 1 - capacity) / rate seconds after it was full. Over any window of T seconds, all
workers together therefore send at most capacity + rate * T messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from hub.alerts import models as m
from hub.core.db import is_postgres

Clock = Callable[[], float]


@dataclass(frozen=True)
class Grant:
    """Tokens taken at `taken_at` (clock seconds) when the bucket held `available` of them."""

    taken_at: float
    available: float
    rate: float
    count: int

    def delay(self, index: int) -> float:
        """Return seconds after `taken_at` before message `index` (from 0) of the grant may go."""
        return max(0.0, (index + 1 - self.available) / self.rate)


def capacity_for(rate: float) -> float:
    """Return the burst size of a bucket: one second of its rate, and at least one token."""
    return max(rate, 1.0)


def refill(tokens: float, updated: float, now: float, rate: float, capacity: float) -> float:
    """Return the tokens after refilling from `updated` to `now`; a clock going back adds none."""
    return min(capacity, tokens + max(0.0, now - updated) * rate)


def _least(a: ColumnElement[float], b: ColumnElement[float] | float) -> ColumnElement[float]:
    # CASE instead of LEAST or MIN, because PostgreSQL and SQLite name that function differently.
    return case((a < b, a), else_=b)


def _greatest(a: ColumnElement[float], b: ColumnElement[float] | float) -> ColumnElement[float]:
    return case((a > b, a), else_=b)


def take_tokens(
    session: Session,
    tenant_id: str,
    channel: str,
    count: int,
    rate: float,
    *,
    clock: Clock = time.time,
) -> Grant:
    """Take `count` tokens from the tenant's shared bucket for `channel`.

    Two statements the first time a bucket is used, one after that. The caller's transaction
    holds the bucket's row lock until it ends, so it should end soon after.
    `clock` returns seconds since the Unix epoch. NOTE: the clocks of all workers must agree.
    A worker whose clock runs ahead of the others by s seconds makes up to rate * s tokens
    early, once.
    """
    if rate <= 0:
        raise ValueError(f"rate limit of channel {channel} must be positive, not {rate}")
    capacity = capacity_for(rate)
    now = clock()
    bucket = m.RateBucket.__table__.c
    refilled = _least(bucket.tokens + _greatest(now - bucket.updated, 0.0) * rate, capacity)
    statement = (
        update(m.RateBucket)
        .where(m.RateBucket.tenant_id == tenant_id, m.RateBucket.channel == channel)
        .values(tokens=refilled - count, updated=_greatest(bucket.updated, now))
        .returning(m.RateBucket.tokens, m.RateBucket.updated)
        .execution_options(synchronize_session=False)
    )
    bucket_row = session.execute(statement).one_or_none()
    if bucket_row is None:
        # First use of this bucket: create it full, unless another worker just did.
        dialect = postgresql if is_postgres(session) else sqlite
        session.execute(
            dialect.insert(m.RateBucket)
            .values(tenant_id=tenant_id, channel=channel, tokens=capacity, updated=now)
            .on_conflict_do_nothing()
        )
        bucket_row = session.execute(statement).one_or_none()
    if bucket_row is None:
        raise RuntimeError(f"rate bucket {tenant_id}/{channel} could not be created or read")
    # The grant starts at the bucket's time, which is later than `now` when another worker
    # with a later clock reading took tokens first. Starting at `now` would pace this
    # worker's messages from before that take, too early by the difference.
    return Grant(
        taken_at=float(bucket_row.updated),
        available=float(bucket_row.tokens) + count,
        rate=rate,
        count=count,
    )
