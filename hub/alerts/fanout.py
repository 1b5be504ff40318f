"""Deliver one batch of an alert: load, decrypt, send concurrently, record, retry.

A batch runs in one worker task. It sends in chunks over a pooled `aiohttp` session that each
worker thread keeps between batches. The outcomes of a chunk are stored while the next chunk
is sent, so a worker killed mid-batch repeats at most two chunks. Those repeats carry the same
delivery key, and receivers drop them. Each (tenant, channel) has a token bucket at the
tenant's configured rate.

Nothing is sent for an alert that is cancelled, superseded or past `expires`: its pending
deliveries are dropped instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from hub.alerts import models as m
from hub.alerts.cap.model import Alert as CapAlert
from hub.alerts.cap.model import Info
from hub.alerts.channels import Channel, Message, Outcome, build_channels
from hub.alerts.language import choose_info
from hub.alerts.metrics import DELIVERIES, DELIVERY_SECONDS
from hub.alerts.policy import TenantAlertSettings, load_settings
from hub.alerts.service import DELIVER_TASK, language_infos, load_cap, queue_for
from hub.alerts.subscriptions import (
    ADDRESS_COLUMN,
    ADDRESS_TABLE,
    channel_address_id,
    disable_channel,
    unsubscribe_url,
)
from hub.alerts.texts import cancel_text
from hub.core.clock import as_utc, utcnow
from hub.core.db import unit_of_work
from hub.core.outbox import enqueue
from hub.core.tenancy import TenantContext
from privacy.access import decrypt_rows

log = structlog.get_logger(__name__)

# Deliveries sent concurrently and recorded together.
CHUNK_SIZE = 200
# Simultaneous connections per batch; the token buckets decide the rate.
MAX_CONNECTIONS = 100
MAX_ATTEMPTS = 6
# Retry delays in seconds: 2, 4, 8, ... capped at 300.
MAX_BACKOFF_SECONDS = 300
DECRYPT_PURPOSE = "alerts.delivery"


class TokenBucket:
    """Allow `rate` acquisitions per second on average with bursts up to `burst`.

    One bucket per worker process and (tenant, channel), shared by the batches that process
    runs, whatever thread or event loop they run in. A thread lock guards the state only while
    counting, never across an await. NOTE: with N worker processes a provider receives up to
    N times the configured rate, because enforcing it across processes needs a shared limiter.
    """

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = threading.Lock()

    def try_take(self) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate

    async def acquire(self) -> None:
        while True:
            wait = self.try_take()
            if wait == 0:
                return
            await asyncio.sleep(wait)


@dataclass
class Job:
    delivery_id: int
    channel: str
    channel_row_id: int
    address: str
    message: Message


def _info_for(cap: CapAlert, language: str | None) -> Info | None:
    for info in cap.infos:
        if info.effective_language == language:
            return info
    return cap.infos[0] if cap.infos else None


def render(
    row: m.Alert,
    cap: CapAlert,
    reference: CapAlert | None,
    language: str | None,
    key: str,
    unsubscribe: str | None = None,
) -> Message:
    """Render the message for one delivery in its chosen language.

    A Cancel without info blocks reuses the referenced alert's text with a cancellation
    headline in the same language.
    """
    info = _info_for(cap, language)
    cancelled = row.msg_type == "Cancel"
    if info is None and reference is not None:
        info = _info_for(reference, language)
    lang = info.effective_language if info else (language or "en-US")
    headline = (info.headline or info.event or "") if info else ""
    if cancelled:
        headline = f"{cancel_text(lang)}: {headline}" if headline else cancel_text(lang)
    expires = cap.expires() or (reference.expires() if reference else None)
    return Message(
        delivery_key=key,
        alert_id=row.id,
        identifier=row.identifier,
        msg_type=row.msg_type,
        status=row.status,
        language=lang,
        event=(info.event or "") if info else "",
        headline=headline,
        description="" if cancelled or info is None else (info.description or ""),
        instruction="" if cancelled or info is None else (info.instruction or ""),
        area="; ".join(a.area_desc or "" for a in info.areas) if info else "",
        expires=expires.isoformat() if expires else None,
        web=info.web if info else None,
        unsubscribe_url=unsubscribe,
    )


def _drop_pending(session: Any, alert_id: str, batch: int | None, reason: str) -> int:
    query = update(m.Delivery).where(m.Delivery.alert_id == alert_id, m.Delivery.state == m.PENDING)
    if batch is not None:
        query = query.where(m.Delivery.batch == batch)
    return session.execute(query.values(state=m.DROPPED, last_error=reason)).rowcount or 0


def _load_jobs(
    engine: Engine | None, ctx: TenantContext, alert_id: str, batch: int
) -> tuple[list[Job], TenantAlertSettings | None, str]:
    """Return the batch's pending jobs with decrypted addresses, or no jobs and the reason."""
    with unit_of_work(ctx, engine=engine) as session:
        row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
        if row is None:
            return [], None, "alert_not_found"
        if row.state in (m.CANCELLED, m.SUPERSEDED, m.EXPIRED):
            dropped = _drop_pending(session, alert_id, batch, row.state)
            DELIVERIES.labels(channel="all", outcome="dropped").inc(dropped)
            return [], None, row.state
        if row.expires_at is not None and as_utc(row.expires_at) <= utcnow():
            dropped = _drop_pending(session, alert_id, None, m.EXPIRED)
            row.state = m.EXPIRED
            row.finished_at = utcnow()
            DELIVERIES.labels(channel="all", outcome="dropped").inc(dropped)
            log.info("alert_expired_during_fanout", alert_id=alert_id, dropped=dropped)
            return [], None, m.EXPIRED

        pending = session.execute(
            select(
                m.Delivery.id,
                m.Delivery.channel,
                m.Delivery.channel_row_id,
                m.Delivery.subscriber_id,
                m.Subscriber.languages,
                m.SubscriberChannel.address_enc,
                m.SubscriberChannel.active,
            )
            .join(m.SubscriberChannel, m.SubscriberChannel.id == m.Delivery.channel_row_id)
            .join(m.Subscriber, m.Subscriber.id == m.Delivery.subscriber_id)
            .where(
                m.Subscriber.tenant_id == m.Delivery.tenant_id,
                m.Delivery.alert_id == alert_id,
                m.Delivery.batch == batch,
                m.Delivery.state == m.PENDING,
                m.SubscriberChannel.tenant_id == m.Delivery.tenant_id,
            )
            .order_by(m.Delivery.id)
        ).all()
        if not pending:
            return [], None, "nothing_pending"

        inactive = [p.id for p in pending if not p.active]
        if inactive:
            session.execute(
                update(m.Delivery)
                .where(m.Delivery.id.in_(inactive))
                .values(state=m.DROPPED, last_error="unsubscribed")
            )
        active = [p for p in pending if p.active]
        plain = decrypt_rows(
            session,
            ctx,
            ADDRESS_TABLE,
            [
                (channel_address_id(p.subscriber_id, p.channel), {ADDRESS_COLUMN: p.address_enc})
                for p in active
            ],
            purpose=DECRYPT_PURPOSE,
        )
        settings = load_settings(session, ctx.tenant_id)
        cap = load_cap(row)
        reference = None
        if row.references_alert_id:
            referenced = session.get(m.Alert, row.references_alert_id)
            reference = load_cap(referenced) if referenced is not None else None
        base_url = settings.public_base_url
        infos = language_infos(session, row, cap)
        jobs = []
        for p, values in zip(active, plain, strict=True):
            language = None
            if infos:
                chosen = choose_info(infos, p.languages or [], settings.default_language)
                language = infos[chosen].effective_language
            key = f"{row.id}-{p.id}"
            jobs.append(
                Job(
                    delivery_id=p.id,
                    channel=p.channel,
                    channel_row_id=p.channel_row_id,
                    address=values[ADDRESS_COLUMN] or "",
                    message=render(
                        row,
                        cap,
                        reference,
                        language,
                        key,
                        unsubscribe_url(base_url, row.tenant_id, p.subscriber_id)
                        if base_url
                        else None,
                    ),
                )
            )
        return jobs, settings, "ok"


