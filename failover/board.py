"""The live board: every center's state in memory, reloaded from the database every second.

Routing decisions read only this board, so a decision costs microseconds and no query. Each
API process starts its own board when it starts (`start_board`). A reload reads heartbeats,
contact counts and switches every second, and centers and agreements only after one of them
changed. Between reloads a process adds its own routed contacts to the counts, so a burst
within one second does not pile onto one partner. Contacts routed by other processes appear at
the next reload, and the share cap is still enforced across processes because storing a partner
contact takes a slot in the database (`failover.store`). The reload also runs surge detection
and disaster mode per tenant, under a row lock on the tenant's switch, so several processes
share one switch.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, bindparam, case, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from failover.centers import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_TARGET_SECONDS,
    TenantOverflowConfig,
    agreement_terms,
    hours_of,
    sync_tenant_centers,
    tenant_config,
)
from failover.eligibility import (
    ALWAYS_OPEN,
    AgreementTerms,
    CenterSnapshot,
    CenterState,
    ContactTraits,
    Hours,
    share_limit,
)
from failover.hysteresis import SurgeDetector
from failover.metrics import BOARD_REFRESH, EXPECTED_WAIT, STATE, SWITCHES
from failover.models import (
    OPEN_CONTACT,
    UNAUDITED_CONTACT,
    Agreement,
    CenterHeartbeat,
    Contact,
    ContactCenter,
    OverflowSwitch,
)
from failover.routing import Decision, decide
from failover.tasks import AUDIT_DECISIONS_TASK
from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import RepeatLimiter
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_OVERFLOW
from hub.core.tenancy import SystemContext, TenantContext
from privacy.audit import audit
from tenants.models import Tenant

log = structlog.get_logger(__name__)
# While the database is down every refresh fails the same way: one line per error class per 10 s.
_refresh_failed_log = RepeatLimiter(10.0)

# A partner whose expected wait exceeds this many seconds counts as Overloaded.
PARTNER_OVERLOADED_WAIT = 120.0
REFRESH_SECONDS = 1.0
# Seconds between the background reload's reads of the last hour's statistics. They feed only
# the supervisor's view, and each read scans every contact of the hour.
STATISTICS_SECONDS = 10.0
# Shortest interval between two decision audit tasks that one process queues for one tenant.
# Each task costs the API process an outbox write and a broker publish.
AUDIT_QUEUE_SECONDS = 10.0
MONITOR_ACTOR = "system:overflow-monitor"


@dataclass
class CenterLive:
    """One center's configuration, last heartbeat and contact counts."""

    id: str
    owner_tenant_id: str | None
    name: str
    timezone: str
    agents: int
    skills: frozenset[str]
    languages: frozenset[str]
    hours: Hours
    handle_seconds: float
    max_waiting: int
    heartbeat_at: datetime | None = None
    agents_staffed: int = 0
    agents_reported_available: int = 0
    standby: bool = False
    waiting: int = 0
    claimed: int = 0
    oldest_waiting_at: datetime | None = None
    open_by_tenant: dict[str, int] = field(default_factory=dict)
    arrivals_last_5min: int = 0
    answered_last_hour: int = 0
    within_target_last_hour: int = 0
    abandoned_last_hour: int = 0

    @property
    def staffed(self) -> int:
        return self.agents_staffed if self.heartbeat_at is not None else self.agents

    @property
    def available(self) -> int:
        free = max(0, self.staffed - self.claimed)
        if self.heartbeat_at is None:
            return free
        return min(free, max(0, self.agents_reported_available))

    def expected_wait(self) -> float:
        """Estimate the seconds a new contact waits: the queue ahead of it divided by agents."""
        ahead = self.waiting - self.available + 1
        if ahead <= 0:
            return 0.0
        return ahead * self.handle_seconds / max(self.staffed, 1)

    def service_level(self) -> float | None:
        offered = self.answered_last_hour + self.abandoned_last_hour
        return self.within_target_last_hour / offered if offered else None


