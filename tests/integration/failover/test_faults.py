"""Fault tests on the real services: RabbitMQ stopped during intake, a worker killed with
SIGKILL inside a task, PostgreSQL restarted under load.

Every test restores the service it stops in a `finally` block, and every wait is bounded.
The processes under test are `hub serve` and `hub worker` on loopback ports, with a RabbitMQ
virtual host of their own so no other consumer takes their messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from open311_support import TenantKeys, onboard_tenant, pothole_form
from overflow_support import auth, onboard_overflow_tenant
from sqlalchemy import create_engine, func, select, text

from hub.cli.demo.pipeline import free_port
from hub.cli.serve import stop_process
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.settings import Settings
from hub.core.tenancy import SystemContext
from hub.requests.models import RequestToken, ServiceRequest
from hub.worker.app import create_celery

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

PG_CLUSTER = ("15", "main")
AUDIT_LOCK_CLASS = 311_0003  # the advisory lock class privacy.audit takes per chain


@dataclass
class Faults:
    database_url: str
    broker_url: str
    env: dict[str, str]
    logs: Path


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.2)


def status_of(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=3).status_code
    except httpx.HTTPError:
        return None


def readiness_of(port: int) -> dict:
    """Return the `/readyz` body, or a status of "no answer" when the API does not respond."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return {"status": "no answer"}


def spawn(args: list[str], faults: Faults, name: str) -> subprocess.Popen[bytes]:
    log = (faults.logs / f"{name}.log").open("ab")
    command = [sys.executable, "-m", "hub.cli.main", *args]
    # A session of its own lets a test kill the worker and its pool children together.
    return subprocess.Popen(
        command, env=faults.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def start_api(faults: Faults) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    api = spawn(["serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"], faults, "api")
    wait_for(lambda: status_of(f"http://127.0.0.1:{port}/healthz") == 200, 60, "the API")
    return api, port


@pytest.fixture(scope="module")
def faults(
    pg_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Faults]:
    for tool in ("rabbitmqctl", "pg_ctlcluster", "pg_isready"):
        if shutil.which(tool) is None:
            reason = f"{tool} is not installed; the fault tests stop and start the services with it"
            if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
    vhost = f"hub_faults_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker_url = rabbitmq_url.rstrip("/") + f"/{vhost}"
        # Declare the hub's queues first, so messages published before any worker starts are
        # kept in them rather than dropped as unroutable.
        app = create_celery(Settings(broker_url=broker_url, database_url=pg_url))
        with app.connection_for_write() as connection:
            for queue in app.conf.task_queues:
                queue.bind(connection.default_channel).declare()
        env = {
            **os.environ,
            "HUB_DATABASE_URL": pg_url,
            "HUB_BROKER_URL": broker_url,
            "HUB_OUTBOX_POLL_SECONDS": "0.2",
        }
        yield Faults(pg_url, broker_url, env, tmp_path_factory.mktemp("fault-logs"))
    finally:
        rabbitmqctl("delete_vhost", vhost)


def post_request(port: int, tenant: TenantKeys) -> tuple[int, str | None, str | None]:
    """POST one Open311 request; return the status, the request id and the token."""
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/open311/v2/requests.json",
            data=pothole_form(tenant),
            timeout=30,
        )
    except httpx.HTTPError:
        return 0, None, None
    if response.status_code >= 300:
        return response.status_code, None, None
    item = response.json()[0]
    return response.status_code, item.get("service_request_id"), item.get("token")


def post_contact(port: int, agent_key: str) -> tuple[int, str | None]:
    """POST one overflow contact; return the status and the contact id."""
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/overflow/contacts",
            json={"channel": "call", "language": "en", "service_group": "streets"},
            headers=auth(agent_key),
            timeout=30,
        )
    except httpx.HTTPError:
        return 0, None
    if response.status_code >= 300:
        return response.status_code, None
    return response.status_code, response.json()["contact_id"]


def drain_route_messages(broker_url: str, queue_name: str = "intake") -> list[str]:
    """Take every message off a queue; return the request ids of the routing tasks."""
    app = create_celery(Settings(broker_url=broker_url))
    queue = next(q for q in app.conf.task_queues if q.name == queue_name)
    ids = []
    with app.connection_for_write() as connection:
        bound = queue.bind(connection.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            _args, kwargs, _embed = message.decode()
            ids.append(kwargs.get("request_id"))
    return ids


def test_rabbitmq_outage_loses_no_request(faults: Faults) -> None:
    engine = get_engine(faults.database_url)
    tenant = onboard_tenant(engine, f"rmq-{uuid.uuid4().hex[:8]}")
    api, port = start_api(faults)
    accepted: list[str] = []
    tokens: list[str] = []
    try:
        for _ in range(5):
            status, request_id, _token = post_request(port, tenant)
            assert status == 201
            accepted.append(request_id)

        try:
            rabbitmqctl("stop_app")
            wait_for(
                lambda: readiness_of(port)["status"] == "degraded",
                30,
                "/readyz to report the broker down",
            )
            # The API still serves Open311, so a load balancer keeps it: 200, degraded.
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert response.status_code == 200
            readiness = response.json()
            assert readiness["checks"]["broker"].startswith("failed")
            assert readiness["checks"]["database"] == "ok"
            for _ in range(5):
                status, request_id, token = post_request(port, tenant)
                assert status in (200, 201, 202)
                if request_id:
                    accepted.append(request_id)
                else:
                    tokens.append(token)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")

        wait_for(lambda: readiness_of(port)["status"] == "ready", 60, "/readyz to recover")

        def backlog() -> int:
            with unit_of_work(SystemContext("test read"), engine=engine) as session:
                return session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(
                        OutboxMessage.tenant_id == tenant.id, OutboxMessage.published_at.is_(None)
                    )
                )

        wait_for(lambda: backlog() == 0, 60, "the relay to publish the outbox backlog")
    finally:
        stop_process(api)

    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        for token in tokens:
            row = session.get(RequestToken, token)
            assert row is not None and row.request_id is not None
            accepted.append(row.request_id)
        stored = set(
            session.scalars(select(ServiceRequest.id).where(ServiceRequest.tenant_id == tenant.id))
        )
    assert len(accepted) == 10
    assert set(accepted) == stored
    delivered = Counter(i for i in drain_route_messages(faults.broker_url) if i in stored)
    assert set(delivered) == stored
    assert max(delivered.values()) == 1


