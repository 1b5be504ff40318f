"""`hub overflow`: center states, partner onboarding, surge simulation and staffing."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import func, select

from failover.arrivals import curve_from_timestamps, load_curve_csv, scale_to_total, smooth
from failover.board import LiveBoard
from failover.centers import onboard_partner, sync_tenant_centers
from failover.erlang import agents_for_target
from failover.manifest import load_partner_manifest
from failover.models import Agreement, Contact, ContactCenter
from failover.simulation import (
    CenterSpec,
    SimulationConfig,
    SimulationResult,
    arrival_times,
    simulate,
    write_chart,
)
from hub.cli.operator import cli_actor
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, err_console, fail, table
from hub.core.clock import as_utc, utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.tenancy import SystemContext
from hub.requests.models import ServiceRequest
from tenants.models import Tenant

app = typer.Typer(help="Overflow routing to partner contact centers.", no_args_is_help=True)
partners_app = typer.Typer(help="Partner contact centers and their agreements.")
app.add_typer(partners_app, name="partners")


@app.callback()
def _configure() -> None:
    # Logs go to stderr, so `--json` output on stdout stays one clean document.
    configure_logging()


# Own traffic of partner centers in a simulation, as a share of their capacity.
DEFAULT_PARTNER_LOAD = 0.5


@app.command("status")
def status(
    tenant: str | None = typer.Option(None, "--tenant", help="Show one tenant only."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show every center's state and the overflow and disaster switches in force."""
    with cli_errors():
        upgrade()
        engine = get_engine()
        board = LiveBoard(engine)
        # Read only: the switches as the API processes last stored them.
        board.refresh(evaluate=False)
        now = utcnow()
        with unit_of_work(SystemContext("overflow status"), engine=engine, write=False) as s:
            tenant_ids = sorted(set(board.home_centers) | set(board.agreements))
            if tenant is not None:
                if s.get(Tenant, tenant) is None:
                    fail(f"tenant {tenant!r} not found; list tenants with `hub tenants list`")
                tenant_ids = [tenant]
            routed: dict[str, dict[str, int]] = {}
            rows = s.execute(
                select(Contact.tenant_id, Contact.center_id, func.count())
                .where(
                    Contact.agreement_id.is_not(None),
                    Contact.arrived_at >= now - timedelta(hours=1),
                )
                .group_by(Contact.tenant_id, Contact.center_id)
            )
            for tenant_id, center_id, count in rows:
                routed.setdefault(tenant_id, {})[center_id] = count
    data = {
        "tenants": [board.tenant_status(t, routed.get(t, {}), now) for t in tenant_ids],
        "centers": [board.center_view(c, now) for c in sorted(board.centers)],
    }
    emit(data, as_json, _render_status)


def _render_status(data: dict[str, Any]) -> None:
    table(
        "Overflow switches",
        ["tenant", "overflow", "disaster", "home wait (s)", "routed last hour"],
        [
            [
                t["tenant_id"],
                "on" if t["overflow_on"] else "off",
                "on" if t["disaster"] else "off",
                t["home_expected_wait_seconds"],
                sum(p["routed_last_hour"] for p in t["partners"]),
            ]
            for t in data["tenants"]
        ],
    )
    table(
        "Contact centers",
        ["center", "owner", "state", "waiting", "agents avail/staffed", "exp. wait (s)", "SL 1h"],
        [
            [
                c["center_id"],
                c["owner_tenant_id"] or "partner",
                c["state"],
                c["waiting"],
                f"{c['agents_available']}/{c['agents_staffed']}",
                c["expected_wait_seconds"],
                _percent(c["service_level_last_hour"]),
            ]
            for c in data["centers"]
        ],
    )


def _percent(fraction: float | None) -> str:
    """Format a share such as a service level for the table: 0.835 as 83.5%, None as empty.

    The JSON output keeps the fraction, as the API returns it."""
    return "" if fraction is None else f"{fraction:.1%}"


