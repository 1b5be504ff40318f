"""The distributed deployment: two `hub serve` and two `hub worker` processes on one PostgreSQL
database and one RabbitMQ virtual host, routing to a loopback agency receiver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from pipeline_support import create_database, onboard_example
from sqlalchemy import Engine, select

from hub.cli.bench_support import drop_database
from hub.cli.demo.generate import GeneratedRequest, generate_day
from hub.cli.demo.pipeline import free_port
from hub.cli.demo.receiver import AgencyReceiver
from hub.cli.serve import stop_process
from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext
from hub.requests.models import Delivery, ServiceRequest
from tenants.manifest import example_paths, load_manifest

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

WORKER_CONCURRENCY = 2
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Stack:
    engine: Engine
    receiver: AgencyReceiver
    tenant_id: str
    jurisdiction_id: str
    api_key: str
    api_ports: list[int]
    apis: list[subprocess.Popen[bytes]]
    workers: list[subprocess.Popen[bytes]]
    vhost: str | None
    logs: Path

    def post(self, item: GeneratedRequest, index: int) -> str:
        port = self.api_ports[index % len(self.api_ports)]
        body = urlencode(item.form(self.jurisdiction_id, self.api_key))
        response = httpx.post(
            f"http://127.0.0.1:{port}/open311/v2/requests.json",
            content=body,
            headers=FORM,
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()[0]["service_request_id"]

    def post_all(self, items: list[GeneratedRequest]) -> list[str]:
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(self.post, items, range(len(items))))

    def deliveries(self, request_ids: list[str]) -> list[Delivery]:
        with unit_of_work(SystemContext("test read"), engine=self.engine) as session:
            return list(
                session.scalars(select(Delivery).where(Delivery.request_id.in_(request_ids)))
            )


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.3)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(
    pg_server: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("pipeline-logs")
    vhost = None
    broker_url = rabbitmq_url
    if shutil.which("rabbitmqctl"):
        # A virtual host of its own keeps messages of other runs out of this test's queues.
        vhost = f"hub_test_{uuid.uuid4().hex[:8]}"
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker_url = rabbitmq_url.rstrip("/") + f"/{vhost}"

    database_url = create_database(pg_server)
    engine = get_engine(database_url)
    receiver = AgencyReceiver().start()
    tenant_id, jurisdiction_id, api_key = onboard_example(engine, receiver, "boston.yaml")
    env = {**os.environ, "HUB_DATABASE_URL": database_url, "HUB_BROKER_URL": broker_url}
    processes: list[subprocess.Popen[bytes]] = []
    api_ports = [free_port(), free_port()]
    try:
        apis = []
        for index, port in enumerate(api_ports):
            command = [sys.executable, "-m", "hub.cli.main", "serve", "--port", str(port)]
            apis.append(_spawn(command + ["--no-worker"], env, logs / f"api{index}.log"))
        processes += apis
        workers = []
        for index in range(2):
            command = [sys.executable, "-m", "hub.cli.main", "worker"]
            command += ["--concurrency", str(WORKER_CONCURRENCY), "--pool", "prefork"]
            workers.append(_spawn(command, env, logs / f"worker{index}.log"))
        processes += workers
        _wait_for(lambda: all(_healthy(port) for port in api_ports), 120, "both APIs")
        yield Stack(
            engine=engine,
            receiver=receiver,
            tenant_id=tenant_id,
            jurisdiction_id=jurisdiction_id,
            api_key=api_key,
            api_ports=api_ports,
            apis=apis,
            workers=workers,
            vhost=vhost,
            logs=logs,
        )
    finally:
        for process in processes:
            stop_process(process, timeout=20)
        receiver.stop()
        drop_database(pg_server, database_url)
        if vhost is not None:
            _rabbitmqctl("delete_vhost", vhost)


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _boston_requests(
    count: int, seed: int, codes: set[str] | None = None
) -> list[GeneratedRequest]:
    manifest = load_manifest(next(p for p in example_paths() if p.name == "boston.yaml"))
    items = generate_day(manifest, count * 20 if codes else count, seed)
    if codes:
        items = [item for item in items if item.service_code in codes]
    return items[:count]


def test_each_request_stored_and_routed_once(stack: Stack) -> None:
    items = _boston_requests(60, seed=1)

    request_ids = stack.post_all(items)

    def settled() -> bool:
        rows = stack.deliveries(request_ids)
        return len(rows) >= len(request_ids) and all(row.state == "sent" for row in rows)

    _wait_for(settled, 90, "every delivery to be sent")
    with unit_of_work(SystemContext("test read"), engine=stack.engine) as session:
        stored = session.scalars(
            select(ServiceRequest.id).where(ServiceRequest.tenant_id == stack.tenant_id)
        ).all()
    receipts = Counter(
        item.payload["service_request_id"]
        for item in stack.receiver.snapshot()
        if item.payload["service_request_id"] in set(request_ids)
    )
    deliveries = stack.deliveries(request_ids)
    assert len(set(request_ids)) == len(items)
    assert set(request_ids) <= set(stored)
    assert len(deliveries) == len(receipts)
    assert set(receipts) == set(request_ids)
    assert max(receipts.values()) == max(Counter(d.request_id for d in deliveries).values())
    assert sum(stack.receiver.duplicates.values()) == 0
    assert sum(stack.receiver.rejected.values()) == 0


def test_failing_agency_retries_others_sent(stack: Stack) -> None:
    failing_path = stack.receiver.path_for(stack.tenant_id, "PWD_HWY")
    stack.receiver.fail_paths[failing_path] = 503
    failing_ids = stack.post_all(_boston_requests(5, seed=2, codes={"REQPOTHL", "SDWRPR"}))
    other_ids = stack.post_all(_boston_requests(5, seed=3, codes={"RODENTACT"}))

    def others_sent_and_failing_tried() -> bool:
        others = stack.deliveries(other_ids)
        failing = stack.deliveries(failing_ids)
        return all(d.state == "sent" for d in others) and all(d.attempts >= 1 for d in failing)

    _wait_for(others_sent_and_failing_tried, 60, "the healthy agency's deliveries")
    failing = [d for d in stack.deliveries(failing_ids) if d.destination == "PWD_HWY"]
    assert failing
    assert {d.state for d in failing} == {"failed"}
    assert {d.last_error for d in failing} == {"HTTP 503"}
    assert not [
        r for r in stack.receiver.snapshot() if r.payload["service_request_id"] in failing_ids
    ]

    del stack.receiver.fail_paths[failing_path]
    _wait_for(
        lambda: all(d.state == "sent" for d in stack.deliveries(failing_ids)),
        60,
        "the retried deliveries after the agency recovered",
    )
    retried = [d for d in stack.deliveries(failing_ids) if d.destination == "PWD_HWY"]
    assert all(d.attempts >= 2 for d in retried)
    receipts = [
        r for r in stack.receiver.snapshot() if r.payload["service_request_id"] in failing_ids
    ]
    assert len(receipts) == len(stack.deliveries(failing_ids))


def test_queues_are_quorum_queues(stack: Stack) -> None:
    if stack.vhost is None:
        pytest.skip("rabbitmqctl is not installed, so queue types cannot be read")

    output = _rabbitmqctl("list_queues", "-p", stack.vhost, "name", "type")

    types = dict(line.split("\t")[:2] for line in output.splitlines()[1:] if "\t" in line)
    for queue in ("intake", "maintenance", "alerts.urgent", "alerts.bulk", "notify", "overflow"):
        assert types.get(queue) == "quorum", f"{queue}: {types.get(queue)}"


def test_consumers_ack_late_prefetch_one(stack: Stack) -> None:
    if stack.vhost is None:
        pytest.skip("rabbitmqctl is not installed, so consumers cannot be read")

    output = _rabbitmqctl(
        "list_consumers", "-p", stack.vhost, "queue_name", "ack_required", "prefetch_count"
    )

    intake = [line.split("\t") for line in output.splitlines() if line.startswith("intake\t")]
    assert len(intake) == 2
    # Manual acks; one message per pool process (Celery sets per-consumer prefetch to
    # concurrency x worker_prefetch_multiplier on quorum queues).
    assert all(ack == "true" for _, ack, _ in intake)
    assert all(int(prefetch) == WORKER_CONCURRENCY for _, _, prefetch in intake)


def test_publisher_channels_confirm(stack: Stack) -> None:
    if stack.vhost is None:
        pytest.skip("rabbitmqctl is not installed, so channels cannot be read")
    stack.post_all(_boston_requests(2, seed=4))
    time.sleep(1)

    output = _rabbitmqctl("list_channels", "-p", stack.vhost, "confirm", "messages_unconfirmed")

    rows = [line.split("\t") for line in output.splitlines()[1:] if "\t" in line]
    assert any(confirm == "true" for confirm, _ in rows)


def test_worker_sigterm_loses_nothing(stack: Stack) -> None:
    items = _boston_requests(30, seed=5)
    request_ids = stack.post_all(items)

    stopping = stack.workers[0]
    stopping.terminate()
    stopping.wait(timeout=60)
    _wait_for(
        lambda: (
            all(d.state == "sent" for d in stack.deliveries(request_ids))
            and len(stack.deliveries(request_ids)) >= len(request_ids)
        ),
        90,
        "the remaining worker to route every request",
    )

    receipts = Counter(
        item.payload["service_request_id"]
        for item in stack.receiver.snapshot()
        if item.payload["service_request_id"] in set(request_ids)
    )
    assert stopping.returncode == 0
    assert set(receipts) == set(request_ids)
    assert sum(stack.receiver.duplicates.values()) == 0


def test_api_sigterm_keeps_accepted_requests(stack: Stack) -> None:
    items = _boston_requests(40, seed=6)
    port = stack.api_ports[0]
    api = stack.apis[0]
    accepted: list[str] = []
    refused = 0
    outcomes: Counter[str] = Counter()

    def post(item: GeneratedRequest) -> str | None:
        body = urlencode(item.form(stack.jurisdiction_id, stack.api_key))
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/open311/v2/requests.json",
                content=body,
                headers=FORM,
                timeout=30,
            )
        except httpx.HTTPError as exc:
            outcomes[type(exc).__name__] += 1
            return None
        outcomes[str(response.status_code)] += 1
        assert response.status_code in (200, 201, 503), response.text
        if response.status_code == 503:
            return None
        return response.json()[0].get("service_request_id")

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(post, item) for item in items]
        # Stop the API after its first few responses, so that other requests are in flight.
        _wait_for(lambda: sum(f.done() for f in futures) >= 5, 120, "the first responses")
        api.terminate()
        for future in futures:
            request_id = future.result()
            if request_id is None:
                refused += 1
            else:
                accepted.append(request_id)
    api.wait(timeout=60)

    _wait_for(
        lambda: (
            len(stack.deliveries(accepted)) >= len(accepted)
            and all(d.state == "sent" for d in stack.deliveries(accepted))
        ),
        90,
        "every request accepted before the shutdown to be routed",
    )
    assert api.returncode == 0
    assert accepted, outcomes
    assert len(accepted) + refused == len(items)
    # After the listener closes, connections are refused. uvicorn also closes connections
    # whose request it had not started reading: httpx reports ReadError when the close resets
    # the connection and RemoteProtocolError when it ends it cleanly before a response. A
    # client cannot tell whether such a request was stored and retries it with an
    # Idempotency-Key. No request may fail with a 5xx, and every 201 above is stored and routed.
    closed_early = {"ConnectError", "ReadError", "RemoteProtocolError"}
    assert set(outcomes) <= {"200", "201"} | closed_early, outcomes
    assert {d.request_id for d in stack.deliveries(accepted)} == set(accepted)