def test_worker_sigkill_mid_task_completes_once(faults: Faults) -> None:
    from failover.models import Contact
    from privacy.models import AuditEntry

    engine = get_engine(faults.database_url)
    tenant = onboard_overflow_tenant(engine, f"kil-{uuid.uuid4().hex[:8]}")
    api, port = start_api(faults)
    worker_args = ["worker", "--queues", "overflow", "--concurrency", "1", "--no-relay"]
    worker = spawn(worker_args, faults, "worker1")
    holder = create_engine(faults.database_url).connect()
    replacement = None
    try:
        # Load the API's live board first: its switch evaluation writes audit entries too.
        status = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/overflow/status",
            headers=auth(tenant.supervisor),
            timeout=30,
        )
        assert status.status_code == 200
        time.sleep(1.5)
        # Hold the tenant's audit chain lock, so the audit task blocks inside its transaction.
        holder.execute(
            text("SELECT pg_advisory_lock(:c, hashtext(:t))"),
            {"c": AUDIT_LOCK_CLASS, "t": tenant.id},
        )
        holder.commit()
        status_code, contact_id = post_contact(port, tenant.agent)
        assert status_code == 201

        def task_blocked() -> bool:
            waiting = holder.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'"
                )
            ).scalar()
            holder.commit()
            return bool(waiting)

        wait_for(task_blocked, 60, "the audit task to start and wait on the chain lock")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
        holder.commit()

        replacement = spawn(worker_args, faults, "worker2")

        def audited() -> bool:
            with unit_of_work(SystemContext("test read"), engine=engine) as session:
                return bool(session.get(Contact, contact_id).decision_audited)

        wait_for(audited, 90, "the redelivered task to finish after the restart")
    finally:
        holder.close()
        for process in (worker, replacement, api):
            if process is not None and process.poll() is None:
                stop_process(process)

    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        entries = session.scalars(
            select(AuditEntry).where(
                AuditEntry.tenant_id == tenant.id, AuditEntry.action == "overflow.route"
            )
        ).all()
    assert worker.returncode == -signal.SIGKILL
    assert len(entries) == 1
    assert entries[0].details["contact_id"] == contact_id


def pg_ready() -> bool:
    result = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True, timeout=10
    )
    return result.returncode == 0


def test_postgres_restart_answers_503_never_false_201(faults: Faults) -> None:
    from failover.models import Contact

    engine = get_engine(faults.database_url)
    tenant = onboard_tenant(engine, f"pgr-{uuid.uuid4().hex[:8]}")
    # Contacts take a transaction of one round trip (`execute_in_one_round_trip`), which
    # handles a lost server on its own instead of through a session.
    overflow_tenant = onboard_overflow_tenant(engine, f"pgc-{uuid.uuid4().hex[:8]}")
    api, port = start_api(faults)
    results: list[tuple[int, str | None, str | None]] = []
    contacts: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def poster() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            results.append(post_request(port, tenant))
            contacts.append(post_contact(port, overflow_tenant.agent))
            time.sleep(0.02)

    thread = threading.Thread(target=poster, daemon=True)
    try:
        thread.start()
        time.sleep(1.0)
        try:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "restart"],
                check=True,
                capture_output=True,
                timeout=120,
            )
        finally:
            if not pg_ready():
                subprocess.run(
                    ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "start"],
                    capture_output=True,
                    timeout=120,
                )
            wait_for(pg_ready, 90, "PostgreSQL to accept connections again")
        wait_for(
            lambda: status_of(f"http://127.0.0.1:{port}/readyz") == 200,
            60,
            "/readyz after the restart",
        )
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join(60)
        stop_process(api)
        dispose_engines()

    statuses = Counter(status for status, _, _ in results)
    assert 503 in statuses, statuses
    # Once the database is back, intake recovers: stale pooled connections are discarded.
    assert [status for status, _, _ in results[-10:]] == [201] * 10, results[-10:]
    assert set(statuses) <= {0, 200, 201, 202, 503}, statuses
    acknowledged = [
        request_id for status, request_id, _ in results if status in (200, 201) and request_id
    ]
    assert acknowledged
    with unit_of_work(
        SystemContext("test read"), engine=get_engine(faults.database_url)
    ) as session:
        stored = set(
            session.scalars(select(ServiceRequest.id).where(ServiceRequest.tenant_id == tenant.id))
        )
    assert set(acknowledged) <= stored

    contact_statuses = Counter(status for status, _ in contacts)
    assert 503 in contact_statuses, contact_statuses
    assert [status for status, _ in contacts[-10:]] == [201] * 10, contacts[-10:]
    assert set(contact_statuses) <= {0, 201, 503}, contact_statuses
    routed = [contact_id for status, contact_id in contacts if status == 201]
    with unit_of_work(
        SystemContext("test read"), engine=get_engine(faults.database_url)
    ) as session:
        stored_contacts = set(
            session.scalars(select(Contact.id).where(Contact.tenant_id == overflow_tenant.id))
        )
    assert routed
    assert set(routed) <= stored_contacts
