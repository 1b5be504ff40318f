"""`hub bench overflow`: routing decisions through the API, and the simulation's wall time.

The hub runs with `hub serve` on a loopback port against PostgreSQL (a fresh database the
benchmark creates and drops, or HUB_DATABASE_URL), with the three example tenants, 20 contact
centers and 50 agreements. A separate process sends contacts at a fixed rate (open loop), so a
slow answer does not slow the offered load. The in-process decision time on the same board, and
the wall time to simulate a day of 277,000 contacts, are measured in this process.

Run as `python -m hub.cli.bench_overflow PLAN.json`, this module is the load generator.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import random
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.progress import Progress
from sqlalchemy import select

from hub.cli.bench_http import ConnectionPool, ResponseError, encode_json_post
from hub.cli.bench_intake import DEFAULT_ADMIN_URL, start_bench_server
from hub.cli.bench_support import (
    create_database,
    drop_database,
    percentile,
    run_load_process,
    server_environment,
    wait_until_serving,
)
from hub.cli.demo.pipeline import free_port
from hub.cli.output import JSON_OPTION, cli_errors, emit, err_console, fail, table
from hub.cli.serve import stop_process
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.settings import get_settings
from hub.core.tenancy import ROLE_AGENT, SystemContext, TenantContext

CENTERS = 20
AGREEMENTS = 50
RECORD_DAY_CONTACTS = 277_000
# NYC 311's usual day was about 98,000 contacts in 2023; the home center is staffed for it.
NORMAL_DAY_CONTACTS = 98_000
SERVER_START_SECONDS = 60.0
HEARTBEAT_SECONDS = 5.0


def overflow(
    rate: float = typer.Option(200.0, min=1, max=5000, help="Contacts offered per second."),
    duration: float = typer.Option(15.0, min=1, max=300, help="Seconds of measured load."),
    processes: int = typer.Option(2, min=1, max=32, help="uvicorn worker processes."),
    contacts: int = typer.Option(
        RECORD_DAY_CONTACTS, min=1000, max=2_000_000, help="Contacts in the simulated day."
    ),
    admin_url: str = typer.Option(
        DEFAULT_ADMIN_URL,
        "--admin-url",
        help="PostgreSQL URL used to create and drop the benchmark database "
        "when HUB_DATABASE_URL is not set.",
    ),
    broker_url: str = typer.Option(
        "",
        "--broker-url",
        help="Broker for the API's outbox relay, such as amqp://guest:guest@127.0.0.1:5672/bench "
        "(default: HUB_BROKER_URL, else the embedded SQLite broker).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print routing decisions/s and p99 through the API, and the simulation wall time."""
    # Warnings only, on stderr: the figures go to stdout and the per-contact events would flood it.
    configure_logging(get_settings().model_copy(update={"log_level": "WARNING"}), force=True)
    configured = get_settings().database_url
    if configured and not configured.startswith("postgresql"):
        fail("HUB_DATABASE_URL is not PostgreSQL; unset it (a fresh database is created)")
    created = None
    with cli_errors():
        database_url = configured or create_database(admin_url)
        created = None if configured else database_url
    try:
        figures = _run(database_url, rate, duration, processes, broker_url)
    finally:
        if created is not None:
            drop_database(admin_url, created)
    figures["simulation"] = _simulation_figures(contacts)
    figures["settings"] = {
        "rate": rate,
        "duration_seconds": duration,
        "processes": processes,
        "broker": (
            "given" if broker_url or get_settings().broker_url else "embedded, scratch directory"
        ),
        "centers": CENTERS,
        "agreements": AGREEMENTS,
        "cpus": os.cpu_count(),
    }
    emit(figures, as_json, _render)


