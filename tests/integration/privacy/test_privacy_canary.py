"""Canary: personal data filed through intake appears nowhere in plaintext.

A request with unique personal values goes through the intake service and an audited staff
view. Then the raw SQLite file (with its WAL) or a PostgreSQL `pg_dump`, and every log line,
are searched for those values. The dump includes the outbox rows whose kwargs become broker
messages. On RabbitMQ a `hub worker` then relays and runs the queued tasks on a virtual host of
the test's own, and every message published to the hub exchange is captured and searched too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue, binding
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from hub.cli.serve import stop_process
from hub.core.clock import utcnow
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tasks import ALL_QUEUES
from hub.core.tenancy import SystemContext

MANIFEST = Path(__file__).resolve().parents[3] / "tenants" / "examples" / "boston.yaml"
CANARIES = {
    "first_name": "Quillonia",
    "last_name": "Vantablackwood",
    "email": "quillonia.canary7q@example.net",
    "phone": "+16175550177",
    "address": "77 Canarywood Lane",
    "description": "Canarystring Q7X3Z deep pothole",
}


# Runs in a child process so its log output is captured whole, with logging set up the way
# `hub` sets it up, and without touching the test process's logging configuration.
SCENARIO = """
import sys

from hub.core.db import get_engine, unit_of_work
from hub.core.logging import configure_logging
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import service as request_service
from hub.requests.schemas import IntakeData
from privacy.access import decrypt_fields
from tenants.manifest import load_manifest
from tenants.onboarding import onboard_manifest
from tenants.registry import get_tenant

url, tenant_id, manifest_path = sys.argv[1:4]
canaries = dict(arg.split("=", 1) for arg in sys.argv[4:])
configure_logging()
engine = get_engine(url)
manifest = load_manifest(manifest_path).model_copy(
    update={"id": tenant_id, "jurisdiction_id": tenant_id + ".example.org"}
)
with unit_of_work(SystemContext("canary"), engine=engine) as session:
    onboard_manifest(session, manifest, actor="test")
tenant = get_tenant(tenant_id, engine=engine)
ctx = TenantContext(tenant_id, actor="apikey:7", roles=frozenset({"staff"}))
data = IntakeData(service_code="REQPOTHL", lat=42.3601, lon=-71.0589, **canaries)
with unit_of_work(ctx, engine=engine) as session:
    row = request_service.submit_request(session, ctx, tenant, data)
    blobs = {"email_enc": row.email_enc, "description_enc": row.description_enc}
    row_id = row.id
with unit_of_work(ctx, engine=engine) as session:
    plain = decrypt_fields(session, ctx, "service_requests", row_id, blobs, purpose="staff.view")
assert plain["email_enc"] == canaries["email"]
engine.dispose()
"""


def run_scenario(db_url: str, tenant_id: str, extra_env: dict[str, str] | None = None) -> bytes:
    args = [f"{name}={value}" for name, value in CANARIES.items()]
    env = {**os.environ, "HUB_LOG_LEVEL": "DEBUG", **(extra_env or {})}
    result = subprocess.run(
        [sys.executable, "-c", SCENARIO, db_url, tenant_id, str(MANIFEST), *args],
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout + result.stderr


def hits(haystack: bytes) -> list[str]:
    return [name for name, value in CANARIES.items() if value.encode() in haystack]


def test_canary_absent_from_storage_and_logs(db_url):
    tenant_id = f"canary{uuid.uuid4().hex[:8]}"
    logs = run_scenario(db_url, tenant_id)
    assert b"request_submitted" in logs, "the search did not reach the logs"
    assert hits(logs) == []

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        database = Path(url.database)
        stored = b"".join(
            p.read_bytes() for p in database.parent.glob(database.name + "*") if p.is_file()
        )
    else:
        if shutil.which("pg_dump") is None:
            pytest.skip("pg_dump is not installed")
        dump = subprocess.run(
            ["pg_dump", "--data-only", "-h", url.host, "-U", url.username, url.database],
            capture_output=True,
            timeout=120,
            check=True,
        )
        stored = dump.stdout
    assert tenant_id.encode() in stored, "the search did not reach the stored rows"
    assert hits(stored) == []


CAPTURE_QUEUE = "canary_capture"
# With tracing on, RabbitMQ copies every message published in the virtual host, whatever its
# exchange, to this exchange with the routing key "publish.<exchange name>". A queue bound to the
# `hub` exchange would see nothing: with these quorum queues Celery 5.7 publishes through the
# default exchange straight to the task queue (the captured routing keys are all "publish.").
TRACE_EXCHANGE = Exchange("amq.rabbitmq.trace", type="topic", durable=True, no_declare=True)
# Bounds of the worker run: the pipeline normally settles within seconds.
SETTLE_SECONDS = 90


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@pytest.fixture
def broker_vhost(rabbitmq_url: str) -> Iterator[str]:
    """A virtual host of the test's own, so no other run's worker takes the canary's tasks."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed, so the test cannot make its own virtual host")
    vhost = f"hub_canary_{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        _rabbitmqctl("trace_on", "-p", vhost)
        yield rabbitmq_url.rstrip("/") + f"/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _capture_queue() -> Queue:
    """A queue that receives a copy of every message published in the virtual host."""
    return Queue(
        CAPTURE_QUEUE,
        bindings=[binding(TRACE_EXCHANGE, routing_key="publish.#")],
        durable=False,
        auto_delete=False,
    )