_buckets: dict[tuple[str, str], TokenBucket] = {}


def bucket_for(settings: TenantAlertSettings, channel: str) -> TokenBucket:
    key = (settings.tenant_id, channel)
    rate = settings.rate(channel)
    bucket = _buckets.get(key)
    if bucket is None or bucket.rate != rate:
        bucket = TokenBucket(rate)
        _buckets[key] = bucket
    return bucket


async def _send_one(channel: Channel, bucket: TokenBucket, job: Job) -> Outcome:
    await bucket.acquire()
    started = time.perf_counter()
    try:
        outcome = await channel.send(job.address, job.message)
    except Exception as exc:  # noqa: BLE001 - one broken address must not fail the batch
        log.warning("alert_delivery_error", delivery_id=job.delivery_id, error=type(exc).__name__)
        outcome = Outcome(ok=False, transient=True, error=type(exc).__name__)
    DELIVERY_SECONDS.labels(channel=job.channel).observe(time.perf_counter() - started)
    return outcome


def _record(engine: Engine | None, ctx: TenantContext, results: list[tuple[Job, Outcome]]) -> int:
    """Store one chunk's outcomes; return how many stay pending for a retry."""
    retry = 0
    now = utcnow()
    with unit_of_work(ctx, engine=engine) as session:
        sent_ids = [job.delivery_id for job, outcome in results if outcome.ok]
        if sent_ids:
            session.execute(
                update(m.Delivery)
                .where(m.Delivery.id.in_(sent_ids), m.Delivery.state == m.PENDING)
                .values(state=m.DELIVERED, sent_at=now, attempts=m.Delivery.attempts + 1)
            )
        for job, outcome in results:
            if outcome.ok:
                label = "sent"
            elif outcome.transient:
                label = "retry"
            else:
                label = "failed"
            DELIVERIES.labels(channel=job.channel, outcome=label).inc()
            if outcome.ok:
                continue
            delivery = session.get(m.Delivery, job.delivery_id)
            if delivery is None or delivery.state != m.PENDING:
                continue
            delivery.attempts += 1
            delivery.last_error = (outcome.error or "error")[:64]
            if outcome.transient and delivery.attempts < MAX_ATTEMPTS:
                retry += 1
                continue
            delivery.state = m.FAILED
            if outcome.disable:
                disable_channel(session, ctx, job.channel_row_id, outcome.error or "gone")
    return retry


