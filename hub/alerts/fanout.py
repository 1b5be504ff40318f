"""Deliver one batch of an alert: load, decrypt, send concurrently, record, retry.

A batch runs in one worker task. It renders the alert once per language, decrypts the batch's
addresses in one pass, then sends in chunks over the worker process's pooled `aiohttp` session
(`hub.alerts.httploop`). Before each chunk it takes the chunk's tokens from the tenant's shared
bucket for each channel (`hub.alerts.ratelimit`), one statement per channel and chunk, in
one transaction that also checks the alert's state.

Two chunks may be on the wire at once, and the outcomes of a chunk are stored in a few bulk
UPDATEs while later chunks are sent, so a worker killed mid-batch repeats at most three
chunks. Those repeats carry the same delivery key, and receivers drop them.

Nothing is sent for an alert that is cancelled, superseded or past `expires`: its pending
deliveries are dropped instead. The check runs when a batch starts and again in the
transaction that takes each chunk's tokens, so a running batch sends at most the chunks
already on the wire after a Cancel or the expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from sqlalchemy import ARRAY, BigInteger, String, any_, bindparam, case, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from hub.alerts import models as m
from hub.alerts.cap.model import Alert as CapAlert
from hub.alerts.cap.model import Info
from hub.alerts.cap.writer import format_cap_datetime
from hub.alerts.channels import Channel, MessageText, Outcome, build_channels, error_reason
from hub.alerts.httploop import close_process_loop, process_loop
from hub.alerts.language import choose_info
from hub.alerts.metrics import ALERTS_FINISHED, DELIVERIES, DELIVERY_SECONDS
from hub.alerts.policy import TenantAlertSettings, load_settings
from hub.alerts.ratelimit import Clock, Grant, take_tokens
from hub.alerts.service import (
    DELIVER_TASK,
    add_cancel_recipients,
    language_infos,
    load_cap,
    queue_for,
)
from hub.alerts.subscriptions import (
    ADDRESS_COLUMN,
    ADDRESS_TABLE,
    channel_address_id,
    disable_channel,
    unsubscribe_links,
)
from hub.alerts.texts import cancel_text
from hub.core.clock import as_utc, utcnow
from hub.core.db import is_postgres, unit_of_work
from hub.core.outbox import enqueue
from hub.core.tenancy import TenantContext
from privacy.access import decrypt_rows
from privacy.purposes import declare_purpose

log = structlog.get_logger(__name__)

# Deliveries sent concurrently and recorded together.
CHUNK_SIZE = 200
# Chunks whose requests may be on the wire at once. Two keep requests flowing while the
# older chunk waits for its last responses.
CHUNKS_IN_FLIGHT = 2
MAX_ATTEMPTS = 6
# Retry delays in seconds: 2, 4, 8, ... capped at 300.
MAX_BACKOFF_SECONDS = 300
DECRYPT_PURPOSE = declare_purpose(
    "alerts.delivery",
    "Send an approved emergency alert to a subscriber's e-mail, phone or push endpoint.",
)
ENDED_STATES = (m.CANCELLED, m.SUPERSEDED, m.EXPIRED)


@dataclass(slots=True)
class Job:
    delivery_id: int
    channel: str
    channel_row_id: int
    address: str
    # Shared by every recipient of the batch who gets the same language.
    text: MessageText
    delivery_key: str
    unsubscribe_url: str | None


def _info_for(cap: CapAlert, language: str | None) -> Info | None:
    for info in cap.infos:
        if info.effective_language == language:
            return info
    return cap.infos[0] if cap.infos else None


def render_text(
    row: m.Alert, cap: CapAlert, reference: CapAlert | None, language: str | None
) -> MessageText:
    """Render the alert's text in one language, once for every recipient of that language.

    A Cancel without info blocks reuses the referenced alert's text with a cancellation
    headline in the same language. A Cancel gives its reason: the description and
    instruction of its own info block in that language, or else its `note`, which CAP gives
    in one language for the whole message. It never repeats the cancelled alert's description
    or instruction.
    """
    own = _info_for(cap, language)
    info = own
    cancelled = row.msg_type == "Cancel"
    if info is None and reference is not None:
        info = _info_for(reference, language)
    lang = info.effective_language if info else (language or "en-US")
    headline = (info.headline or info.event or "") if info else ""
    description = (info.description or "") if info else ""
    instruction = (info.instruction or "") if info else ""
    if cancelled:
        headline = f"{cancel_text(lang)}: {headline}" if headline else cancel_text(lang)
        description = (own.description if own else None) or cap.note or ""
        instruction = (own.instruction or "") if own else ""
    expires = cap.expires() or (reference.expires() if reference else None)
    return MessageText(
        alert_id=row.id,
        identifier=row.identifier,
        sender=row.sender,
        sent=format_cap_datetime(cap.sent) if cap.sent else None,
        msg_type=row.msg_type,
        references=cap.references,
        status=row.status,
        language=lang,
        event=(info.event or "") if info else "",
        severity=info.severity if info else None,
        urgency=info.urgency if info else None,
        certainty=info.certainty if info else None,
        headline=headline,
        description=description,
        instruction=instruction,
        area="; ".join(a.area_desc or "" for a in info.areas) if info else "",
        expires=expires.isoformat() if expires else None,
        web=info.web if info else None,
    )


def _drop_pending(session: Session, alert_id: str, batch: int | None, reason: str) -> int:
    query = update(m.Delivery).where(m.Delivery.alert_id == alert_id, m.Delivery.state == m.PENDING)
    if batch is not None:
        query = query.where(m.Delivery.batch == batch)
    return session.execute(query.values(state=m.DROPPED, drop_reason=reason)).rowcount or 0


def _expired(row_expires_at: Any) -> bool:
    return row_expires_at is not None and as_utc(row_expires_at) <= utcnow()


def _close_if_ended(session: Session, row: m.Alert, batch: int) -> str | None:
    """Drop the pending deliveries of an alert that may no longer be sent; return the reason.

    A cancelled or superseded alert loses this batch's pending rows (the rest go when their
    batches run). An alert past `expires` loses all of them and becomes expired.
    """
    if row.state in ENDED_STATES:
        dropped = _drop_pending(session, row.id, batch, row.state)
        DELIVERIES.labels(channel="all", outcome="dropped").inc(dropped)
        return row.state
    if _expired(row.expires_at):
        dropped = _drop_pending(session, row.id, None, m.EXPIRED)
        row.state = m.EXPIRED
        row.finished_at = utcnow()
        DELIVERIES.labels(channel="all", outcome="dropped").inc(dropped)
        log.info("alert_expired_during_fanout", alert_id=row.id, dropped=dropped)
        return m.EXPIRED
    return None


@dataclass(slots=True)
class _Pending:
    id: int
    channel: str
    channel_row_id: int
    subscriber_id: str
    languages: list[str] | None
    address_enc: bytes
    active: bool


def _any_id(session: Session, column: Any, ids: list[Any], item_type: Any) -> ColumnElement[bool]:
    """Match rows by id: one array parameter on PostgreSQL, which saves rendering and parsing
    a placeholder per id, and an IN list on SQLite, which has no arrays."""
    if is_postgres(session):
        return column == any_(bindparam(None, ids, type_=ARRAY(item_type)))
    return column.in_(ids)


def _in_batch(alert_id: str, batch: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Conditions that confine an UPDATE by delivery ids to one batch of one alert.

    They match the (tenant, alert, state, batch) index, so PostgreSQL reads only the batch's
    rows even when its statistics are stale. A fan-out inserts a million rows at once, and
    before the next ANALYZE the planner thought the table empty and scanned every pending row
    of the tenant for each chunk: about 700 deliveries/s instead of several thousand.
    """
    return m.Delivery.alert_id == alert_id, m.Delivery.batch == batch


