"""Limits on the `POST requests` calls of each API key, over every API process.

Each key has a token bucket in the database (`open311_post_buckets`). With a limit of L calls
a minute the bucket contains at most L tokens and gains L / 60 tokens a second, and each call
takes one. An idle key may therefore file L calls at once, and over any window of T seconds a
key files at most L * (1 + T / 60) calls, whichever API processes receive them.

An API process takes the tokens of a whole batch of POSTs (`hub.open311.intake`) with one
upsert per key, in a transaction of its own before the batch's, so the bucket's row lock is
held for one statement and not while the batch is written. A call that gets no token is
rejected with 429 before anything of it is written. The upsert refills and takes under the row
lock (PostgreSQL) or the database write lock (SQLite), so two processes never take the same
token.

After a take, a process knows when the bucket will next hold a whole token, because only the
refill adds tokens. Until then it rejects the key's calls itself (`PostLimiter`), without a
database round trip, and these rejections are exactly the ones the database would make.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from sqlalchemy import Engine, text

from hub.core.db import execute_in_one_round_trip, get_engine, is_postgres, unit_of_work
from hub.core.errors import TooManyRequests
from hub.core.logging import RepeatLimiter
from hub.core.tenancy import TenantContext
from hub.open311.models import PostBucket
from hub.requests.catalog import TenantSnapshot
from tenants.keys import ApiCredential

log = structlog.get_logger(__name__)

RATE_LIMITED = Counter(
    "hub_open311_rate_limited_total",
    "Open311 POST requests rejected with 429 because their API key exceeded its limit, by tenant.",
    ["tenant"],
)
# One log line per key per minute while it stays over its limit; the count of the lines
# dropped comes with the next one.
_rejection_log = RepeatLimiter(60.0)

# Bucket units per call. Tokens are stored as integers, so that whole calls are integer
# division on both databases: SQLite has no FLOOR without its math functions.
UNITS_PER_CALL = 1_000_000
# Keys remembered as over their limit per process. Beyond it, keys whose wait has ended are
# forgotten first, and then the oldest.
MAX_DENIED_KEYS = 10_000

Clock = Callable[[], float]

# `{least}` and `{greatest}` are LEAST and GREATEST on PostgreSQL, MIN and MAX on SQLite. In
# ON CONFLICT DO UPDATE, columns qualified by the table's name are those of the stored row, and
# every SET expression reads the values from before the update.
_REFILLED = (
    "{least}({table}.tokens + CAST({greatest}({now} - {table}.updated, 0) * {rate} AS BIGINT), "
    "{capacity})"
)
_TAKE_SQL = (
    "INSERT INTO {table} (tenant_id, api_key_id, tokens, updated, granted) "
    "{source} "
    "ON CONFLICT (tenant_id, api_key_id) DO UPDATE SET "
    "granted = {least}({count}, {refilled} / {unit}), "
    "tokens = {refilled} - {least}({count}, {refilled} / {unit}) * {unit}, "
    "updated = {greatest}({table}.updated, {now}) "
    "RETURNING granted, tokens, updated"
)


# On PostgreSQL the commit of a take need not wait for the WAL flush: a take lost in a server
# crash only gives its tokens back. `execute_in_one_round_trip` sends a single statement, so
# the setting comes from a subquery of it.
_POSTGRES_SOURCE = (
    "SELECT {values} FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush"
)
_SQLITE_SOURCE = "VALUES ({values})"


def _take_sql(postgres: bool) -> str:
    names = ("tenant_id", "api_key_id", "initial_tokens", "now", "initial_granted", "count")
    names += ("rate", "capacity")
    if postgres:
        marks = {name: f"%({name})s" for name in names}
        functions = {"least": "LEAST", "greatest": "GREATEST"}
    else:
        marks = {name: f":{name}" for name in names}
        functions = {"least": "MIN", "greatest": "MAX"}
    values = "{tenant_id}, {api_key_id}, {initial_tokens}, {now}, {initial_granted}".format(**marks)
    source = (_POSTGRES_SOURCE if postgres else _SQLITE_SOURCE).format(values=values)
    table = PostBucket.__tablename__
    refilled = _REFILLED.format(**marks, **functions, table=table)
    return _TAKE_SQL.format(
        **marks, **functions, refilled=refilled, unit=UNITS_PER_CALL, table=table, source=source
    )


_TAKE_POSTGRES = _take_sql(postgres=True)
_TAKE_SQLITE = text(_take_sql(postgres=False))


@dataclass(frozen=True)
class Take:
    """The calls granted from a bucket, and the seconds until it next contains a whole token
    (0 when it contains one now)."""

    granted: int
    wait_seconds: float


def post_limit(tenant: TenantSnapshot, credential: ApiCredential) -> int | None:
    """Return the POST requests per minute that the key may file, or None for no limit.

    The key's own limit wins over the manifest's `open311.max_posts_per_minute_per_key`.
    """
    own = credential.max_posts_per_minute
    if own is not None:
        return own or None
    return tenant.manifest.open311.max_posts_per_minute_per_key


def take(
    ctx: TenantContext,
    api_key_id: int,
    count: int,
    per_minute: int,
    *,
    engine: Engine | None = None,
    clock: Clock = time.time,
) -> Take:
    """Take up to `count` calls from the key's bucket, in a transaction of its own.

    The first calls up to the tokens available are granted. `clock` returns seconds since the
    Unix epoch. NOTE: the clocks of the API processes must agree. A process whose clock runs
    s seconds ahead of the others grants up to per_minute * s / 60 calls early, once.
    """
    if count < 1 or per_minute < 1:
        raise ValueError(f"take needs count and per_minute of 1 or more, not {count}, {per_minute}")
    engine = engine or get_engine()
    now = clock()
    capacity = per_minute * UNITS_PER_CALL
    initial_granted = min(count, per_minute)
    params = {
        "tenant_id": ctx.tenant_id,
        "api_key_id": api_key_id,
        "initial_tokens": capacity - initial_granted * UNITS_PER_CALL,
        "initial_granted": initial_granted,
        "now": now,
        "count": count,
        "rate": per_minute / 60 * UNITS_PER_CALL,
        "capacity": capacity,
    }
    if is_postgres(engine):
        [row] = execute_in_one_round_trip(ctx, _TAKE_POSTGRES, params, engine=engine)
    else:
        with unit_of_work(ctx, engine=engine) as session:
            row = tuple(session.execute(_TAKE_SQLITE, params).one())
    granted, tokens, updated = int(row[0]), int(row[1]), float(row[2])
    missing_units = max(0, UNITS_PER_CALL - tokens)
    # The wait counts from the bucket's time, which is later than `now` when a process with a
    # later clock took tokens first.
    wait = missing_units / params["rate"] + max(0.0, updated - now)
    return Take(granted=granted, wait_seconds=wait if missing_units else 0.0)


class PostLimiter:
    """The keys of one API process that are over their limit, and until when.

    `check` runs on the event loop and `record` in the intake threads, so the map is guarded
    by a lock.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # Key id to the clock time at which its bucket next holds a whole token.
        self._denied_until: dict[int, float] = {}

    def check(self, tenant_id: str, api_key_id: int, per_minute: int) -> None:
        """Raise TooManyRequests when the key's bucket held no whole token at the last take
        and has not refilled one since."""
        until = self._denied_until.get(api_key_id)
        if until is None:
            return
        wait = until - self.clock()
        if wait > 0:
            raise rejection(tenant_id, api_key_id, per_minute, wait)
        with self._lock:
            if self._denied_until.get(api_key_id) == until:
                del self._denied_until[api_key_id]

    def record(self, api_key_id: int, result: Take) -> None:
        """Remember until when the key's bucket contains no whole token, after a take."""
        if result.wait_seconds <= 0:
            return
        until = self.clock() + result.wait_seconds
        with self._lock:
            if api_key_id not in self._denied_until and len(self._denied_until) >= MAX_DENIED_KEYS:
                self._forget_some()
            self._denied_until[api_key_id] = until

    def _forget_some(self) -> None:
        now = self.clock()
        ended = [key for key, until in self._denied_until.items() if until <= now]
        for key in ended or [next(iter(self._denied_until))]:
            del self._denied_until[key]

    def admit(
        self,
        ctx: TenantContext,
        calls: Sequence[tuple[int, int] | None],
        *,
        engine: Engine | None = None,
    ) -> list[TooManyRequests | None]:
        """Take one token per call and return, in order, None for each call granted one and
        the error for each call rejected.

        `calls` holds the (API key id, limit per minute) of each call, or None for a call
        without a limit. The calls of one key take their tokens together, and the earlier
        calls get them first.
        """
        counts: dict[int, tuple[int, int]] = {}
        for call in calls:
            if call is not None:
                key_id, per_minute = call
                counts[key_id] = (counts.get(key_id, (0, per_minute))[0] + 1, per_minute)
        granted: dict[int, int] = {}
        waits: dict[int, float] = {}
        for key_id, (count, per_minute) in counts.items():
            result = take(ctx, key_id, count, per_minute, engine=engine, clock=self.clock)
            self.record(key_id, result)
            granted[key_id] = result.granted
            waits[key_id] = result.wait_seconds
        outcomes: list[TooManyRequests | None] = []
        for call in calls:
            if call is None:
                outcomes.append(None)
                continue
            key_id, per_minute = call
            if granted[key_id] > 0:
                granted[key_id] -= 1
                outcomes.append(None)
            else:
                outcomes.append(rejection(ctx.tenant_id, key_id, per_minute, waits[key_id]))
        return outcomes


def rejection(tenant_id: str, api_key_id: int, per_minute: int, wait: float) -> TooManyRequests:
    """Count and log a call over its key's limit, and return its 429 error."""
    retry_after = max(1, math.ceil(wait))
    RATE_LIMITED.labels(tenant=tenant_id).inc()
    _rejection_log.log(
        log.warning,
        "open311_post_rate_limited",
        key=(tenant_id, api_key_id),
        tenant_id=tenant_id,
        key_id=api_key_id,
        limit_per_minute=per_minute,
        retry_after_seconds=retry_after,
    )
    return TooManyRequests(
        f"api_key {api_key_id} exceeded its limit of {per_minute} POST requests a minute; "
        f"retry after {retry_after} s, as the Retry-After header says",
        retry_after_seconds=retry_after,
    )