def _prepare(database_url: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Onboard the examples, 17 partners and 50 agreements; return request bodies and centers."""
    from failover.board import LiveBoard
    from failover.centers import onboard_partner
    from failover.manifest import parse_partner_manifest
    from failover.models import OverflowSwitch
    from tenants.keys import create_api_key
    from tenants.manifest import example_paths, load_manifest
    from tenants.onboarding import onboard

    upgrade(database_url)
    engine = get_engine(database_url)
    manifests = [load_manifest(p) for p in example_paths()]
    plans: list[dict[str, Any]] = []
    skills: set[str] = set()
    with unit_of_work(SystemContext("bench setup"), engine=engine) as session:
        for manifest in manifests:
            tenant, _ = onboard(session, manifest, actor="cli:bench")
            ctx = TenantContext(tenant.id, actor="cli:bench")
            _, key = create_api_key(session, ctx, roles=[ROLE_AGENT], label="bench overflow")
            groups = [s for c in manifest.overflow.centers for s in c.skills] or ["general"]
            skills.update(groups)
            plans.append({"tenant": tenant.id, "key": key, "groups": groups})
    LiveBoard(engine).refresh()  # copies the tenants' own centers from their manifests

    tenant_ids = [p["tenant"] for p in plans]
    partner_count = CENTERS - len(tenant_ids)
    remaining = AGREEMENTS
    partner_ids = []
    with unit_of_work(SystemContext("bench setup"), engine=engine) as session:
        for index in range(partner_count):
            share = min(len(tenant_ids), remaining - (partner_count - index - 1))
            agreements = [
                {"tenant": tenant_ids[(index + k) % len(tenant_ids)], "data_level": "minimal"}
                for k in range(max(1, share))
            ]
            remaining -= len(agreements)
            center_id = f"bench-partner-{index + 1:02d}"
            manifest = parse_partner_manifest(
                {
                    "center": {
                        "id": center_id,
                        "name": f"Bench partner {index + 1}",
                        "timezone": "America/Chicago",
                        "agents": 50,
                        "skills": sorted(skills),
                        "languages": ["en", "es", "zh"],
                    },
                    "agreements": agreements,
                }
            )
            onboard_partner(session, manifest, actor="cli:bench")
            partner_ids.append(center_id)
        # The first tenant is in a surge for the whole run, so its contacts go to partners.
        switch = session.scalars(
            select(OverflowSwitch).where(OverflowSwitch.tenant_id == tenant_ids[0])
        ).one_or_none()
        if switch is None:
            switch = OverflowSwitch(tenant_id=tenant_ids[0])
            session.add(switch)
        switch.overflow_on = True

    bodies = []
    rng = random.Random(7)
    for i in range(2000):
        plan = plans[i % len(plans)]
        bodies.append(
            {
                "key": plan["key"],
                "tenant": plan["tenant"],
                "body": {
                    "channel": "call",
                    "language": rng.choice(["en", "es"]),
                    "service_group": rng.choice(plan["groups"]),
                },
            }
        )
    return bodies, partner_ids


def _heartbeats(database_url: str, stop: threading.Event) -> None:
    """Keep every center reachable while the benchmark runs, as real centers would."""
    from failover.models import CenterHeartbeat, ContactCenter
    from hub.core.clock import utcnow

    engine = get_engine(database_url)
    while not stop.is_set():
        with unit_of_work(SystemContext("bench heartbeats"), engine=engine) as session:
            for center in session.scalars(select(ContactCenter)).all():
                beat = session.get(CenterHeartbeat, center.id) or CenterHeartbeat(
                    center_id=center.id
                )
                beat.at = utcnow()
                # Home centers report one busy agent, so the surge tenant stays in overflow.
                beat.agents_staffed = 1 if center.owner_tenant_id else center.agents
                beat.agents_available = 0 if center.owner_tenant_id else center.agents
                beat.standby = False
                session.add(beat)
        stop.wait(HEARTBEAT_SECONDS)


def _run(
    database_url: str, rate: float, duration: float, processes: int, broker_url: str
) -> dict[str, Any]:
    bodies, _partners = _prepare(database_url)
    stop = threading.Event()
    beats = threading.Thread(target=_heartbeats, args=(database_url, stop), daemon=True)
    beats.start()
    port = free_port()
    with server_environment(database_url, broker_url) as env:
        server = start_bench_server("hub", port, processes, env)
        try:
            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("overflow benchmark", total=3)
                wait_until_serving(port, server, seconds=SERVER_START_SECONDS)
                progress.advance(task)
                url = f"http://127.0.0.1:{port}/api/v1/overflow/contacts"
                _load({"url": url, "bodies": bodies, "rate": rate, "duration_seconds": 3})
                progress.advance(task)
                plan = {"url": url, "bodies": bodies, "rate": rate, "duration_seconds": duration}
                api = _measured_load(server.pid, plan)
                progress.advance(task)
        finally:
            stop_process(server)
            stop.set()
            beats.join(10)
        bare = _bare_figures(bodies, rate, duration, processes, env)
    return {
        "api": api,
        "bare": bare,
        "decision": _decision_figures(database_url, bodies),
    }


def _bare_figures(
    bodies: list[dict[str, Any]], rate: float, duration: float, processes: int, env: dict[str, str]
) -> dict[str, Any]:
    """Drive a bare FastAPI endpoint on the same path, under the same uvicorn settings, with
    the same generator: the latency this machine adds before the hub does any work."""
    port = free_port()
    server = start_bench_server("bare", port, processes, env)
    try:
        wait_until_serving(port, server, seconds=SERVER_START_SECONDS)
        url = f"http://127.0.0.1:{port}/api/v1/overflow/contacts"
        _load({"url": url, "bodies": bodies, "rate": rate, "duration_seconds": 3})
        plan = {"url": url, "bodies": bodies, "rate": rate, "duration_seconds": duration}
        bare = _measured_load(server.pid, plan)
    finally:
        stop_process(server)
    bare.pop("decisions", None)
    return bare


def _measured_load(pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    """Run the load of `plan` and add the server's CPU time per successful response."""
    cpu_before = _tree_cpu_seconds(pid)
    figures = _load(plan)
    cpu = _tree_cpu_seconds(pid) - cpu_before
    if cpu_before >= 0 and figures["ok"]:
        figures["server_cpu_ms_per_contact"] = round(cpu * 1000 / figures["ok"], 2)
    return figures


def _tree_cpu_seconds(pid: int) -> float:
    """Return the user and system CPU seconds of `pid` and its descendants, from /proc.

    Other programs on the machine do not count, so the figure varies less than the latency.
    Returns -1 where /proc is missing (not Linux).
    """
    stats: dict[int, tuple[int, float]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return -1.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process exited meanwhile
        # After the command name: state, ppid, ..., utime and stime are the 12th and 13th.
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    tree, total = {pid}, 0.0
    for _ in range(4):  # four levels reach uvicorn's workers; threads count in their process
        tree |= {child for child, (parent, _cpu) in stats.items() if parent in tree}
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


def _load(plan: dict[str, Any]) -> dict[str, Any]:
    return run_load_process("hub.cli.bench_overflow", plan)


def _decision_figures(database_url: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Time the routing decision alone on a board loaded with the benchmark's centers."""
    from failover.board import LiveBoard
    from failover.eligibility import ContactTraits
    from hub.core.clock import utcnow

    board = LiveBoard(get_engine(database_url))
    board.refresh()
    traits = [
        ContactTraits(b["tenant"], "call", b["body"]["language"], b["body"]["service_group"])
        for b in bodies[:30]
    ]
    now = utcnow()
    samples = []
    for i in range(20_000):
        started = time.perf_counter()
        board.decide(traits[i % len(traits)], now)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return {
        "decisions": len(samples),
        "p50_us": round(percentile(samples, 0.5) * 1e6, 1),
        "p99_us": round(percentile(samples, 0.99) * 1e6, 1),
        "decisions_per_second": round(len(samples) / sum(samples), 0),
    }


def _day_curve(total: float) -> list[float]:
    """Return a smooth synthetic day: low at night, a morning rise and an afternoon peak."""
    shape = [
        0.2
        + math.exp(-(((m - 11 * 60) / 180) ** 2))
        + 0.8 * math.exp(-(((m - 15 * 60) / 150) ** 2))
        for m in range(1440)
    ]
    factor = total / sum(shape)
    return [s * factor for s in shape]


def _simulation_figures(contacts: int) -> dict[str, Any]:
    from failover.erlang import agents_for_target
    from failover.simulation import CenterSpec, SimulationConfig, arrival_times, simulate

    handle = 240.0
    normal = _day_curve(NORMAL_DAY_CONTACTS)
    home_agents = agents_for_target(max(normal) / 60, handle, 30, 0.8).agents
    config = SimulationConfig(
        home=CenterSpec("home", home_agents, handle),
        partners=tuple(
            CenterSpec(f"partner-{i}", home_agents // 2, handle, own_utilization=0.5)
            for i in range(1, 5)
        ),
    )
    times = arrival_times(_day_curve(contacts), 1.0, seed=311)
    started = time.perf_counter()
    result = simulate(config, times, overflow=True)
    wall = time.perf_counter() - started
    return {
        "contacts": len(times),
        "wall_seconds": round(wall, 2),
        "home_agents": home_agents,
        "service_level": round(result.service_level, 4),
        "routed": sum(result.routed.values()),
    }


def _render(figures: dict[str, Any]) -> None:
    api, bare, decision = figures["api"], figures["bare"], figures["decision"]
    sim = figures["simulation"]
    rows = [
        ["offered rate (contacts/s)", figures["settings"]["rate"]],
        ["answered decisions/s (API)", api["requests_per_second"]],
        [
            "p50 / p99 latency from scheduled send (ms)",
            f"{api['p50_ms']} / {api['p99_ms']}",
        ],
        ["p99 latency from the actual send (ms)", api["p99_from_send_ms"]],
        [
            "bare FastAPI endpoint, same load: p50 / p99 (ms)",
            f"{bare['p50_ms']} / {bare['p99_ms']}",
        ],
        [
            "server CPU per contact, API / bare endpoint (ms)",
            f"{api.get('server_cpu_ms_per_contact', 'n/a')}"
            f" / {bare.get('server_cpu_ms_per_contact', 'n/a')}",
        ],
        ["errors", sum(api["errors"].values())],
        ["late sends (generator behind > 5 ms)", api["late"]],
        [
            "decisions by target:reason",
            ", ".join(f"{key} {count}" for key, count in api.get("decisions", {}).items()),
        ],
        ["in-process decision p50 / p99 (µs)", f"{decision['p50_us']} / {decision['p99_us']}"],
        [f"simulate {sim['contacts']} contacts (s)", sim["wall_seconds"]],
        ["simulated service level with overflow", sim["service_level"]],
    ]
    table("hub bench overflow", ["figure", "value"], rows)


# --- load generator (run in its own process) --------------------------------------------------


async def _generate(plan: dict[str, Any]) -> dict[str, Any]:
    rate, duration = plan["rate"], plan["duration_seconds"]
    url = urlsplit(plan["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = [
        encode_json_post(
            url.path,
            item["body"],
            host=url.netloc,
            headers={"Authorization": f"Bearer {item['key']}"},
        )
        for item in plan["bodies"]
    ]
    total = int(rate * duration)
    latencies: list[float] = []
    # The same responses timed from when the request was written, not from when it was due:
    # the difference is the generator's own lateness in waking up to send.
    from_send: list[float] = []
    errors: dict[str, int] = {}
    targets: dict[str, int] = {}
    late = 0
    pool = ConnectionPool(host, port)

    async def send(raw: bytes, due: float) -> None:
        # Latency counts from the scheduled send time, so a generator that falls behind
        # does not hide the delay (coordinated omission).
        sent = time.perf_counter()
        try:
            status, body = await pool.request(raw)
        except (OSError, ResponseError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        answered = time.perf_counter()
        latencies.append(answered - due)
        from_send.append(answered - sent)
        if status >= 400:
            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
            return
        decision = json.loads(body)
        key = f"{decision['target']}:{decision['reason']}"
        targets[key] = targets.get(key, 0) + 1

    # The collector stays off while the generator runs: a full collection over thousands of
    # request tasks stalled it for tens of milliseconds, and every response due in that time
    # counted the stall as the server's latency. The run is bounded, and so is what it keeps.
    gc.collect()
    gc.disable()
    begin = time.perf_counter()
    tasks = []
    for i in range(total):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        tasks.append(asyncio.create_task(send(requests[i % len(requests)], due)))
    await asyncio.gather(*tasks)
    gc.enable()
    elapsed = time.perf_counter() - begin
    pool.close()

    ordered = sorted(latencies)
    ok = len(latencies) - sum(v for k, v in errors.items() if k.startswith("HTTP"))
    return {
        "sent": total,
        "ok": ok,
        "errors": errors,
        "late": late,
        "decisions": dict(sorted(targets.items())),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
        "p99_from_send_ms": round(percentile(sorted(from_send), 0.99) * 1000, 2),
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        plan = json.load(handle)
    # uvloop (installed with uvicorn) wakes the sender on time more reliably than the default
    # loop, so less of the generator's own lateness lands in the figures.
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_generate(plan))
    else:
        result = uvloop.run(_generate(plan))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