def _drain(broker_url: str) -> list[dict[str, object]]:
    captured = []
    with Connection(broker_url) as connection:
        queue = _capture_queue()(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            captured.append(
                {
                    "routing_key": message.delivery_info.get("routing_key"),
                    "body": message.body,
                    "headers": message.headers,
                }
            )
    return captured


def _waiting_outbox_rows(engine) -> int:
    with unit_of_work(SystemContext("canary test"), engine=engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None), OutboxMessage.available_at <= utcnow())
        )
    return int(count or 0)


def test_canary_absent_from_broker_messages(pg_url, broker_vhost, tmp_path):
    with Connection(broker_vhost) as connection:
        _capture_queue()(connection.default_channel).declare()
    tenant_id = f"canary{uuid.uuid4().hex[:8]}"
    env = {"HUB_DATABASE_URL": pg_url, "HUB_BROKER_URL": broker_vhost}
    scenario_logs = run_scenario(pg_url, tenant_id, env)
    engine = get_engine(pg_url)
    assert _waiting_outbox_rows(engine) > 0, "the scenario queued no task to publish"

    worker_log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "hub.cli.main", "worker", "--concurrency", "1"]
    command += ["--pool", "solo"]
    with worker_log.open("wb") as handle:
        worker = subprocess.Popen(
            command,
            env={**os.environ, **env, "HUB_LOG_LEVEL": "DEBUG"},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + SETTLE_SECONDS
            while _waiting_outbox_rows(engine) > 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            # Give the worker a moment to run what it took and relay what those tasks queued.
            time.sleep(5)
            while _waiting_outbox_rows(engine) > 0 and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            stop_process(worker, timeout=20)
    queues_after = set(
        _rabbitmqctl("list_queues", "-p", broker_vhost.rsplit("/", 1)[1], "name").split()
    )
    captured = _drain(broker_vhost)
    with unit_of_work(SystemContext("canary test"), engine=engine) as session:
        tables = set(inspect(session.connection()).get_table_names())
    dispose_engines()

    logs = scenario_logs + worker_log.read_bytes()
    messages = json.dumps(
        [{**m, "body": m["body"].decode("utf-8", "replace")} for m in captured], default=str
    ).encode()
    assert captured, "no message reached the capture queue"
    assert tenant_id.encode() in messages, "the capture did not see the canary tenant's tasks"
    assert hits(messages) == []
    assert b"task_" in logs, "the worker log holds no task events"
    assert hits(logs) == []
    # Results are not stored: the worker runs without a result backend, and after the tasks ran
    # the virtual host contains no result queue and the database no result table. The queues
    # celery_delayed_0 to 27 are Celery's native delayed delivery, holding retries' countdowns.
    other_queues = {name for name in queues_after if not name.startswith("celery_delayed_")}
    assert other_queues <= {*ALL_QUEUES, CAPTURE_QUEUE, "name"}
    assert not any(name.startswith("celery") for name in tables)
    assert re.search(rb"results:\s+disabled://", logs), "the worker has a result backend"
