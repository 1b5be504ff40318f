"""Micro-benchmark of the intake write path: CPU time per request of `write_batch` in one
thread, and the routing messages the outbox relay publishes for it.

`hub bench intake` measures the whole server, where the machine's other processes move the
figures from run to run. This measures the part that batches of POSTs share, with the
request bodies of the benchmark, on a new PostgreSQL database that it creates and drops:

    python -m loadtests.micro_intake [--batches 200] [--batch-size 14] [--rounds 3]

It prints one JSON line per round: CPU and wall milliseconds per request, and the messages
the relay published for the round's batches. The first round runs after a warm-up of 20
batches and `ANALYZE`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from urllib.parse import parse_qsl

from hub.cli import bench_intake
from hub.cli.bench_support import create_database, drop_database
from hub.core.db import dispose_engines, get_engine
from hub.core.outbox import OutboxItem, relay_once
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from hub.open311.intake import write_batch
from hub.open311.router import intake_data
from hub.requests import service
from hub.requests.schemas import IntakeJob
from tenants.registry import get_tenant

WARMUP_BATCHES = 20


def _jobs(tenant_id: str, bodies: list[str]) -> list[IntakeJob]:
    ctx = TenantContext(tenant_id=tenant_id, actor="apikey:bench")
    jobs = []
    for body in bodies:
        items = parse_qsl(body)
        jobs.append(
            IntakeJob(
                ctx=ctx,
                data=intake_data(items, api_key_id=None),
                request_hash=service.body_hash(items),
                language="en",
            )
        )
    return jobs


def _round(tenant, jobs: list[IntakeJob], batches: int, size: int) -> dict[str, float]:
    started_cpu, started = time.thread_time(), time.perf_counter()
    for number in range(batches):
        first = (number * size) % (len(jobs) - size)
        outcomes = write_batch(tenant, jobs[first : first + size])
        failed = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        if failed:
            raise RuntimeError(f"a benchmark request failed: {failed[0]!r}")
    cpu, wall = time.thread_time() - started_cpu, time.perf_counter() - started
    published: list[OutboxItem] = []
    while relay_once(published.append):
        pass
    requests = batches * size
    return {
        "requests": requests,
        "cpu_ms_per_request": round(1000 * cpu / requests, 3),
        "wall_ms_per_request": round(1000 * wall / requests, 3),
        "relay_messages": len(published),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="batches per round")
    parser.add_argument("--batch-size", type=int, default=14, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--admin-url", default=bench_intake.DEFAULT_ADMIN_URL)
    options = parser.parse_args(argv)

    url = create_database(options.admin_url)
    # The writes and the relay use the default engine, which the settings point at `url`.
    os.environ["HUB_DATABASE_URL"] = url
    reset_settings_cache()
    try:
        _jurisdiction, _key, bodies = bench_intake.prepare_tenant(url)
        tenant = get_tenant("boston", engine=get_engine(url))
        jobs = _jobs(tenant.id, bodies)
        _round(tenant, jobs, WARMUP_BATCHES, options.batch_size)
        bench_intake.analyze(url)
        for _ in range(options.rounds):
            print(json.dumps(_round(tenant, jobs, options.batches, options.batch_size)))
    finally:
        dispose_engines()
        drop_database(options.admin_url, url)


if __name__ == "__main__":
    main()
