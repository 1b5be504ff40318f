"""`hub bench alerts`: targeting time and webhook delivery rate of an alert fan-out.

The benchmark creates a fresh PostgreSQL database, subscribes N generated residents around
lower Manhattan (one place and one webhook address each, encrypted as in production), then:

1. targets a polygon covering most of them (the query `hub alerts send` runs);
2. runs a plain aiohttp loop against a minimal local receiver (the ceiling);
3. fans the alert out with the hub's batch task in worker processes against the same receiver
   and reports deliveries per second, time until the last delivery and the ratio to step 2.

The receiver runs in its own process on 127.0.0.1. Batches run in `--workers` processes that
call the task body directly, so the figures leave out broker latency (a few milliseconds per
batch of 500). The database is dropped at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from typing import Any

import typer
from rich.progress import Progress
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import OperationalError

from hub.cli.output import JSON_OPTION, cli_errors, emit, err_console, fail, table

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Residents are spread over this box (lower Manhattan and parts of Brooklyn and Jersey City).
BOX = ((40.60, 40.85), (-74.10, -73.85))
# The alert polygon: most of the box.
POLYGON = [(40.62, -74.08), (40.62, -73.87), (40.83, -73.87), (40.83, -74.08), (40.62, -74.08)]
BASELINE_CONCURRENCY = 100


def _receiver(port_value: Any, count_value: Any, ready: Any) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        with count_value.get_lock():
            count_value.value += 1
        return web.Response(status=200)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_value.value = site._server.sockets[0].getsockname()[1]
        ready.set()
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())


async def _baseline(url: str, total: int) -> float:
    """Return requests/s of a plain aiohttp loop posting a typical alert body."""
    import aiohttp

    body = b'{"alert_id":"BENCH","headline":"Hurricane warning","language":"en-US"}' * 4
    connector = aiohttp.TCPConnector(limit=BASELINE_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(_: int) -> None:
            async with http.post(url, data=body) as response:
                await response.read()

        started = time.perf_counter()
        for start in range(0, total, 1000):
            await asyncio.gather(*(post(i) for i in range(start, min(start + 1000, total))))
        return total / (time.perf_counter() - started)


def _create_database(admin_url: str) -> str:
    from hub.core.migrate import upgrade

    name = f"hub_bench_alerts_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return url


def _drop_database(admin_url: str, url: str) -> None:
    from hub.core.db import dispose_engines

    dispose_engines()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def _add_tenant(engine: Any, tenant_id: str) -> None:
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from privacy.keys import create_tenant_keys
    from tenants.models import Tenant

    alerts = {"rate_limits": {"webhook": 1_000_000.0}}
    with unit_of_work(SystemContext("alerts benchmark"), engine=engine) as session:
        session.add(
            Tenant(
                id=tenant_id,
                jurisdiction_id=f"{tenant_id}.bench.invalid",
                name="Alerts benchmark",
                timezone="America/New_York",
                languages=["en", "es"],
                default_language="en",
                region=None,
                manifest={"alerts": alerts},
            )
        )
        session.flush()
        create_tenant_keys(session, tenant_id)


def _subscribe(
    engine: Any, tenant_id: str, count: int, active: int, url: str, progress: Any
) -> None:
    """Insert residents with core inserts (the import path, without its per-record checks).

    Only the first `active` residents get an active webhook channel.
    """
    from hub.alerts import models as m
    from hub.alerts.cells import place_cells
    from hub.alerts.subscriptions import (
        ADDRESS_COLUMN,
        ADDRESS_TABLE,
        channel_address_id,
        hash_token,
    )
    from hub.core.clock import utcnow
    from hub.core.db import unit_of_work
    from hub.core.tenancy import TenantContext
    from privacy.fields import FieldCipher

    rng = random.Random(42)
    ctx = TenantContext(tenant_id, actor="bench")
    task = progress.add_task("subscribing residents", total=count)
    chunk = 10_000
    now = utcnow()
    for start in range(0, count, chunk):
        with unit_of_work(ctx, engine=engine) as session:
            cipher = FieldCipher.for_tenant(session, tenant_id)
            subscribers, channels, cells = [], [], []
            for number in range(start, min(start + chunk, count)):
                subscriber_id = f"B{number:015d}"
                lat = rng.uniform(*BOX[0])
                lon = rng.uniform(*BOX[1])
                fine, medium, coarse = place_cells(lat, lon)
                subscribers.append(
                    {
                        "id": subscriber_id,
                        "tenant_id": tenant_id,
                        "languages": ["es"] if number % 4 == 0 else ["en"],
                        "test_opt_in": False,
                        "consent_at": now,
                        "unsubscribe_hash": hash_token(subscriber_id),
                        "active": True,
                        "source": "bench",
                        "created_at": now,
                    }
                )
                address = cipher.encrypt(
                    ADDRESS_TABLE,
                    ADDRESS_COLUMN,
                    channel_address_id(subscriber_id, "webhook"),
                    f"{url}/r{number}",
                )
                channels.append(
                    {
                        "tenant_id": tenant_id,
                        "subscriber_id": subscriber_id,
                        "channel": "webhook",
                        "address_enc": address,
                        "dek_version": cipher.dek_version,
                        "active": number < active,
                    }
                )
                cells.append(
                    {
                        "tenant_id": tenant_id,
                        "subscriber_id": subscriber_id,
                        "cell_fine": fine,
                        "cell_medium": medium,
                        "cell_coarse": coarse,
                    }
                )
            session.execute(insert(m.Subscriber), subscribers)
            session.execute(insert(m.SubscriberChannel), channels)
            session.execute(insert(m.SubscriberCell), cells)
        progress.advance(task, len(subscribers))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def _compose_and_approve(engine: Any, tenant_id: str) -> str:
    from datetime import UTC, datetime, timedelta

    from hub.alerts import workflow
    from hub.alerts.cap.model import Alert, Area, Info
    from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, TenantContext

    sent = datetime.now(UTC).replace(microsecond=0)
    info = Info(
        language="en-US",
        categories=["Met"],
        event="Hurricane",
        urgency="Immediate",
        severity="Extreme",
        certainty="Likely",
        expires=sent + timedelta(hours=6),
        headline="Hurricane warning",
        areas=[Area(area_desc="Benchmark area", polygons=[POLYGON])],
    )
    cap = Alert(
        identifier=f"BENCH-{uuid.uuid4().hex[:8]}",
        sender="bench@hub.invalid",
        sent=sent,
        status="Actual",
        msg_type="Alert",
        scope="Public",
        infos=[info],
    )
    roles = frozenset({ROLE_EMERGENCY_MANAGER})
    ctx = TenantContext(tenant_id, actor="cli:bench", roles=roles)
    [row] = workflow.compose(engine, ctx, cap)
    workflow.approve(engine, ctx, row["id"])
    return row["id"]


def _quiet_logging() -> None:
    from hub.core.logging import configure_logging
    from hub.core.settings import get_settings

    configure_logging(get_settings().model_copy(update={"log_level": "WARNING"}), force=True)


def _worker(url: str, tenant_id: str, alert_id: str, batches: list[int]) -> None:
    from hub.alerts import fanout
    from hub.core.db import get_engine

    _quiet_logging()
    engine = get_engine(url)
    for batch in batches:
        fanout.deliver_batch(alert_id, batch, tenant_id, engine=engine)
    fanout.close_thread_session()


def alerts(
    subscribers: int = typer.Option(
        100_000, "--subscribers", min=1_000, max=5_000_000, help="Residents to subscribe."
    ),
    deliver: int = typer.Option(
        0,
        "--deliver",
        min=0,
        help="Residents with an active webhook channel (the first N generated); 0: all.",
    ),
    workers: int = typer.Option(2, min=1, max=32, help="Worker processes running batches."),
    baseline_requests: int = typer.Option(
        50_000, min=1_000, max=1_000_000, help="Requests of the plain aiohttp loop."
    ),
    admin_url: str = typer.Option(
        DEFAULT_ADMIN_URL,
        "--admin-url",
        help="PostgreSQL URL used to create and drop the database.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure targeting time and webhook deliveries/s of an alert fan-out."""
    from hub.alerts import models as m
    from hub.alerts import service
    from hub.alerts.cap.model import Area
    from hub.alerts.cells import area_cells
    from hub.alerts.policy import load_settings
    from hub.alerts.targeting import subscriber_ids_in
    from hub.core.db import get_engine, unit_of_work
    from hub.core.tenancy import TenantContext

    _quiet_logging()
    context = multiprocessing.get_context("spawn")
    port_value = context.Value("i", 0)
    count_value = context.Value("q", 0)
    ready = context.Event()
    receiver = context.Process(target=_receiver, args=(port_value, count_value, ready))
    receiver.start()
    url = None
    figures: dict[str, Any] = {"subscribers": subscribers}
    with cli_errors():
        try:
            ready.wait(30)
            hook = f"http://127.0.0.1:{port_value.value}"
            url = _create_database(admin_url)
            engine = get_engine(url)
            tenant_id = "bench-alerts"
            _add_tenant(engine, tenant_id)
            with Progress(console=err_console, transient=True) as progress:
                active = deliver or subscribers
                _subscribe(engine, tenant_id, subscribers, active, hook, progress)
            alert_id = _compose_and_approve(engine, tenant_id)
            ctx = TenantContext(tenant_id, actor="cli:bench")

            with unit_of_work(ctx, engine=engine, write=False) as session:
                cells = area_cells(Area(area_desc="bench", polygons=[POLYGON]), {})
                started = time.perf_counter()
                targeted = subscriber_ids_in(session, cells)
                figures["targeting_seconds"] = round(time.perf_counter() - started, 3)
            figures["targeted"] = len(targeted)
            figures["area_cells"] = len(cells)

            figures["baseline_per_second"] = round(
                asyncio.run(_baseline(f"{hook}/baseline", baseline_requests))
            )

            before = count_value.value
            started = time.perf_counter()
            with unit_of_work(ctx, engine=engine) as session:
                row = service.get_alert(session, alert_id)
                total = service.start_sending(
                    session, row, load_settings(session, tenant_id), actor="cli:bench"
                )
            figures["fanout_setup_seconds"] = round(time.perf_counter() - started, 2)
            with unit_of_work(ctx, engine=engine, write=False) as session:
                batches = sorted(
                    set(
                        session.scalars(
                            select(m.Delivery.batch).where(m.Delivery.alert_id == alert_id)
                        )
                    )
                )
            shares = [batches[i::workers] for i in range(workers)]
            processes = [
                context.Process(target=_worker, args=(url, tenant_id, alert_id, share))
                for share in shares
            ]
            send_started = time.perf_counter()
            for process in processes:
                process.start()
            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("delivering", total=total)
                while any(p.is_alive() for p in processes):
                    progress.update(task, completed=count_value.value - before)
                    time.sleep(0.5)
            sending = time.perf_counter() - send_started
            delivered = count_value.value - before
            figures["deliveries"] = delivered
            figures["delivery_seconds"] = round(sending, 2)
            figures["time_to_last_delivery_seconds"] = round(time.perf_counter() - started, 2)
            figures["deliveries_per_second"] = round(delivered / sending) if sending else 0
            figures["ratio_to_baseline"] = round(
                figures["deliveries_per_second"] / figures["baseline_per_second"], 3
            )
        except OperationalError as exc:
            fail(f"database error during the benchmark: {exc.orig}; check that PostgreSQL is up")
        finally:
            receiver.kill()
            receiver.join(10)
            if url is not None:
                _drop_database(admin_url, url)

    def render(data: dict[str, Any]) -> None:
        table("hub bench alerts", ["figure", "value"], [[k, v] for k, v in data.items()])

    emit(figures, as_json, render)
