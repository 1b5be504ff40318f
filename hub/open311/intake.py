"""POST requests in batches: the calls that one API process receives together share a
transaction (group commit).

A transaction costs PostgreSQL a BEGIN, the tenant scope, the key rows and a COMMIT with its
WAL flush, and the API a thread hand-off. Calls for one tenant that wait at the same time pay
them once per batch, and their rows go in with one statement per table. Each call still gets
its response only after the commit. When the batch's transaction fails for another reason
than a lost database, each call runs again in a transaction of its own, so a conflict of one
call does not fail the others. Before the batch's transaction, the calls take their API keys'
rate-limit tokens together (`hub.open311.ratelimit`), and a call without one writes nothing.
"""

from __future__ import annotations

import asyncio
import weakref

import structlog
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.core.batching import Coalescer
from hub.core.db import unit_of_work
from hub.core.errors import HubError
from hub.open311.ratelimit import PostLimiter
from hub.requests import service
from hub.requests.catalog import TenantSnapshot
from hub.requests.metrics import INTAKE
from hub.requests.schemas import IntakeJob, IntakeResult

log = structlog.get_logger(__name__)

# Calls per batch, and batches one process writes at once. While a batch is written, the event
# loop reads and checks the next calls. Under the intake benchmark (2 processes, 32 clients, 2
# vCPUs) one batch at a time gave 249 to 275 POST/s and two 214 to 240: larger batches share
# more of the fixed cost.
MAX_BATCH_JOBS = 32
MAX_BATCHES_IN_FLIGHT = 1
# How long a batch may wait for as many calls as the city's last batch took (`Coalescer`).
# Without the wait, batches under load alternated between one call and the rest. Runs under
# the same load gave 781 and 792 POST/s without it, 793 to 903 with 5 ms, 894 and 981 with 10 ms.
BATCH_LINGER_SECONDS = 0.01

Outcome = IntakeResult | Exception
# A call of a batch: its tenant, its job, and its API key's id and POST limit per minute (None
# for no limit) with the process's limiter.
Call = tuple[TenantSnapshot, IntakeJob, tuple[int, int] | None, PostLimiter | None]
_coalescers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, Coalescer[str, Call, IntakeResult]
] = weakref.WeakKeyDictionary()


async def submit(
    tenant: TenantSnapshot,
    job: IntakeJob,
    *,
    limit: tuple[int, int] | None = None,
    limiter: PostLimiter | None = None,
) -> IntakeResult:
    """Run one POST requests call in a batch with the calls that wait for the same tenant.

    `limit` is the (API key id, POST requests per minute) that `limiter` applies to the call,
    or None for a call without a limit.
    """
    loop = asyncio.get_running_loop()
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        coalescer = _coalescers[loop] = Coalescer(
            _run_batch,
            max_in_flight=MAX_BATCHES_IN_FLIGHT,
            max_batch=MAX_BATCH_JOBS,
            linger_seconds=BATCH_LINGER_SECONDS,
        )
    return await coalescer.call(tenant.id, (tenant, job, limit, limiter))


async def _run_batch(_tenant_id: str, calls: list[Call]) -> list[Outcome]:
    return await run_in_threadpool(write_limited_batch, calls)


def write_limited_batch(calls: list[Call]) -> list[Outcome]:
    """Take the rate-limit tokens of the calls, then store the calls that got one.

    Return one result or error per call, in order: 429 for a call over its key's limit.
    """
    # The newest snapshot of the tenant serves the whole batch.
    tenant = calls[-1][0]
    jobs = [job for _tenant, job, _limit, _limiter in calls]
    limiter = next((limiter for *_rest, limiter in calls if limiter is not None), None)
    if limiter is None:
        return write_batch(tenant, jobs)
    try:
        rejections = limiter.admit(jobs[0].ctx, [limit for _t, _j, limit, _l in calls])
    except OperationalError as exc:
        # The database is unreachable, so the batch could not be stored either.
        return [exc] * len(jobs)
    admitted = [job for job, rejected in zip(jobs, rejections, strict=True) if rejected is None]
    written = iter(write_batch(tenant, admitted) if admitted else [])
    return [rejected or next(written) for rejected in rejections]


def write_batch(tenant: TenantSnapshot, jobs: list[IntakeJob]) -> list[Outcome]:
    """Store the jobs in one transaction and return one result or error per job, in order."""
    if len(jobs) == 1:
        return [_write_one(tenant, jobs[0])]
    try:
        with unit_of_work(jobs[0].ctx) as session:
            outcomes: list[Outcome] = list(service.intake_batch(session, tenant, jobs))
    except OperationalError as exc:
        if not _rolled_back_by_server(exc):
            # The database is unreachable: a transaction per job would wait for it once per
            # job. A deadlock or serialization failure is retried call by call instead.
            return [exc] * len(jobs)
        return _retry_one_by_one(tenant, jobs, exc)
    except Exception as exc:  # noqa: BLE001 - any failure of the shared transaction is retried
        return _retry_one_by_one(tenant, jobs, exc)
    _count(tenant.id, outcomes)
    return outcomes


def _rolled_back_by_server(exc: OperationalError) -> bool:
    """Return whether PostgreSQL rolled the transaction back (SQLSTATE class 40: a deadlock or
    a serialization failure) while it stays reachable."""
    return str(getattr(exc.orig, "sqlstate", "") or "").startswith("40")


def _retry_one_by_one(
    tenant: TenantSnapshot, jobs: list[IntakeJob], exc: Exception
) -> list[Outcome]:
    # Expected when two calls with one Idempotency-Key arrive together: the second
    # idempotency record violates the unique key, and run alone it gets the stored result.
    log.info(
        "intake_batch_retried_one_by_one",
        tenant_id=tenant.id,
        jobs=len(jobs),
        error=type(exc).__name__,
    )
    outcomes = [_write_one(tenant, job) for job in jobs]
    log.info(
        "intake_batch_retry_done",
        tenant_id=tenant.id,
        stored=sum(isinstance(outcome, IntakeResult) for outcome in outcomes),
        failed=sum(isinstance(outcome, Exception) for outcome in outcomes),
    )
    return outcomes


def _write_one(tenant: TenantSnapshot, job: IntakeJob) -> Outcome:
    try:
        with unit_of_work(job.ctx) as session:
            [outcome] = service.intake_batch(session, tenant, [job])
    except IntegrityError as exc:
        outcome = _stored_after_race(tenant, job, exc)
    except Exception as exc:  # noqa: BLE001 - the caller's request answers with this error
        outcome = exc
    _count(tenant.id, [outcome])
    return outcome


def _stored_after_race(tenant: TenantSnapshot, job: IntakeJob, exc: IntegrityError) -> Outcome:
    """Return the stored result when another call with the same Idempotency-Key committed
    first, else `exc`."""
    if job.idempotency_key is None or job.data.api_key_id is None or job.request_hash is None:
        return exc
    log.info("idempotency_key_race", tenant_id=tenant.id, api_key_id=job.data.api_key_id)
    try:
        with unit_of_work(job.ctx, write=False) as session:
            stored = service.find_idempotent_result(session, job)
    except Exception as read_exc:  # noqa: BLE001 - the caller's request answers with this error
        return read_exc
    return exc if stored is None else stored


def _count(tenant_id: str, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, IntakeResult):
            label = "replayed" if outcome.replayed else "accepted"
        elif isinstance(outcome, HubError):
            label = "rejected"
        else:
            continue
        INTAKE.labels(tenant=tenant_id, outcome=label).inc()