@partners_app.command("onboard")
def partners_onboard(
    file: Path = typer.Argument(..., help="Partner manifest (YAML) with a center and agreements."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create or update a partner center and its agreements from a manifest."""
    with cli_errors():
        manifest = load_partner_manifest(file)
        upgrade()
        with unit_of_work(SystemContext("partner onboarding"), engine=get_engine()) as session:
            result = onboard_partner(session, manifest, actor=cli_actor())
    emit(
        result,
        as_json,
        lambda r: console.print(
            f"partner center {r['center_id']} {'created' if r['created'] else 'updated'} "
            f"with {len(r['agreements'])} agreement(s): {', '.join(r['agreements'])}"
        ),
    )


@app.command("staffing")
def staffing(
    arrival_rate: float = typer.Option(..., help="Contacts per hour."),
    handle_time: float = typer.Option(..., help="Average handle time in seconds."),
    target: float = typer.Option(0.8, help="Service-level target as a fraction, such as 0.8."),
    within: float = typer.Option(30.0, help="Answer-time target in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Compute the agents needed for a service-level target with Erlang C."""
    # Checked here so that messages quote the options in the units the user gave them.
    if not arrival_rate >= 0 or math.isinf(arrival_rate):
        fail(f"--arrival-rate must be 0 or more contacts per hour, got {arrival_rate:g}")
    if not handle_time > 0 or math.isinf(handle_time):
        fail(f"--handle-time must be more than 0 seconds, got {handle_time:g}")
    if not within >= 0 or math.isinf(within):
        fail(f"--within must be 0 or more seconds, got {within:g}")
    if not 0 < target < 1:
        # Under Erlang C the service level stays below 1 for every finite number of agents,
        # so no staffing reaches a target of 1.
        fail(
            f"--target must be more than 0 and less than 1 (both bounds excluded), got {target:g}; "
            "give a fraction such as 0.8"
        )
    try:
        plan = agents_for_target(arrival_rate / 3600, handle_time, within, target)
    except ValueError as exc:
        fail(str(exc))
    data = {
        "arrival_rate_per_hour": arrival_rate,
        "handle_time_seconds": handle_time,
        "target": target,
        "within_seconds": within,
        "agents": plan.agents,
        "traffic_erlangs": round(plan.traffic_erlangs, 3),
        "service_level": round(plan.service_level, 4),
        "wait_probability": round(plan.wait_probability, 4),
        "average_speed_of_answer_seconds": round(plan.average_speed_of_answer, 1),
        "occupancy": round(plan.occupancy, 4),
    }
    emit(
        data,
        as_json,
        lambda d: table(None, ["figure", "value"], [[k, v] for k, v in d.items()]),
    )


@app.command("simulate")
def simulate_command(
    arrivals: Path | None = typer.Option(
        None, "--arrivals", help="CSV of `minute,count` contacts per minute."
    ),
    from_tenant: str | None = typer.Option(
        None, "--from-tenant", help="Build the curve from this tenant's stored requests."
    ),
    surge: float = typer.Option(4.0, min=0.01, max=100, help="Factor applied to every count."),
    tenant: str | None = typer.Option(
        None,
        "--tenant",
        help="Take centers and agreements from this tenant (default: --from-tenant).",
    ),
    agents: int | None = typer.Option(
        None, min=1, help="Home agents (default: the tenant's centers, else Erlang C at 80/30)."
    ),
    handle_time: float = typer.Option(240.0, min=1, help="Average handle time in seconds."),
    partner_agents: list[int] = typer.Option(
        [],
        "--partner-agents",
        min=1,
        help="Agents of one simulated partner, at least 1 (repeat for several).",
    ),
    partner_load: float = typer.Option(
        DEFAULT_PARTNER_LOAD, min=0, max=0.99, help="Partners' own traffic as a share of capacity."
    ),
    daily_total: float | None = typer.Option(
        None, min=1, help="Scale the curve to this many contacts before the surge factor."
    ),
    chart: Path | None = typer.Option(None, "--chart", help="Write a PNG chart to this path."),
    seed: int = typer.Option(311, help="Random seed, for repeatable runs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay an arrival curve times a surge factor, with and without overflow."""
    if (arrivals is None) == (from_tenant is None):
        fail("give exactly one of --arrivals FILE or --from-tenant ID")
    if chart is not None:
        _check_chart_path(chart)
    with cli_errors():
        source: dict[str, Any]
        if arrivals is not None:
            try:
                curve = load_curve_csv(arrivals)
            except ValueError as exc:
                fail(str(exc))
            source = {"arrivals": str(arrivals)}
        else:
            curve, source = _tenant_curve(from_tenant or "")
        if daily_total is not None:
            curve = scale_to_total(curve, daily_total)
        config = _config(
            tenant or from_tenant, curve, agents, handle_time, partner_agents, partner_load, seed
        )

    times = arrival_times(curve, surge, seed)
    runs: dict[str, SimulationResult] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        for overflow in (False, True):
            label = "with overflow" if overflow else "without overflow"
            task = progress.add_task(f"simulating {label}", total=len(times))
            runs[label] = simulate(
                config,
                times,
                overflow=overflow,
                progress=lambda done, t=task: progress.update(t, completed=done),
            )
    without, with_overflow = runs["without overflow"], runs["with overflow"]
    if chart is not None:
        try:
            write_chart(without, with_overflow, str(chart), f"Surge x{surge:g}")
        except OSError as exc:
            fail(
                f"could not write the chart to {chart} ({exc.strerror or exc}); "
                "check that the folder is writable or pass another --chart path"
            )
    data = {
        "curve_source": source,
        "surge": surge,
        "contacts": len(times),
        "home_agents": config.home.agents,
        "partners": {p.id: p.agents for p in config.partners},
        "without_overflow": without.as_dict(),
        "with_overflow": with_overflow.as_dict(),
        "chart": str(chart) if chart else None,
    }
    emit(data, as_json, _render_simulation)


def _check_chart_path(chart: Path) -> None:
    """Reject a --chart path that cannot take a file before the simulation runs."""
    if chart.is_dir():
        fail(
            f"--chart {chart} is a folder; give the path of a PNG file, "
            f"such as {chart / 'surge.png'}"
        )
    if not chart.parent.is_dir():
        fail(
            f"--chart {chart}: the folder {chart.parent} does not exist; "
            "create it first or pass a path in an existing folder"
        )


def _render_simulation(data: dict[str, Any]) -> None:
    rows = []
    for key in ("without_overflow", "with_overflow"):
        run = data[key]
        rows.append(
            [
                key.replace("_", " "),
                run["offered"],
                _percent(run["service_level"]),
                _percent(run["abandon_rate"]),
                run["longest_wait_seconds"],
                ", ".join(f"{k}: {v}" for k, v in run["routed"].items()) or "-",
                ", ".join(f"{k}: {v:.0%}" for k, v in run["partner_utilization"].items()) or "-",
            ]
        )
    table(
        f"Surge x{data['surge']:g}, {data['contacts']} contacts, {data['home_agents']} home agents",
        [
            "run",
            "offered",
            "service level",
            "abandoned",
            "longest wait (s)",
            "routed",
            "partner use",
        ],
        rows,
    )
    source = data["curve_source"]
    if "tenant" in source:
        console.print(
            f"curve from {source['requests']} requests of tenant {source['tenant']} on "
            f"{source['days']} days, {source['first_day']} to {source['last_day']} "
            "(the tenant's local dates)",
            highlight=False,
            markup=False,
        )
    if data["chart"]:
        console.print(f"chart written to {data['chart']}")


def _tenant_curve(tenant_id: str) -> tuple[list[float], dict[str, Any]]:
    """Return the tenant's mean arrival curve over the days of its stored requests, and what it
    was built from: the request count and the first and last day, in the tenant's zone."""
    # A new database has no tables yet; migrated, it reports the tenant as not found.
    upgrade()
    with unit_of_work(SystemContext("simulation curve"), engine=get_engine(), write=False) as s:
        tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            fail(f"tenant {tenant_id!r} not found; list tenants with `hub tenants list`")
        zone = ZoneInfo(tenant.timezone)
        stamps = [
            as_utc(ts).astimezone(zone)
            for ts in s.scalars(
                select(ServiceRequest.requested_at).where(ServiceRequest.tenant_id == tenant_id)
            )
        ]
    if not stamps:
        fail(
            f"tenant {tenant_id!r} has no stored requests to build a curve from; "
            "import some with `hub import` or pass --arrivals FILE"
        )
    source = {
        "tenant": tenant_id,
        "requests": len(stamps),
        "first_day": min(stamps).date().isoformat(),
        "last_day": max(stamps).date().isoformat(),
        "days": len({stamp.date() for stamp in stamps}),
    }
    return smooth(curve_from_timestamps(stamps), 31), source


def _config(
    tenant_id: str | None,
    curve: list[float],
    agents: int | None,
    handle_time: float,
    partner_agents: list[int],
    partner_load: float,
    seed: int,
) -> SimulationConfig:
    partners: list[CenterSpec] = [
        CenterSpec(f"partner-{i + 1}", n, handle_time, own_utilization=partner_load)
        for i, n in enumerate(partner_agents)
    ]
    home_agents = agents
    if tenant_id is not None:
        with unit_of_work(SystemContext("simulation setup"), engine=get_engine()) as s:
            tenant = s.get(Tenant, tenant_id)
            if tenant is None:
                fail(f"tenant {tenant_id!r} not found; list tenants with `hub tenants list`")
            sync_tenant_centers(s, tenant)
            s.flush()
            own = s.scalars(
                select(ContactCenter).where(ContactCenter.owner_tenant_id == tenant_id)
            ).all()
            if home_agents is None and own:
                home_agents = sum(c.agents for c in own)
            if not partners:
                rows = s.execute(
                    select(ContactCenter, Agreement)
                    .join(Agreement, Agreement.center_id == ContactCenter.id)
                    .where(Agreement.tenant_id == tenant_id, Agreement.active.is_(True))
                ).all()
                partners = [
                    CenterSpec(
                        c.id,
                        c.agents,
                        c.average_handle_seconds,
                        own_utilization=partner_load,
                        cost_weight=a.cost_weight,
                        share_cap=a.share_cap,
                    )
                    for c, a in rows
                ]
    if home_agents is None:
        # Staff the home center for the normal day's busiest minute at 80% within 30 s.
        home_agents = agents_for_target(max(curve) / 60, handle_time, 30, 0.8).agents
    return SimulationConfig(
        home=CenterSpec("home", home_agents, handle_time), partners=tuple(partners), seed=seed
    )