@dataclass
class SwitchState:
    overflow_on: bool = False
    disaster: bool = False
    expected_wait: float = 0.0
    above_since: float | None = None
    below_since: float | None = None
    changed_at: datetime | None = None


class LiveBoard:
    def __init__(self, engine: Engine, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self.centers: dict[str, CenterLive] = {}
        self.agreements: dict[str, list[AgreementTerms]] = {}
        self.tenants: dict[str, TenantOverflowConfig] = {}
        self.home_centers: dict[str, list[str]] = {}
        self.switches: dict[str, SwitchState] = {}
        self.loaded = False
        # Centers (without live figures) and agreements as of the last configuration reload,
        # and the counts and last changes of both tables that the reload saw.
        self._configuration_version: tuple[Any, ...] = ()
        self._center_configs: list[CenterLive] = []
        self._agreement_terms: dict[str, list[AgreementTerms]] = {}
        # Tenant id -> (updated_at, config): a manifest is parsed again only after it changes.
        self._tenant_configs: dict[str, tuple[datetime, TenantOverflowConfig]] = {}
        self._synced: dict[str, datetime] = {}
        # Tenant id -> monotonic time this process last queued its decision audit task.
        self._audit_queued: dict[str, float] = {}
        # Monotonic time of the last reload that read the last hour's statistics.
        self._statistics_at = -STATISTICS_SECONDS
        self._lock = threading.Lock()
        # One reload at a time: the refresh thread, API calls and `config_of` share the caches
        # a reload updates, and the contacts of a new tenant that arrive together wait for one
        # reload instead of each starting its own.
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- background refresh ---------------------------------------------------------------

    def start(self) -> None:
        """Start the refresh thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="overflow-board", daemon=True)
            self._thread.start()
        log.info("overflow_board_started", refresh_seconds=self.refresh_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        log.info("overflow_board_stopped")

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            due = time.monotonic() - self._statistics_at >= STATISTICS_SECONDS
            try:
                self.refresh(configuration=False, statistics=due)
            except Exception as exc:  # noqa: BLE001 - the board must outlive database outages
                error = type(exc).__name__
                _refresh_failed_log.log(
                    log.warning, "overflow_board_refresh_failed", key=error, error=error
                )

    def ensure_loaded(self) -> None:
        if not self.loaded:
            self.refresh()

    def config_of(self, tenant_id: str) -> TenantOverflowConfig | None:
        """Return the tenant's overflow settings. A tenant onboarded since the last reload
        reloads the board first, once for all the callers that wait for it. Return None when
        the tenant is not in the database."""
        config = self.tenants.get(tenant_id)
        if config is not None:
            return config
        with self._reload_lock:
            config = self.tenants.get(tenant_id)
            if config is None:
                self._refresh(utcnow(), evaluate=True, configuration=False, statistics=False)
                config = self.tenants.get(tenant_id)
        return config

    # --- reload ---------------------------------------------------------------------------

    def refresh(
        self,
        now: datetime | None = None,
        *,
        evaluate: bool = True,
        configuration: bool = True,
        statistics: bool = True,
    ) -> None:
        """Reload heartbeats, counts and switches, then evaluate every switch.

        The centers and agreements are reloaded when a center or agreement was added, changed
        or removed since the last reload, and always with `configuration` or on the first load.
        The tenants' own centers are synced from manifests changed since the last reload, and
        from every manifest with `configuration`. With `evaluate=False` the switches are shown
        as stored, and nothing is written. With `statistics=False` the last hour's statistics
        are kept from the previous reload.
        """
        with self._reload_lock:
            self._refresh(
                as_utc(now) if now else utcnow(),
                evaluate=evaluate,
                configuration=configuration,
                statistics=statistics,
            )

    def _refresh(
        self, now: datetime, *, evaluate: bool, configuration: bool, statistics: bool
    ) -> None:
        started = time.perf_counter()
        configuration = configuration or not self.loaded
        if evaluate and (configuration or self._manifests_changed()):
            self._sync_own_centers()
        with unit_of_work(
            SystemContext("overflow live board"), engine=self.engine, write=False
        ) as s:
            connection = s.connection()
            tenants = self._load_tenant_configs(s)
            version = tuple(connection.execute(_CONFIGURATION_VERSION).one())
            if configuration or version != self._configuration_version:
                self._configuration_version = version
                self._center_configs = [_center_live(c) for c in s.scalars(select(ContactCenter))]
                terms: dict[str, list[AgreementTerms]] = defaultdict(list)
                for row in s.scalars(select(Agreement).order_by(Agreement.id)):
                    terms[row.tenant_id].append(agreement_terms(row))
                self._agreement_terms = dict(terms)
            # Copies, because the counts below and `record_routed` change them.
            centers = {c.id: replace(c, open_by_tenant={}) for c in self._center_configs}
            agreements = self._agreement_terms
            switches: dict[str, SwitchState] = {}
            # Every API process reloads from its start, also on a hub whose tenants use no
            # overflow. Without centers there are no heartbeats, counts or switches to read, so
            # such a reload costs the version reads above and the audit probe below.
            if centers:
                switches = self._load_live_figures(connection, centers, tenants, now, statistics)
            unaudited = self._unaudited_due(connection, tenants) if evaluate else []

        home: dict[str, list[str]] = defaultdict(list)
        for center in centers.values():
            if center.owner_tenant_id is not None:
                home[center.owner_tenant_id].append(center.id)

        with self._lock:
            self.tenants = tenants
            self.centers = centers
            self.agreements = agreements
            self.home_centers = dict(home)
            self.switches = switches
            self.loaded = True
        for tenant_id, state in switches.items():
            _publish_state(tenant_id, state)

        if evaluate:
            for tenant_id in home:
                self._evaluate(tenant_id, now)
            self._queue_decision_audits(unaudited)
        for center in centers.values():
            EXPECTED_WAIT.labels(center=center.id).set(center.expected_wait())
        BOARD_REFRESH.observe(time.perf_counter() - started)

    def _load_live_figures(
        self,
        connection: Connection,
        centers: dict[str, CenterLive],
        tenants: dict[str, TenantOverflowConfig],
        now: datetime,
        statistics: bool,
    ) -> dict[str, SwitchState]:
        """Read heartbeats, contact counts and (when due) statistics into `centers`, and
        return the stored switches."""
        # The per-second reads are Core statements built once, on the session's connection:
        # through the ORM they cost several milliseconds of CPU on every reload, during
        # which the process handled no contact.
        for center_id, at, staffed, available, standby in connection.execute(_HEARTBEATS):
            center = centers.get(center_id)
            if center is not None:
                center.heartbeat_at = as_utc(at)
                center.agents_staffed = staffed
                center.agents_reported_available = available
                center.standby = standby
        switches = {row.tenant_id: _switch_state(row) for row in connection.execute(_SWITCHES)}
        _load_counts(connection, centers)
        if statistics or not self.loaded:
            _load_statistics(connection, centers, tenants, now)
            self._statistics_at = time.monotonic()
        else:
            _keep_statistics(self.centers, centers)
        return switches

    def _load_tenant_configs(self, s: Session) -> dict[str, TenantOverflowConfig]:
        configs = {}
        for tenant_id, updated_at in s.connection().execute(_TENANT_VERSIONS):
            cached = self._tenant_configs.get(tenant_id)
            if cached is None or cached[0] != updated_at:
                tenant = s.get(Tenant, tenant_id)
                if tenant is None:
                    continue
                cached = (updated_at, tenant_config(tenant))
                self._tenant_configs[tenant_id] = cached
            configs[tenant_id] = cached[1]
        return configs

    def _manifests_changed(self) -> bool:
        """Return whether the last reload saw a tenant manifest that the tenant's own centers
        were not synced from. The versions come from that reload, so the check costs no query."""
        return any(
            self._synced.get(tenant_id) != updated_at
            for tenant_id, (updated_at, _config) in self._tenant_configs.items()
        )

    def _sync_own_centers(self) -> None:
        scope = SystemContext("overflow center sync")
        with unit_of_work(scope, engine=self.engine, write=False) as s:
            stale = [
                tenant_id
                for tenant_id, updated_at in s.connection().execute(_TENANT_VERSIONS)
                if self._synced.get(tenant_id) != updated_at
            ]
        if not stale:
            return
        with unit_of_work(scope, engine=self.engine) as s:
            for tenant_id in stale:
                tenant = s.get(Tenant, tenant_id)
                if tenant is None:
                    continue
                if (tenant.manifest or {}).get("overflow", {}).get("centers"):
                    sync_tenant_centers(s, tenant)
                self._synced[tenant_id] = tenant.updated_at

    def _unaudited_due(
        self, connection: Connection, tenants: dict[str, TenantOverflowConfig]
    ) -> list[str]:
        """Return the tenants with routing decisions not audited yet whose audit task this
        process has not queued in the last `AUDIT_QUEUE_SECONDS`. The partial index on
        unaudited decisions keeps this look cheap enough for every reload."""
        now = time.monotonic()
        return [
            tenant_id
            for tenant_id in connection.scalars(_UNAUDITED)
            if tenant_id in tenants
            and now - self._audit_queued.get(tenant_id, -AUDIT_QUEUE_SECONDS) >= AUDIT_QUEUE_SECONDS
        ]

    def _queue_decision_audits(self, tenant_ids: list[str]) -> None:
        """Queue the decision audit task of each tenant in `tenant_ids`."""
        if not tenant_ids:
            return
        with unit_of_work(SystemContext("overflow audit queue"), engine=self.engine) as s:
            for tenant_id in tenant_ids:
                enqueue(s, AUDIT_DECISIONS_TASK, queue=QUEUE_OVERFLOW, tenant_id=tenant_id)
        for tenant_id in tenant_ids:
            self._audit_queued[tenant_id] = time.monotonic()

    # --- surge detection and disaster mode ------------------------------------------------

    def home_expected_wait(self, tenant_id: str, now: datetime) -> tuple[float, bool]:
        """Return the best expected wait among the tenant's reachable own centers, and whether
        every own center is unreachable (disaster mode)."""
        config = self.tenants.get(tenant_id)
        timeout = config.heartbeat_timeout if config else DEFAULT_HEARTBEAT_TIMEOUT
        waits = [
            c.expected_wait()
            for c in (self.centers[i] for i in self.home_centers.get(tenant_id, []))
            if not _unreachable(c, now, timeout)
        ]
        if not waits:
            return 0.0, True
        return min(waits), False

    def _evaluate(self, tenant_id: str, now: datetime) -> None:
        config = self.tenants.get(tenant_id)
        if config is None:
            return
        wait, disaster = self.home_expected_wait(tenant_id, now)
        current = self.switches.get(tenant_id, SwitchState())
        proposed = _next_switch(current, config, wait, disaster, now)
        if _same_switch(current, proposed):
            return

        ctx = TenantContext(tenant_id=tenant_id, actor=MONITOR_ACTOR)
        with unit_of_work(ctx, engine=self.engine) as s:
            row = _locked_switch_row(s, tenant_id)
            fresh = _switch_state(row)
            final = _next_switch(fresh, config, wait, disaster, now)
            row.overflow_on = final.overflow_on
            row.disaster = final.disaster
            row.above_since = final.above_since
            row.below_since = final.below_since
            row.expected_wait = final.expected_wait
            row.changed_at = final.changed_at
            row.updated_at = now
            for name, before, after in (
                ("overflow", fresh.overflow_on, final.overflow_on),
                ("disaster", fresh.disaster, final.disaster),
            ):
                if before != after:
                    _record_switch(s, tenant_id, name, after, wait)
        with self._lock:
            self.switches[tenant_id] = final
        _publish_state(tenant_id, final)

    # --- decisions ------------------------------------------------------------------------

    def snapshot(self, center_id: str, now: datetime) -> CenterSnapshot:
        center = self.centers[center_id]
        return CenterSnapshot(
            id=center.id,
            tenant_id=center.owner_tenant_id,
            timezone=center.timezone,
            skills=center.skills,
            languages=center.languages,
            hours=center.hours,
            state=self.state_of(center, now),
            agents=center.staffed,
            expected_wait=center.expected_wait(),
            open_by_tenant=dict(center.open_by_tenant),
        )

    def state_of(self, center: CenterLive, now: datetime) -> CenterState:
        timeout = DEFAULT_HEARTBEAT_TIMEOUT
        owner = center.owner_tenant_id
        if owner is not None and owner in self.tenants:
            timeout = self.tenants[owner].heartbeat_timeout
        if _unreachable(center, now, timeout):
            return CenterState.UNREACHABLE
        if center.standby:
            return CenterState.STANDBY
        if center.waiting >= center.max_waiting:
            return CenterState.FULL
        if owner is not None:
            overloaded = self.switches.get(owner, SwitchState()).overflow_on
        else:
            overloaded = center.expected_wait() > PARTNER_OVERLOADED_WAIT
        return CenterState.OVERLOADED if overloaded else CenterState.ACTIVE

    def decide(self, contact: ContactTraits, now: datetime) -> Decision:
        """Route one contact using only the in-memory board."""
        tenant_id = contact.tenant_id
        switch = self.switches.get(tenant_id, SwitchState())
        agreements = self.agreements.get(tenant_id, [])
        # Partners are looked at only in overflow or disaster mode; most contacts skip them.
        centers = (
            {
                a.center_id: self.snapshot(a.center_id, now)
                for a in agreements
                if a.center_id in self.centers
            }
            if switch.overflow_on or switch.disaster
            else {}
        )
        return decide(
            contact,
            home_center_id=self.pick_home(tenant_id, now),
            overflow_on=switch.overflow_on,
            disaster=switch.disaster,
            agreements=agreements,
            centers=centers,
            now=now,
        )

    def pick_home(self, tenant_id: str, now: datetime) -> str | None:
        """Return the tenant's reachable own center with the lowest expected wait."""
        ids = self.home_centers.get(tenant_id, [])
        if not ids:
            return None
        reachable = [
            self.centers[i]
            for i in ids
            if self.state_of(self.centers[i], now) != CenterState.UNREACHABLE
        ]
        if not reachable:
            return sorted(ids)[0]
        return min(reachable, key=lambda c: (c.expected_wait(), c.id)).id

    def share_limit(self, center_id: str | None, tenant_id: str, now: datetime) -> int | None:
        """Return the tenant's share cap at a partner center in open contacts, or None when
        the tenant has no agreement with it."""
        if center_id is None or center_id not in self.centers:
            return None
        for terms in self.agreements.get(tenant_id, []):
            if terms.center_id == center_id:
                return share_limit(terms, self.snapshot(center_id, now))
        return None

    def mark_share_full(self, center_id: str | None, tenant_id: str) -> None:
        """Treat the tenant's share at a partner as full until the next reload, because the
        database refused a slot that contacts routed by other processes had taken."""
        center = self.centers.get(center_id) if center_id else None
        if center is None:
            return
        with self._lock:
            center.open_by_tenant[tenant_id] = 1 << 30

    def record_routed(self, center_id: str | None, tenant_id: str) -> None:
        """Count a contact this process just routed, until the next reload."""
        center = self.centers.get(center_id) if center_id else None
        if center is None:
            return
        with self._lock:
            center.waiting += 1
            center.open_by_tenant[tenant_id] = center.open_by_tenant.get(tenant_id, 0) + 1

    def center_view(self, center_id: str, now: datetime) -> dict[str, Any]:
        """Return a center's live figures as plain data for the API and CLI."""
        center = self.centers[center_id]
        oldest = None
        if center.oldest_waiting_at is not None:
            oldest = max(0.0, (now - center.oldest_waiting_at).total_seconds())
        level = center.service_level()
        return {
            "center_id": center.id,
            "name": center.name,
            "owner_tenant_id": center.owner_tenant_id,
            "state": self.state_of(center, now).value,
            "waiting": center.waiting,
            "in_progress": center.claimed,
            "oldest_wait_seconds": None if oldest is None else round(oldest, 1),
            "arrival_rate_per_minute": round(center.arrivals_last_5min / 5, 2),
            "agents_staffed": center.staffed,
            "agents_available": center.available,
            "average_handle_seconds": center.handle_seconds,
            "expected_wait_seconds": round(center.expected_wait(), 1),
            "service_level_last_hour": None if level is None else round(level, 4),
            "last_heartbeat_at": center.heartbeat_at,
        }

    def tenant_status(
        self, tenant_id: str, routed: dict[str, int], now: datetime
    ) -> dict[str, Any]:
        """Return the supervisor view: switches, own centers and partner centers with the
        contacts routed to each (`routed`, counted by the caller over its own window)."""
        switch = self.switches.get(tenant_id)
        partners = []
        for terms in self.agreements.get(tenant_id, []):
            if terms.center_id not in self.centers:
                continue
            view = self.center_view(terms.center_id, now)
            view["agreement_id"] = terms.id
            view["data_level"] = terms.data_level
            view["routed_last_hour"] = routed.get(terms.center_id, 0)
            partners.append(view)
        home = [self.center_view(i, now) for i in self.home_centers.get(tenant_id, [])]
        return {
            "tenant_id": tenant_id,
            "overflow_on": bool(switch and switch.overflow_on),
            "disaster": bool(switch and switch.disaster),
            "home_expected_wait_seconds": switch.expected_wait if switch else 0.0,
            "switch_changed_at": isoformat(switch.changed_at) if switch else None,
            "home_centers": home,
            "partners": partners,
        }


def _center_live(row: ContactCenter) -> CenterLive:
    return CenterLive(
        id=row.id,
        owner_tenant_id=row.owner_tenant_id,
        name=row.name,
        timezone=row.timezone,
        agents=row.agents,
        skills=frozenset(row.skills or ()),
        languages=frozenset(row.languages or ()),
        hours=hours_of(row.hours) or ALWAYS_OPEN,
        handle_seconds=row.average_handle_seconds,
        max_waiting=row.max_waiting,
    )


def _unreachable(center: CenterLive, now: datetime, timeout: float) -> bool:
    if center.heartbeat_at is None:
        return True
    return (now - center.heartbeat_at).total_seconds() > timeout


CONTACTS = Contact.__table__
_TENANTS = Tenant.__table__
_TENANT_VERSIONS = select(_TENANTS.c.id, _TENANTS.c.updated_at)
_CENTERS, _AGREEMENTS = ContactCenter.__table__, Agreement.__table__
# Counts and last changes of centers and agreements: a reload parses their JSON columns and
# builds their objects again only when one of these four values moves.
_CONFIGURATION_VERSION = select(
    select(func.count()).select_from(_CENTERS).scalar_subquery(),
    select(func.max(_CENTERS.c.updated_at)).scalar_subquery(),
    select(func.count()).select_from(_AGREEMENTS).scalar_subquery(),
    select(func.max(_AGREEMENTS.c.updated_at)).scalar_subquery(),
)
_HEARTBEATS = select(
    *(
        CenterHeartbeat.__table__.c[name]
        for name in ("center_id", "at", "agents_staffed", "agents_available", "standby")
    )
)
_SWITCHES = select(OverflowSwitch.__table__)
_ANSWERED = (CONTACTS.c.state == "claimed") | (CONTACTS.c.state == "completed")
_OPEN_COUNTS = (
    select(
        CONTACTS.c.center_id,
        CONTACTS.c.tenant_id,
        CONTACTS.c.state,
        func.count(),
        func.min(CONTACTS.c.arrived_at),
    )
    .where(OPEN_CONTACT)
    .group_by(CONTACTS.c.center_id, CONTACTS.c.tenant_id, CONTACTS.c.state)
)
# One probe of the partial index per tenant, instead of a pass over every unaudited decision.
_UNAUDITED = select(_TENANTS.c.id).where(
    exists(select(CONTACTS.c.id).where(CONTACTS.c.tenant_id == _TENANTS.c.id, UNAUDITED_CONTACT))
)


@lru_cache(maxsize=16)
def _stats_statement(targets: tuple[tuple[str, float], ...]) -> Any:
    """Return the last hour's statistics per center, each contact measured against the answer
    target of the tenant it belongs to (`targets`), so a partner center that serves several
    tenants measures each contact by its own tenant's target."""
    target = (
        case(dict(targets), value=CONTACTS.c.tenant_id, else_=DEFAULT_TARGET_SECONDS)
        if targets
        else DEFAULT_TARGET_SECONDS
    )
    return (
        select(
            CONTACTS.c.center_id,
            func.sum(case((CONTACTS.c.arrived_at >= bindparam("five_ago"), 1), else_=0)),
            func.sum(case((_ANSWERED, 1), else_=0)),
            func.sum(case((_ANSWERED & (CONTACTS.c.wait_seconds <= target), 1), else_=0)),
            func.sum(case((CONTACTS.c.state == "abandoned", 1), else_=0)),
        )
        .where(CONTACTS.c.arrived_at >= bindparam("hour_ago"))
        .group_by(CONTACTS.c.center_id)
    )


def _load_counts(connection: Connection, centers: dict[str, CenterLive]) -> None:
    for center_id, tenant_id, state, count, oldest in connection.execute(_OPEN_COUNTS):
        center = centers.get(center_id)
        if center is None:
            continue
        center.open_by_tenant[tenant_id] = center.open_by_tenant.get(tenant_id, 0) + count
        if state == "waiting":
            center.waiting += count
            oldest = as_utc(oldest) if oldest else None
            if oldest and (center.oldest_waiting_at is None or oldest < center.oldest_waiting_at):
                center.oldest_waiting_at = oldest
        else:
            center.claimed += count


def _load_statistics(
    connection: Connection,
    centers: dict[str, CenterLive],
    tenants: dict[str, TenantOverflowConfig],
    now: datetime,
) -> None:
    targets = tuple(sorted((tenant_id, c.target_seconds) for tenant_id, c in tenants.items()))
    stats = connection.execute(
        _stats_statement(targets),
        {"hour_ago": now - timedelta(hours=1), "five_ago": now - timedelta(minutes=5)},
    )
    for center_id, arrivals, answered, within, abandoned in stats:
        center = centers.get(center_id)
        if center is None:
            continue
        center.arrivals_last_5min = int(arrivals or 0)
        center.answered_last_hour = int(answered or 0)
        center.within_target_last_hour = int(within or 0)
        center.abandoned_last_hour = int(abandoned or 0)


def _keep_statistics(previous: dict[str, CenterLive], centers: dict[str, CenterLive]) -> None:
    for center_id, center in centers.items():
        old = previous.get(center_id)
        if old is not None:
            center.arrivals_last_5min = old.arrivals_last_5min
            center.answered_last_hour = old.answered_last_hour
            center.within_target_last_hour = old.within_target_last_hour
            center.abandoned_last_hour = old.abandoned_last_hour


def _locked_switch_row(session: Session, tenant_id: str) -> OverflowSwitch:
    """Return the tenant's switch row locked FOR UPDATE, inserting it on first use.

    Several API processes evaluate the same tenant, so two may find no row at once. The insert
    runs in a savepoint, and the loser of that race locks the winner's row instead of failing.
    """
    query = select(OverflowSwitch).with_for_update()
    row = session.scalars(query).one_or_none()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = OverflowSwitch(tenant_id=tenant_id)
            session.add(row)
            session.flush()
        return row
    except IntegrityError:
        return session.scalars(query.execution_options(populate_existing=True)).one()


def _publish_state(tenant_id: str, state: SwitchState) -> None:
    STATE.labels(tenant=tenant_id, switch="overflow").set(1 if state.overflow_on else 0)
    STATE.labels(tenant=tenant_id, switch="disaster").set(1 if state.disaster else 0)


def _switch_state(row: OverflowSwitch) -> SwitchState:
    return SwitchState(
        overflow_on=row.overflow_on,
        disaster=row.disaster,
        expected_wait=row.expected_wait,
        above_since=row.above_since,
        below_since=row.below_since,
        changed_at=row.changed_at,
    )


def _next_switch(
    current: SwitchState,
    config: TenantOverflowConfig,
    wait: float,
    disaster: bool,
    now: datetime,
) -> SwitchState:
    detector = SurgeDetector(
        config.thresholds,
        overflow_on=current.overflow_on,
        above_since=current.above_since,
        below_since=current.below_since,
    )
    # In disaster mode `wait` is 0.0 only because no center reported one. Fed as a sample, it
    # would run the low-hold timer through the outage and switch overflow off too early.
    changed = False
    if disaster:
        detector.observe_outage()
    else:
        changed = detector.observe(now.timestamp(), wait)
    return SwitchState(
        overflow_on=detector.overflow_on,
        disaster=disaster,
        expected_wait=round(wait, 1),
        above_since=detector.above_since,
        below_since=detector.below_since,
        changed_at=now if changed or disaster != current.disaster else current.changed_at,
    )


def _same_switch(a: SwitchState, b: SwitchState) -> bool:
    # The expected wait alone changes every second; it is stored only with a timer change.
    return replace(a, expected_wait=0.0, changed_at=None) == replace(
        b, expected_wait=0.0, changed_at=None
    )


def _record_switch(s: Session, tenant_id: str, name: str, on: bool, wait: float) -> None:
    state = "on" if on else "off"
    audit(
        s,
        tenant_id=tenant_id,
        actor=MONITOR_ACTOR,
        action=f"overflow.{name}_{state}",
        details={"switch": name, "state": state, "expected_wait_seconds": round(wait, 1)},
    )
    SWITCHES.labels(tenant=tenant_id, switch=name, state=state).inc()
    log.info("overflow_switch_changed", tenant_id=tenant_id, switch=name, state=state)


_boards: dict[str, LiveBoard] = {}
_boards_lock = threading.Lock()


def _registered_board(engine: Engine) -> LiveBoard:
    key = str(engine.url)
    with _boards_lock:
        board = _boards.get(key)
        if board is None:
            board = LiveBoard(engine)
            _boards[key] = board
    return board


def get_board(engine: Engine | None = None, *, background: bool = True) -> LiveBoard:
    """Return this process's board for `engine`, loading it (and starting its thread) once."""
    board = _registered_board(engine or get_engine())
    board.ensure_loaded()
    if background:
        board.start()
    return board


def start_board(engine: Engine) -> LiveBoard:
    """Start this process's board for `engine` without waiting for its first load.

    API processes call this at start, so that the switches are evaluated every second from
    then on, and not only after the first overflow request. The refresh thread makes the first
    load, so a database that is down at start delays the board instead of failing the start.
    """
    board = _registered_board(engine)
    board.start()
    return board


def stop_board(board: LiveBoard) -> None:
    """Stop `board` and forget it, so that the next `get_board` for its engine builds a new one."""
    with _boards_lock:
        if _boards.get(str(board.engine.url)) is board:
            del _boards[str(board.engine.url)]
    board.stop()


def loaded_board(engine: Engine) -> LiveBoard | None:
    """Return this process's board for `engine` once it is loaded and refreshing, else None."""
    board = _boards.get(str(engine.url))
    if board is None or not board.loaded or board._thread is None:
        return None
    return board


def drop_boards() -> None:
    """Stop and forget every board (tests, shutdown)."""
    with _boards_lock:
        boards = list(_boards.values())
        _boards.clear()
    for board in boards:
        board.stop()
