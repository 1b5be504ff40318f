"""The overflow step of `hub demo`: a surge on Boston's contact center, replayed on a clock.

The step onboards the example partner centers, then replays the 40 minutes that end at the
last weekday 11:00 in Boston, when the partner centers are open: a demo run at night or at the
weekend shows the same surge. Boston's center loses its free agents for a quarter of an hour
while contacts keep arriving, so overflow switches on after the hold time and partners take and
finish contacts. Once Boston's agents are back and its queue is worked off, overflow switches
off again. The replay uses the same live board, routing and contact services as the API, with
the board's clock set to each simulated 10 seconds, so the demo takes seconds, not 40 minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub.cli.demo.context import DemoContext
from hub.cli.output import table
from hub.core.clock import utcnow
from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_AGENT, ROLE_PARTNER_AGENT, SystemContext, TenantContext

SURGE_TENANT = "boston"
SURGE_TIMEZONE = ZoneInfo("America/New_York")
# The replay ends at this local hour on the last weekday, inside the partners' opening hours.
REPLAY_END_HOUR = 11
MINUTES = 40
SURGE_MINUTES = range(5, 20)
CONTACTS_PER_MINUTE = 6
# Contacts each partner finishes per simulated minute.
PARTNER_PACE = 8


def overflow_step(ctx: DemoContext) -> dict[str, Any] | None:
    from failover.board import LiveBoard
    from failover.centers import onboard_partner
    from failover.manifest import load_partner_manifest
    from failover.models import Contact, ContactCenter
    from failover.service import Caller, NewContact, record_heartbeat, route_contact
    from tenants.models import Tenant

    examples = sorted((_examples_dir()).glob("*.yaml"))
    with unit_of_work(SystemContext("demo overflow"), engine=ctx.engine) as session:
        if session.get(Tenant, SURGE_TENANT) is None:
            return None
        for path in examples:
            onboard_partner(session, load_partner_manifest(path), actor="cli:demo")

    board = LiveBoard(ctx.engine)
    board.refresh()
    home_ids = board.home_centers.get(SURGE_TENANT, [])
    if not home_ids:
        return None
    home = board.centers[home_ids[0]]
    partners = [c for c in board.centers.values() if c.owner_tenant_id is None]
    agent = Caller(TenantContext(SURGE_TENANT, actor="cli:demo", roles=frozenset({ROLE_AGENT})))
    groups = sorted(home.skills) or ["general"]

    start = replay_end(utcnow()) - timedelta(minutes=MINUTES)
    switches: list[dict[str, Any]] = []
    last = (False, False)
    for minute in range(MINUTES):
        now = start + timedelta(minutes=minute)
        surge = minute in SURGE_MINUTES
        # Centers send a heartbeat every 10 seconds, well inside the 30-second timeout.
        for second in range(0, 60, 10):
            at = now + timedelta(seconds=second)
            with unit_of_work(SystemContext("demo heartbeats"), engine=ctx.engine) as session:
                for center in [home, *partners]:
                    staffed = center.agents
                    available = 0 if (surge and center is home) else staffed
                    beat_caller = _center_caller(center.id, home.id)
                    record_heartbeat(
                        session,
                        beat_caller,
                        center.id,
                        agents_staffed=staffed,
                        agents_available=available,
                        now=at,
                    )
            board.refresh(now=at)
        state = board.switches.get(SURGE_TENANT)
        current = (bool(state and state.overflow_on), bool(state and state.disaster))
        if current != last:
            switches.append({"minute": minute, "overflow_on": current[0]})
            last = current

        arrivals = CONTACTS_PER_MINUTE * (3 if surge else 1)
        for index in range(arrivals):
            with unit_of_work(agent.ctx, engine=ctx.engine) as session:
                route_contact(
                    session,
                    agent,
                    board,
                    NewContact(
                        channel="call", language="en", service_group=groups[index % len(groups)]
                    ),
                    now=now + timedelta(seconds=index * 60 / arrivals),
                )
        _work_contacts(ctx, board, home.id, partners, surge, now, Contact)

    with unit_of_work(SystemContext("demo summary"), engine=ctx.engine, write=False) as session:
        rows = session.execute(
            select(Contact.center_id, Contact.agreement_id).where(
                Contact.tenant_id == SURGE_TENANT, Contact.arrived_at >= start
            )
        ).all()
        names = {c.id: c.name for c in session.scalars(select(ContactCenter))}
    routed: dict[str, int] = {}
    for center_id, agreement_id in rows:
        key = center_id if agreement_id else "home"
        routed[key] = routed.get(key, 0) + 1
    return {
        "tenant": SURGE_TENANT,
        "minutes": MINUTES,
        "contacts": len(rows),
        "switches": switches,
        "routed": routed,
        "partners": {p.id: names.get(p.id, p.id) for p in partners},
    }


def replay_end(now: datetime) -> datetime:
    """Return the last weekday `REPLAY_END_HOUR`:00 in Boston at or before `now`, in UTC."""
    local = now.astimezone(SURGE_TIMEZONE)
    day = local.date()
    while True:
        end = datetime(day.year, day.month, day.day, REPLAY_END_HOUR, tzinfo=SURGE_TIMEZONE)
        if end.weekday() < 5 and end <= local:
            return end.astimezone(now.tzinfo)
        day -= timedelta(days=1)


def _work_contacts(ctx, board, home_id, partners, surge, now, contact_model) -> None:
    """Let agents claim and finish contacts: partners at their pace, home when not in surge."""
    from failover.service import claim_contact, complete_contact

    pace = {p.id: PARTNER_PACE for p in partners}
    if not surge:
        pace[home_id] = 10_000
    for center_id, limit in pace.items():
        with unit_of_work(SystemContext("demo agents"), engine=ctx.engine) as session:
            ids = list(
                session.scalars(
                    select(contact_model.id)
                    .where(contact_model.center_id == center_id, contact_model.state == "waiting")
                    .order_by(contact_model.arrived_at)
                    .limit(limit)
                )
            )
        is_partner = center_id != home_id
        for contact_id in ids:
            caller = _center_caller(center_id, home_id)
            scope = SystemContext("demo agent") if is_partner else caller.ctx
            with unit_of_work(scope, engine=ctx.engine) as session:
                claim_contact(session, caller, contact_id, now=now + timedelta(seconds=50))
                complete_contact(
                    session, caller, contact_id, outcome="resolved", now=now + timedelta(seconds=55)
                )


def _examples_dir():
    from pathlib import Path

    import failover

    return Path(failover.__file__).resolve().parent / "examples"


def render_overflow(section: dict[str, Any]) -> None:
    switches = ", ".join(
        f"{'on' if s['overflow_on'] else 'off'} at minute {s['minute']}"
        for s in section["switches"]
    )
    rows = [[center, count] for center, count in sorted(section["routed"].items())]
    table(
        f"Overflow surge on {section['tenant']}: {section['contacts']} contacts in "
        f"{section['minutes']} minutes; overflow {switches or 'never switched'}",
        ["center", "contacts routed"],
        rows,
    )


def _center_caller(center_id: str, home_id: str) -> Any:
    """Return the caller that acts for a center in the replay: an agent of the surge tenant
    at its home center, a partner agent at a partner center."""
    from failover.service import Caller

    if center_id == home_id:
        roles = frozenset({ROLE_AGENT})
        return Caller(TenantContext(SURGE_TENANT, actor=f"demo:{center_id}", roles=roles))
    roles = frozenset({ROLE_PARTNER_AGENT})
    return Caller(TenantContext(SURGE_TENANT, actor=f"demo:{center_id}", roles=roles), center_id)
