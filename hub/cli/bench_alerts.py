"""`hub bench alerts`: targeting time and webhook delivery rate of an alert fan-out.

The benchmark creates a fresh PostgreSQL database, subscribes N generated residents around
lower Manhattan (one place and one webhook address each, encrypted as in production), then:

1. targets a polygon covering most of them (the query `hub alerts send` runs);
2. runs a plain aiohttp loop against a minimal local receiver (the ceiling);
3. fans the alert out with the hub's batch task in worker processes against the same receiver
   and reports deliveries per second, time until the last delivery and the ratio to step 2;
4. runs the plain loop again, because other load on the machine changes its rate, and divides
   by the higher of the two baseline rates.

The receiver runs in its own process on 127.0.0.1. Batches run in `--workers` processes that
call the task body (`fanout.deliver_batch`) directly, so the figures leave out broker latency
(a few milliseconds per batch of 500). The worker processes start, import the hub and connect
to the database before the clock starts, as Celery worker processes have done before a batch
arrives. The database is dropped at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import random
import time
import uuid
from typing import Any

import typer
from rich.progress import Progress
from sqlalchemy import insert, select, text
from sqlalchemy.exc import OperationalError

from hub.cli.bench_support import create_database, drop_database
from hub.cli.output import JSON_OPTION, cli_errors, emit, err_console, fail, table
from hub.core.migrate import upgrade

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Residents are spread over this box (lower Manhattan and parts of Brooklyn and Jersey City).
BOX = ((40.60, 40.85), (-74.10, -73.85))
# The alert polygon: most of the box.
POLYGON = [(40.62, -74.08), (40.62, -73.87), (40.83, -73.87), (40.83, -74.08), (40.62, -74.08)]
BASELINE_CONCURRENCY = 100
WORKER_START_SECONDS = 60


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


def _baseline(url: str, total: int) -> tuple[float, float]:
    """Return requests/s of a plain aiohttp loop posting a typical alert body, and the CPU
    seconds of this process per request.

    It runs on the same event loop implementation as the workers (uvloop where installed).
    """
    from hub.alerts.httploop import new_event_loop

    cpu_started = time.process_time()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        rate = runner.run(_baseline_loop(url, total))
    return rate, (time.process_time() - cpu_started) / total


async def _baseline_loop(url: str, total: int) -> float:
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
    # VACUUM and CHECKPOINT now, so autovacuum and the checkpointer do not take CPU time from
    # the measured part of the run.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        conn.execute(text("CHECKPOINT"))


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


def _worker(url: str, tenant_id: str, alert_id: str, ready: Any, orders: Any, done: Any) -> None:
    """Warm up like a running Celery worker process, then run the batches sent on `orders`."""
    from hub.alerts import fanout
    from hub.alerts.httploop import process_loop
    from hub.core.db import get_engine

    _quiet_logging()
    engine = get_engine(url)
    with engine.connect():
        pass
    process_loop()
    ready.set()
    batches = orders.get()
    delivered = 0
    cpu_started = time.process_time()
    for batch in batches:
        result = fanout.deliver_batch(alert_id, batch, tenant_id, engine=engine)
        delivered += result["sent_or_failed"]
    done.put((delivered, time.process_time() - cpu_started))
    fanout.close_http()


def _start_workers(
    context: Any, workers: int, url: str, tenant_id: str, alert_id: str
) -> tuple[list[Any], list[Any], Any]:
    """Start the worker processes and wait until each is warm; return them, their order
    queues and the queue they report on."""
    done = context.Queue()
    orders = [context.Queue() for _ in range(workers)]
    ready = [context.Event() for _ in range(workers)]
    processes = [
        context.Process(target=_worker, args=(url, tenant_id, alert_id, ready[i], orders[i], done))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for number, event in enumerate(ready):
        if not event.wait(WORKER_START_SECONDS):
            fail(f"worker process {number} did not start within {WORKER_START_SECONDS} s")
    return processes, orders, done


def _wait_for_workers(
    processes: list[Any], done: Any, count_value: Any, before: int, total: int
) -> tuple[int, float]:
    """Show progress until every worker reports that its batches are done; return the
    deliveries the workers attempted and the CPU seconds they used."""
    finished = 0
    attempted = 0
    cpu_seconds = 0.0
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("delivering", total=total)
        while finished < len(processes):
            try:
                count, cpu = done.get(timeout=0.5)
                finished += 1
                attempted += count
                cpu_seconds += cpu
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    fail("a worker process exited before its batches were done; see its error")
            progress.update(task, completed=count_value.value - before)
    return attempted, cpu_seconds


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
    # The receiver listens on 127.0.0.1, so the worker processes, which inherit this
    # environment, must allow loopback addresses for residents' webhooks.
    os.environ["HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE"] = "true"
    context = multiprocessing.get_context("spawn")
    port_value = context.Value("i", 0)
    count_value = context.Value("q", 0)
    ready = context.Event()
    receiver = context.Process(target=_receiver, args=(port_value, count_value, ready))
    receiver.start()
    url = None
    processes: list[Any] = []
    figures: dict[str, Any] = {"subscribers": subscribers}
    with cli_errors():
        try:
            ready.wait(30)
            hook = f"http://127.0.0.1:{port_value.value}"
            url = create_database(admin_url, prefix="hub_bench_alerts")
            upgrade(url)
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

            processes, orders, done = _start_workers(context, workers, url, tenant_id, alert_id)
            baseline_before, client_cpu_before = _baseline(f"{hook}/baseline", baseline_requests)

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
            send_started = time.perf_counter()
            for number, order_queue in enumerate(orders):
                order_queue.put(batches[number::workers])
            attempted, worker_cpu = _wait_for_workers(processes, done, count_value, before, total)
            sending = time.perf_counter() - send_started
            figures["time_to_last_delivery_seconds"] = round(time.perf_counter() - started, 2)
            delivered = count_value.value - before
            for process in processes:
                process.join(30)

            baseline_after, client_cpu_after = _baseline(f"{hook}/baseline", baseline_requests)
            baseline = max(baseline_before, baseline_after)
            figures["baseline_before_per_second"] = round(baseline_before)
            figures["baseline_after_per_second"] = round(baseline_after)
            figures["deliveries"] = delivered
            figures["delivery_seconds"] = round(sending, 2)
            figures["deliveries_per_second"] = round(delivered / sending) if sending else 0
            figures["ratio_to_baseline"] = round(figures["deliveries_per_second"] / baseline, 3)
            # CPU time varies less than rates when other programs share the machine.
            figures["worker_cpu_us_per_delivery"] = round(1e6 * worker_cpu / max(attempted, 1))
            figures["baseline_client_cpu_us_per_request"] = round(
                1e6 * (client_cpu_before + client_cpu_after) / 2
            )
        except OperationalError as exc:
            fail(f"database error during the benchmark: {exc.orig}; check that PostgreSQL is up")
        finally:
            for process in [*processes, receiver]:
                if process.is_alive():
                    process.kill()
                process.join(10)
            if url is not None:
                drop_database(admin_url, url)

    def render(data: dict[str, Any]) -> None:
        table("hub bench alerts", ["figure", "value"], [[k, v] for k, v in data.items()])

    emit(figures, as_json, render)