def _pending_rows(session: Session, alert_id: str, batch: int) -> list[_Pending]:
    """Return the batch's pending deliveries with their recipients' channels and languages.

    Three queries, each by an index: the batch's deliveries, then their channels and
    subscribers by primary key. One query joining the three tables was planned as nested
    loops over the tenant's rows when the statistics were stale, and took 100 ms per batch
    of 500 on PostgreSQL 15 in a fresh database.
    """
    deliveries = session.execute(
        select(
            m.Delivery.id, m.Delivery.channel, m.Delivery.channel_row_id, m.Delivery.subscriber_id
        )
        .where(
            m.Delivery.alert_id == alert_id,
            m.Delivery.batch == batch,
            m.Delivery.state == m.PENDING,
        )
        .order_by(m.Delivery.id)
    ).all()
    if not deliveries:
        return []
    channel_ids = [d.channel_row_id for d in deliveries]
    channels = {
        row.id: row
        for row in session.execute(
            select(
                m.SubscriberChannel.id,
                m.SubscriberChannel.address_enc,
                m.SubscriberChannel.active,
            ).where(_any_id(session, m.SubscriberChannel.id, channel_ids, BigInteger))
        )
    }
    subscriber_ids = list({d.subscriber_id for d in deliveries})
    languages = {
        row.id: row.languages
        for row in session.execute(
            select(m.Subscriber.id, m.Subscriber.languages).where(
                _any_id(session, m.Subscriber.id, subscriber_ids, String)
            )
        )
    }
    pending = []
    for d in deliveries:
        channel = channels.get(d.channel_row_id)
        # A subscriber erased after the fan-out began has no channel row left, so the delivery
        # counts as inactive and is dropped like one whose resident unsubscribed.
        pending.append(
            _Pending(
                id=d.id,
                channel=d.channel,
                channel_row_id=d.channel_row_id,
                subscriber_id=d.subscriber_id,
                languages=languages.get(d.subscriber_id),
                address_enc=channel.address_enc if channel is not None else b"",
                active=channel is not None and channel.active and d.subscriber_id in languages,
            )
        )
    return pending