class _ThreadLoop(threading.local):
    """One event loop and one pooled HTTP session per worker thread, kept across batches so
    connections to providers stay open between batches."""

    loop: asyncio.AbstractEventLoop | None = None
    http: aiohttp.ClientSession | None = None
    pid: int = 0


_thread_loop = _ThreadLoop()


def _run(coroutine_factory: Any) -> Any:
    import os

    state = _thread_loop
    if state.loop is None or state.pid != os.getpid() or state.loop.is_closed():
        # A forked child must not reuse its parent's loop or sockets.
        state.loop = asyncio.new_event_loop()
        state.http = None
        state.pid = os.getpid()
    return state.loop.run_until_complete(coroutine_factory())


def close_thread_session() -> None:
    """Close this thread's HTTP session and event loop (before a process exits)."""
    state = _thread_loop
    if state.loop is None or state.loop.is_closed():
        return
    if state.http is not None and not state.http.closed:
        state.loop.run_until_complete(state.http.close())
    state.loop.close()
    state.loop = None
    state.http = None


async def _http() -> aiohttp.ClientSession:
    state = _thread_loop
    if state.http is None or state.http.closed:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS)
        state.http = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=15, connect=5)
        )
    return state.http


async def _send_all(
    engine: Engine | None,
    ctx: TenantContext,
    jobs: list[Job],
    settings: TenantAlertSettings,
) -> int:
    """Send in chunks; each chunk's outcomes are stored while the next chunk is sent, so a
    killed worker repeats at most two chunks."""
    http = await _http()
    channels = build_channels(http, settings)
    retry = 0
    recording: asyncio.Future[int] | None = None
    try:
        for start in range(0, len(jobs), CHUNK_SIZE):
            chunk = jobs[start : start + CHUNK_SIZE]
            outcomes = await asyncio.gather(
                *(
                    _send_one(channels[job.channel], bucket_for(settings, job.channel), job)
                    for job in chunk
                )
            )
            if recording is not None:
                retry += await recording
            results = list(zip(chunk, outcomes, strict=True))
            recording = asyncio.ensure_future(asyncio.to_thread(_record, engine, ctx, results))
    finally:
        if recording is not None:
            retry += await recording
        for channel in channels.values():
            await channel.close()
    return retry


def _finish_if_done(engine: Engine | None, ctx: TenantContext, alert_id: str) -> None:
    with unit_of_work(ctx, engine=engine) as session:
        row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
        if row is None or row.state != m.SENDING:
            return
        pending = session.scalar(
            select(m.Delivery.id)
            .where(m.Delivery.alert_id == alert_id, m.Delivery.state == m.PENDING)
            .limit(1)
        )
        if pending is None:
            row.state = m.SENT
            row.finished_at = utcnow()
            log.info("alert_fanout_finished", alert_id=alert_id)


def deliver_batch(alert_id: str, batch: int, tenant_id: str, engine: Engine | None = None) -> dict:
    """Send the pending deliveries of one batch; running it again sends nothing twice."""
    ctx = TenantContext(tenant_id=tenant_id, actor="worker:alerts")
    jobs, settings, reason = _load_jobs(engine, ctx, alert_id, batch)
    retry = 0
    if jobs and settings is not None:
        retry = _run(lambda: _send_all(engine, ctx, jobs, settings))
    if retry:
        with unit_of_work(ctx, engine=engine) as session:
            row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
            attempts = session.scalar(
                select(func.max(m.Delivery.attempts)).where(
                    m.Delivery.alert_id == alert_id,
                    m.Delivery.batch == batch,
                    m.Delivery.state == m.PENDING,
                )
            )
            delay = min(2 ** int(attempts or 1), MAX_BACKOFF_SECONDS)
            enqueue(
                session,
                DELIVER_TASK,
                queue=queue_for(row) if row is not None else "alerts.urgent",
                tenant_id=tenant_id,
                delay_seconds=delay,
                alert_id=alert_id,
                batch=batch,
            )
        log.info("alert_batch_retry_scheduled", alert_id=alert_id, batch=batch, pending=retry)
    _finish_if_done(engine, ctx, alert_id)
    return {"sent_or_failed": len(jobs) - retry, "retry": retry, "reason": reason}