class _Texts:
    """Pick each recipient's text by their language preferences, rendering each language once."""

    def __init__(
        self,
        session: Session,
        row: m.Alert,
        cap: CapAlert,
        reference: CapAlert | None,
        default_language: str,
    ):
        self.row = row
        self.cap = cap
        self.reference = reference
        self.default_language = default_language
        self.infos = language_infos(session, row, cap)
        self._by_language: dict[str | None, MessageText] = {}
        self._by_preferences: dict[tuple[str, ...], MessageText] = {}

    def _text(self, language: str | None) -> MessageText:
        text = self._by_language.get(language)
        if text is None:
            text = render_text(self.row, self.cap, self.reference, language)
            self._by_language[language] = text
        return text

    def for_preferences(self, preferences: list[str] | None) -> MessageText:
        key = tuple(preferences or ())
        text = self._by_preferences.get(key)
        if text is None:
            language = None
            if self.infos:
                chosen = choose_info(self.infos, list(key), self.default_language)
                language = self.infos[chosen].effective_language
            text = self._text(language)
            self._by_preferences[key] = text
        return text


def _load_jobs(
    engine: Engine | None, ctx: TenantContext, alert_id: str, batch: int
) -> tuple[list[Job], TenantAlertSettings | None, str]:
    """Return the batch's pending jobs with decrypted addresses, or no jobs and the reason."""
    with unit_of_work(ctx, engine=engine) as session:
        row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
        if row is None:
            return [], None, "alert_not_found"
        ended = _close_if_ended(session, row, batch)
        if ended is not None:
            return [], None, ended

        pending = _pending_rows(session, alert_id, batch)
        if not pending:
            return [], None, "nothing_pending"
        inactive = [p.id for p in pending if not p.active]
        if inactive:
            session.execute(
                update(m.Delivery)
                .where(m.Delivery.id.in_(inactive))
                .values(state=m.DROPPED, drop_reason="unsubscribed")
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
        texts = _Texts(session, row, cap, reference, settings.default_language)
        base_url = settings.public_base_url
        link: Callable[[str], str] | None = (
            unsubscribe_links(base_url, row.tenant_id) if base_url else None
        )
        jobs = [
            Job(
                delivery_id=p.id,
                channel=p.channel,
                channel_row_id=p.channel_row_id,
                address=values[ADDRESS_COLUMN] or "",
                text=texts.for_preferences(p.languages),
                delivery_key=f"{alert_id}-{p.id}",
                unsubscribe_url=link(p.subscriber_id) if link else None,
            )
            for p, values in zip(active, plain, strict=True)
        ]
        return jobs, settings, "ok"


async def _send_one(
    channel: Channel, job: Job, due: float, clock: Clock, observe: Callable[[float], None]
) -> Outcome:
    wait = due - clock()
    if wait > 0:
        await asyncio.sleep(wait)
    started = time.perf_counter()
    try:
        outcome = await channel.send(job.address, job.text, job.delivery_key, job.unsubscribe_url)
    except Exception as exc:  # noqa: BLE001 - one broken address must not fail the batch
        reason = error_reason(exc)
        log.warning("alert_delivery_error", delivery_id=job.delivery_id, error=reason)
        outcome = Outcome(ok=False, transient=True, error=reason)
    observe(time.perf_counter() - started)
    return outcome


@dataclass(slots=True)
class Tally:
    """Outcomes of the deliveries a batch attempted, as they were stored."""

    sent: int = 0
    failed: int = 0
    retry: int = 0
    # (channel, error reason) -> deliveries that failed for good or wait for a retry.
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retry += other.retry
        self.errors.update(other.errors)

    def error_summary(self) -> dict[str, int]:
        """Return the failures by "channel: reason", most frequent first, for logs."""
        return {f"{channel}: {reason}": n for (channel, reason), n in self.errors.most_common()}


def _record(
    engine: Engine | None,
    ctx: TenantContext,
    alert_id: str,
    batch: int,
    results: list[tuple[Job, Outcome]],
) -> Tally:
    """Store one chunk's outcomes in one bulk UPDATE per outcome and return them counted."""
    tally = Tally()
    outcomes: Counter[tuple[str, str]] = Counter()
    sent_ids: list[int] = []
    # (error, transient, disable) -> delivery ids, so each group is one UPDATE.
    failures: defaultdict[tuple[str, bool, bool], list[Job]] = defaultdict(list)
    for job, outcome in results:
        if outcome.ok:
            sent_ids.append(job.delivery_id)
            continue
        error = (outcome.error or "error")[:64]
        failures[(error, outcome.transient, outcome.disable)].append(job)

    with unit_of_work(ctx, engine=engine) as session:
        if sent_ids:
            _store_sent(session, alert_id, batch, sent_ids, results, tally)
        for (error, transient, disable), jobs in failures.items():
            attempts = m.Delivery.attempts + 1
            # A transient failure stays pending for a retry until its last attempt.
            state: Any = m.FAILED
            if transient:
                state = case((attempts < MAX_ATTEMPTS, m.PENDING), else_=m.FAILED)
            by_id = {job.delivery_id: job for job in jobs}
            stored = session.execute(
                update(m.Delivery)
                .where(
                    *_in_batch(alert_id, batch),
                    _any_id(session, m.Delivery.id, list(by_id), BigInteger),
                    m.Delivery.state == m.PENDING,
                )
                .values(attempts=attempts, last_error=error, state=state)
                .returning(m.Delivery.id, m.Delivery.state)
                .execution_options(synchronize_session=False)
            ).all()
            for delivery_id, new_state in stored:
                job = by_id[delivery_id]
                tally.errors[(job.channel, error)] += 1
                # Counted by the stored state, so a last attempt counts as failed.
                if new_state == m.PENDING:
                    tally.retry += 1
                    outcomes[(job.channel, "retry")] += 1
                    continue
                tally.failed += 1
                outcomes[(job.channel, "failed")] += 1
                if disable:
                    disable_channel(session, ctx, job.channel_row_id, error)
    for (channel, label), count in outcomes.items():
        DELIVERIES.labels(channel=channel, outcome=label).inc(count)
    return tally


def _store_sent(
    session: Session,
    alert_id: str,
    batch: int,
    sent_ids: list[int],
    results: list[tuple[Job, Outcome]],
    tally: Tally,
) -> None:
    """Mark sent deliveries as sent, including those a Cancel, an Update or the expiry dropped
    while they were on the wire, and give a running Cancel the residents they reached.

    The UPDATE waits for a concurrent Cancel's lock on these rows. If the Cancel committed
    first, the SELECT that follows reads it and adds the residents to it. If this UPDATE
    committed first, the Cancel's own recipient query sees the rows as sent.
    """
    stored = session.execute(
        update(m.Delivery)
        .where(
            *_in_batch(alert_id, batch),
            _any_id(session, m.Delivery.id, sent_ids, BigInteger),
            m.Delivery.state.in_((m.PENDING, m.DROPPED)),
        )
        .values(
            state=m.DELIVERED,
            last_error=None,
            drop_reason=None,
            sent_at=utcnow(),
            attempts=m.Delivery.attempts + 1,
        )
        .returning(m.Delivery.id, m.Delivery.subscriber_id)
        .execution_options(synchronize_session=False)
    ).all()
    channel_of = {job.delivery_id: job.channel for job, _outcome in results}
    for channel, count in Counter(channel_of[row.id] for row in stored).items():
        DELIVERIES.labels(channel=channel, outcome="sent").inc(count)
    tally.sent += len(stored)
    if stored:
        add_cancel_recipients(session, alert_id, {row.subscriber_id for row in stored})


class _Sender:
    """Send one batch's jobs in chunks through a session, taking tokens chunk by chunk."""

    def __init__(
        self,
        engine: Engine | None,
        ctx: TenantContext,
        alert_id: str,
        batch: int,
        settings: TenantAlertSettings,
        http: aiohttp.ClientSession,
        clock: Clock,
    ):
        self.engine = engine
        self.ctx = ctx
        self.alert_id = alert_id
        self.batch = batch
        self.settings = settings
        self.clock = clock
        self.channels = build_channels(http, settings)
        self.observers = {
            name: DELIVERY_SECONDS.labels(channel=name).observe for name in self.channels
        }

    def _prepare(self, chunk: list[Job]) -> dict[str, Grant] | None:
        """Take the chunk's tokens for each channel in one transaction, or return None without
        taking any when the alert has ended (cancelled, superseded or expired)."""
        with unit_of_work(self.ctx, engine=self.engine) as session:
            alert = session.execute(
                select(m.Alert.state, m.Alert.expires_at).where(m.Alert.id == self.alert_id)
            ).one_or_none()
            if alert is None or alert.state in ENDED_STATES or _expired(alert.expires_at):
                return None
            by_channel = Counter(job.channel for job in chunk)
            return {
                channel: take_tokens(
                    session,
                    self.ctx.tenant_id,
                    channel,
                    count,
                    self.settings.rate(channel),
                    clock=self.clock,
                )
                for channel, count in by_channel.items()
            }

    async def _send_chunk(self, chunk: list[Job], grants: dict[str, Grant]) -> list[Outcome]:
        # Position of each job among the chunk's jobs on the same channel, hence in its grant.
        positions: Counter[str] = Counter()
        sends = []
        for job in chunk:
            grant = grants[job.channel]
            due = grant.taken_at + grant.delay(positions[job.channel])
            positions[job.channel] += 1
            sends.append(
                _send_one(
                    self.channels[job.channel], job, due, self.clock, self.observers[job.channel]
                )
            )
        return list(await asyncio.gather(*sends))

    async def send_all(self, jobs: list[Job]) -> tuple[int, Tally, bool]:
        """Send in chunks, with up to `CHUNKS_IN_FLIGHT` chunks on the wire at once.

        The next chunk's tokens are taken and its requests start while the previous chunk's
        last responses arrive, and a chunk's outcomes are stored while later chunks are sent.
        A killed worker therefore repeats at most CHUNKS_IN_FLIGHT + 1 chunks.

        Return (deliveries attempted, their stored outcomes, whether the alert ended).
        """
        attempted = 0
        tally = Tally()
        ended = False
        in_flight: deque[tuple[list[Job], asyncio.Task[list[Outcome]]]] = deque()
        recording: asyncio.Future[Tally] | None = None

        async def store_oldest() -> None:
            nonlocal recording
            chunk, sending = in_flight.popleft()
            outcomes = await sending
            if recording is not None:
                tally.add(await recording)
            results = list(zip(chunk, outcomes, strict=True))
            recording = asyncio.ensure_future(
                asyncio.to_thread(
                    _record, self.engine, self.ctx, self.alert_id, self.batch, results
                )
            )

        try:
            for start in range(0, len(jobs), CHUNK_SIZE):
                chunk = jobs[start : start + CHUNK_SIZE]
                grants = await asyncio.to_thread(self._prepare, chunk)
                if grants is None:
                    ended = True
                    break
                in_flight.append((chunk, asyncio.ensure_future(self._send_chunk(chunk, grants))))
                attempted += len(chunk)
                if len(in_flight) >= CHUNKS_IN_FLIGHT:
                    await store_oldest()
            while in_flight:
                await store_oldest()
        finally:
            # Only after an error: let the chunks still on the wire finish, unrecorded.
            for _chunk, sending in in_flight:
                await asyncio.gather(sending, return_exceptions=True)
            if recording is not None:
                tally.add(await recording)
            for channel in self.channels.values():
                await channel.close()
        return attempted, tally, ended


def _finish_if_done(engine: Engine | None, ctx: TenantContext, alert_id: str) -> None:
    """Give the alert its final state once no delivery is pending: sent when none failed,
    partly_failed when some failed and some were sent, failed when none was sent."""
    with unit_of_work(ctx, engine=engine) as session:
        row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
        if row is None or row.state != m.SENDING:
            return
        if _has_delivery(session, alert_id, m.PENDING):
            return
        failed = _has_delivery(session, alert_id, m.FAILED)
        if not failed:
            row.state = m.SENT
        elif _has_delivery(session, alert_id, m.DELIVERED):
            row.state = m.PARTLY_FAILED
        else:
            row.state = m.SEND_FAILED
        row.finished_at = utcnow()
        ALERTS_FINISHED.labels(kind=row.kind, state=row.state).inc()
        if failed:
            log.warning("alert_fanout_finished", alert_id=alert_id, state=row.state)
        else:
            log.info("alert_fanout_finished", alert_id=alert_id, state=row.state)


def _has_delivery(session: Session, alert_id: str, state: str) -> bool:
    # One index lookup on (tenant_id, alert_id, state), instead of counting every row.
    found = session.scalar(
        select(m.Delivery.id)
        .where(m.Delivery.alert_id == alert_id, m.Delivery.state == state)
        .limit(1)
    )
    return found is not None


def _close_after_stop(engine: Engine | None, ctx: TenantContext, alert_id: str, batch: int) -> str:
    with unit_of_work(ctx, engine=engine) as session:
        row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
        if row is None:
            return "alert_not_found"
        return _close_if_ended(session, row, batch) or "ok"


def _schedule_retry(engine: Engine | None, ctx: TenantContext, alert_id: str, batch: int) -> int:
    """Queue the batch again after a backoff that grows with its attempts; return the delay
    in seconds."""
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
            tenant_id=ctx.tenant_id,
            delay_seconds=delay,
            alert_id=alert_id,
            batch=batch,
        )
    return delay


def deliver_batch(
    alert_id: str,
    batch: int,
    tenant_id: str,
    engine: Engine | None = None,
    *,
    clock: Clock = time.time,
) -> dict:
    """Send the pending deliveries of one batch; running it again sends nothing twice.

    `clock` (seconds since the Unix epoch) paces the messages for the rate limits. A batch
    with failures logs a warning with the counts and the reasons.
    """
    ctx = TenantContext(tenant_id=tenant_id, actor="worker:alerts")
    jobs, settings, reason = _load_jobs(engine, ctx, alert_id, batch)
    attempted = 0
    tally = Tally()
    if jobs and settings is not None:
        loaded = settings

        async def send(http: aiohttp.ClientSession) -> tuple[int, Tally, bool]:
            return await _Sender(engine, ctx, alert_id, batch, loaded, http, clock).send_all(jobs)

        attempted, tally, ended = process_loop().run(send)
        if ended:
            # The rows still pending were dropped, so nothing is left to retry.
            reason = _close_after_stop(engine, ctx, alert_id, batch)
            tally.retry = 0
    retry_in = _schedule_retry(engine, ctx, alert_id, batch) if tally.retry else None
    if tally.errors:
        log.warning(
            "alert_batch_delivery_failures",
            alert_id=alert_id,
            tenant_id=tenant_id,
            batch=batch,
            sent=tally.sent,
            failed=tally.failed,
            retry=tally.retry,
            retry_in_seconds=retry_in,
            errors=tally.error_summary(),
        )
    _finish_if_done(engine, ctx, alert_id)
    return {
        "sent_or_failed": attempted - tally.retry,
        "sent": tally.sent,
        "failed": tally.failed,
        "retry": tally.retry,
        "reason": reason,
    }


def close_http() -> None:
    """Close this process's HTTP session and event loop (before a process exits)."""
    close_process_loop()
