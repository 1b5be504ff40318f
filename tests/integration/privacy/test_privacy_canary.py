"""Canary: personal data filed through intake appears nowhere in plaintext.

A request with unique personal values goes through the intake service and an audited staff
view. Then the raw SQLite file (with its WAL) or a PostgreSQL `pg_dump`, and every log line,
are searched for those values. The dump includes the outbox rows whose kwargs become broker
messages. On RabbitMQ a `hub worker` then relays and runs the queued tasks on a virtual host of
the test's own, and every message published to the hub exchange is captured and searched too.

The pipeline test plants values through the live Open311 API of `hub serve` and through
`hub import boston-csv`, lets a `hub worker` route the request to a loopback agency receiver,
and searches the same places plus every process's log. The agency may see the plaintext, so
its payloads serve as the positive control rather than as a place to search.
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

import httpx
import pytest
from kombu import Connection, Exchange, Queue, binding
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import URL, make_url

from hub.cli.bench_support import wait_until_serving
from hub.cli.demo.pipeline import free_port
from hub.cli.demo.receiver import AgencyReceiver
from hub.cli.serve import stop_process
from hub.core.clock import utcnow
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.migrate import upgrade
from hub.core.outbox import OutboxMessage
from hub.core.tasks import ALL_QUEUES
from hub.core.tenancy import SystemContext
from tenants.agencies import webhook_secrets
from tenants.manifest import load_manifest
from tenants.models import Agency
from tenants.onboarding import onboard

MANIFEST = Path(__file__).resolve().parents[3] / "tenants" / "examples" / "boston.yaml"
CANARIES = {
    "first_name": "Quillonia",
    "last_name": "Vantablackwood",
    "email": "quillonia.canary7q@example.net",
    "phone": "+16175550177",
    "address": "77 Canarywood Lane",
    "address_id": "CANARYPARCEL-Q7X3Z-0077",
    "account_id": "canary-account-Q7X3Z-0077",
    "device_id": "canary-device-Q7X3Z-0077",
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
    plain = decrypt_fields(session, ctx, "service_requests", row_id, blobs, purpose="staff.request_view")
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


def pg_dump_data(url: URL) -> bytes:
    """Return a data-only `pg_dump` of the database at `url`, as the text `pg_dump` writes."""
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", url.host, "-U", url.username, url.database],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dump.stdout


def database_bytes(db_url: str) -> bytes:
    """Return the raw bytes of the database: the SQLite file with its WAL, or a `pg_dump`."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite":
        return pg_dump_data(url)
    database = Path(url.database)
    return b"".join(
        p.read_bytes() for p in database.parent.glob(database.name + "*") if p.is_file()
    )


def test_canary_absent_from_storage_and_logs(db_url):
    tenant_id = f"canary{uuid.uuid4().hex[:8]}"
    logs = run_scenario(db_url, tenant_id)
    assert b"request_submitted" in logs, "the search did not reach the logs"
    assert hits(logs) == []

    stored = database_bytes(db_url)
    assert tenant_id.encode() in stored, "the search did not reach the stored rows"
    assert hits(stored) == []


# Agency webhook secrets. Onboarding gives every agency of the tenant a manifest secret, one
# agency's secret is rotated with an overlap, and two deliveries go to a loopback receiver.
# The first is accepted with the replaced secret (the overlap signature) and the second with
# the new one, which shows that the hub could read both. Neither may be stored or logged in
# clear. The child writes the new secret and the receiver's counts to `result_path` for the
# search and the positive controls.
SECRET_SCENARIO = """
import json
import sys

from sqlalchemy import select

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import configure_logging
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import service as request_service
from hub.requests.schemas import IntakeData
from hub.requests.tasks import route
from tenants.agencies import rotate_webhook_secret
from tenants.manifest import load_manifest
from tenants.models import Agency
from tenants.onboarding import onboard_manifest
from tenants.registry import get_tenant

url, tenant_id, manifest_path, manifest_secret, result_path = sys.argv[1:6]
configure_logging()
engine = get_engine(url)
manifest = load_manifest(manifest_path)
manifest = manifest.model_copy(
    update={
        "id": tenant_id,
        "jurisdiction_id": tenant_id + ".example.org",
        "agencies": [
            agency.model_copy(update={"webhook_secret": manifest_secret})
            for agency in manifest.agencies
        ],
    }
)
code = manifest.agency_for("REQPOTHL")
receiver = AgencyReceiver().start()
path = receiver.path_for(tenant_id, code)
with unit_of_work(SystemContext("canary"), engine=engine) as session:
    onboard_manifest(session, manifest, actor="test")
    for agency in session.scalars(select(Agency).where(Agency.tenant_id == tenant_id)):
        agency.webhook_url = receiver.url_for(tenant_id, agency.code)
ctx = TenantContext(tenant_id, actor="test")
with unit_of_work(ctx, engine=engine) as session:
    rotated = rotate_webhook_secret(session, ctx, code, overlap_hours=1).secret

tenant = get_tenant(tenant_id, engine=engine)
data = IntakeData(service_code="REQPOTHL", lat=42.3601, lon=-71.0589, description="pothole")
accepted = []
for secret in (manifest_secret, rotated):
    receiver.secrets[path] = secret
    with unit_of_work(ctx, engine=engine) as session:
        request_id = request_service.submit_request(session, ctx, tenant, data).id
    accepted.append(route(request_id, tenant_id=tenant_id))
receiver.stop()
with open(result_path, "w", encoding="utf-8") as handle:
    json.dump(
        {"rotated": rotated, "accepted": accepted, "rejected": receiver.rejected[path]}, handle
    )
engine.dispose()
"""


def test_webhook_secrets_absent_from_storage_and_logs(db_url, tmp_path):
    tenant_id = f"canary{uuid.uuid4().hex[:8]}"
    manifest_secret = f"canary-manifest-secret-{uuid.uuid4().hex}"
    result_path = tmp_path / "result" / "secrets.json"
    result_path.parent.mkdir()
    command = [sys.executable, "-c", SECRET_SCENARIO, db_url, tenant_id, str(MANIFEST)]
    completed = subprocess.run(
        [*command, manifest_secret, str(result_path)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "HUB_LOG_LEVEL": "DEBUG", "HUB_DATABASE_URL": db_url},
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    logs = completed.stdout + completed.stderr
    result = json.loads(result_path.read_text(encoding="utf-8"))
    secrets = {"manifest": manifest_secret, "rotated": result["rotated"]}

    stored = database_bytes(db_url)

    # Positive controls: both secrets signed a delivery, and the searches reach their targets.
    assert result["accepted"] == [{"sent": 1}, {"sent": 1}]
    assert result["rejected"] == 0
    assert b"tenant_onboarded" in logs, "the search did not reach the onboarding log"
    assert logs.count(b"delivery_sent") == 2, "the search did not reach the delivery log"
    assert tenant_id.encode() in stored, "the search did not reach the stored rows"
    for name, secret in secrets.items():
        assert secret.encode() not in stored, f"{name} secret stored in clear"
        assert secret.encode() not in logs, f"{name} secret logged"


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
    assert re.search(rb"worker_starting.*results=disabled", logs), "the worker has a result backend"


# The pipeline canary: the same search over everything the hub stores, logs or publishes when
# personal data arrives through the live Open311 API and through `hub import`.

BOSTON_CSV_HEADER = (
    "case_enquiry_id,open_dt,target_dt,closed_dt,ontime,case_status,closure_reason,case_title,"
    "subject,reason,type,queue,department,submittedphoto,closedphoto,location,fire_district,"
    "pwd_district,city_council_district,police_district,neighborhood,"
    "neighborhood_services_district,ward,precinct,location_street_name,location_zipcode,"
    "latitude,longitude,source"
)


def make_canaries() -> dict[str, str]:
    """Return personal values that each carry a random token, so no other data can match."""
    token = uuid.uuid4().hex[:10]
    digits = str(int(token, 16) % 10_000).zfill(4)
    return {
        "api_first_name": f"Quill{token}",
        "api_last_name": f"Vantablack{token}",
        "api_email": f"canary.{token}@example.net",
        "api_phone": f"+1617555{digits}",
        "api_address": f"{token} Canarywood Lane",
        "api_description": f"Pothole canary sentence {token} beside the curb",
        "import_address": f"{token} Importer Canary St  Boston  MA  02113",
        "import_description": f"Imported canary sentence {token} about a pothole",
        "import_note": f"Case Closed. Resolved canary note {token}",
    }


def find_canaries(canaries: dict[str, str], haystack: bytes) -> list[str]:
    """Return the names of the canary values found in `haystack`, as raw UTF-8 bytes."""
    return [name for name, value in canaries.items() if value.encode() in haystack]


def write_boston_csv(path: Path, canaries: dict[str, str]) -> None:
    """Write a one-row Boston CRM export whose address and free-text columns carry canaries."""
    case_id = str(101_000_000_000 + int(uuid.uuid4().hex[:8], 16) % 1_000_000)
    row = {column: "" for column in BOSTON_CSV_HEADER.split(",")}
    row.update(
        case_enquiry_id=case_id,
        open_dt="2022-01-19 11:18:00",
        closed_dt="2022-01-19 11:42:16",
        ontime="ONTIME",
        case_status="Closed",
        closure_reason=canaries["import_note"],
        case_title=canaries["import_description"],
        type="Request for Pothole Repair",
        location=canaries["import_address"],
        location_street_name=canaries["import_address"].split("  ")[0],
        location_zipcode="02113",
        latitude="42.3634",
        longitude="-71.0566",
        source="Constituent Call",
    )
    path.write_text(BOSTON_CSV_HEADER + "\n" + ",".join(row.values()) + "\n", encoding="utf-8")


def onboard_canary_tenant(engine, receiver) -> tuple[str, str, str]:
    """Onboard a Boston copy whose agencies post to `receiver`.

    Returns the tenant id, its Open311 jurisdiction id and its new Open311 API key.
    """
    tenant_id = f"canary{uuid.uuid4().hex[:8]}"
    manifest = load_manifest(MANIFEST).model_copy(
        update={"id": tenant_id, "jurisdiction_id": tenant_id + ".example.org"}
    )
    with unit_of_work(SystemContext("canary test"), engine=engine) as session:
        tenant, api_key = onboard(session, manifest, actor="test")
        agencies = session.scalars(select(Agency).where(Agency.tenant_id == tenant_id))
        for agency in agencies:
            agency.webhook_url = receiver.url_for(tenant_id, agency.code)
            secret = webhook_secrets(session, agency).current
            receiver.secrets[receiver.path_for(tenant_id, agency.code)] = secret
        jurisdiction_id = tenant.jurisdiction_id
    assert api_key is not None
    return tenant_id, jurisdiction_id, api_key


@pytest.fixture(params=["sqlite", "postgresql"])
def pipeline_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """HUB_ variables for the child processes: the embedded default, or PostgreSQL + RabbitMQ.

    The children share this process's var/ (set for the whole run in tests/conftest.py), because
    the root key that wraps the tenant's keys is created there when the test onboards the tenant.
    """
    if request.param == "sqlite":
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        database_url = f"sqlite:///{data_dir / 'hub.db'}"
        upgrade(database_url)
        # Both files live in data/, so the search covers the broker's messages too.
        return {
            "HUB_DATABASE_URL": database_url,
            "HUB_BROKER_URL": f"sqla+sqlite:///{data_dir / 'broker.db'}",
        }
    broker_url = request.getfixturevalue("broker_vhost")
    with Connection(broker_url) as connection:
        _capture_queue()(connection.default_channel).declare()
    return {"HUB_DATABASE_URL": request.getfixturevalue("pg_url"), "HUB_BROKER_URL": broker_url}


def _read_tree(folder: Path) -> bytes:
    # A file can vanish between listing and reading, such as a WAL at its last checkpoint.
    contents = []
    for path in sorted(folder.rglob("*")):
        try:
            contents.append(path.read_bytes())
        except (FileNotFoundError, IsADirectoryError):
            continue
    return b"".join(contents)


def _stored_bytes(env: dict[str, str]) -> bytes:
    """Return the files the hub writes: var/, plus the SQLite files with WAL or a `pg_dump`."""
    stored = _read_tree(Path(os.environ["HUB_VAR_DIR"]))
    url = make_url(env["HUB_DATABASE_URL"])
    if url.get_backend_name() == "sqlite":
        return stored + _read_tree(Path(url.database).parent)
    return stored + pg_dump_data(url)


def _hub_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli.main", *args]


def test_pipeline_canary_absent_everywhere(pipeline_env: dict[str, str], tmp_path: Path) -> None:
    canaries = make_canaries()
    planted = tmp_path / "planted.txt"
    planted.write_text(json.dumps(canaries), encoding="utf-8")
    assert find_canaries(canaries, planted.read_bytes()) == list(canaries), "the search is broken"

    child_env = {**os.environ, **pipeline_env, "HUB_LOG_LEVEL": "DEBUG"}
    engine = get_engine(pipeline_env["HUB_DATABASE_URL"])
    receiver = AgencyReceiver().start()
    server_log = tmp_path / "server.log"
    worker_log = tmp_path / "worker.log"
    csv_path = tmp_path / "boston.csv"
    write_boston_csv(csv_path, canaries)
    stored_while_running = b""
    try:
        tenant_id, jurisdiction_id, api_key = onboard_canary_tenant(engine, receiver)
        port = free_port()
        with server_log.open("wb") as server_out, worker_log.open("wb") as worker_out:
            server = subprocess.Popen(
                _hub_command("serve", "--port", str(port), "--no-worker"),
                env=child_env,
                stdout=server_out,
                stderr=subprocess.STDOUT,
            )
            worker = subprocess.Popen(
                _hub_command("worker", "--concurrency", "1", "--pool", "solo"),
                env=child_env,
                stdout=worker_out,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until_serving(port, server, seconds=30)
                form = {
                    "jurisdiction_id": jurisdiction_id,
                    "api_key": api_key,
                    "service_code": "REQPOTHL",
                    "lat": "42.360100",
                    "long": "-71.058900",
                    "first_name": canaries["api_first_name"],
                    "last_name": canaries["api_last_name"],
                    "email": canaries["api_email"],
                    "phone": canaries["api_phone"],
                    "address_string": canaries["api_address"],
                    "description": canaries["api_description"],
                }
                response = httpx.post(
                    f"http://127.0.0.1:{port}/open311/v2/requests.json", data=form, timeout=30
                )
                assert response.status_code in (200, 201), response.text
                request_id = response.json()[0]["service_request_id"]

                imported = subprocess.run(
                    _hub_command(
                        "import", "boston-csv", str(csv_path), "--tenant", tenant_id, "--json"
                    )
                    + ["--fallback", "REQPOTHL"],
                    env=child_env,
                    capture_output=True,
                    timeout=60,
                )
                assert imported.returncode == 0, imported.stderr.decode(errors="replace")

                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and not any(
                    item.payload.get("service_request_id") == request_id
                    for item in receiver.snapshot()
                ):
                    time.sleep(0.3)
                while _waiting_outbox_rows(engine) > 0 and time.monotonic() < deadline:
                    time.sleep(0.3)
                # Read the files while the processes hold them open, so the WAL is still there.
                stored_while_running = _stored_bytes(pipeline_env)
                database = make_url(pipeline_env["HUB_DATABASE_URL"]).database
                wal_seen = Path(f"{database}-wal").is_file()
            finally:
                stop_process(server, timeout=20)
                stop_process(worker, timeout=20)
    finally:
        receiver.stop()

    stored = stored_while_running + _stored_bytes(pipeline_env)
    dispose_engines()
    logs = server_log.read_bytes() + worker_log.read_bytes()
    logs += imported.stdout + imported.stderr
    received = json.dumps([item.payload for item in receiver.snapshot()]).encode()
    report = json.loads(imported.stdout)

    # Positive controls: each search reaches data the canary request and import produced.
    assert report["imported"] == 1, report
    assert request_id.encode() in received, "the agency did not receive the API request"
    assert "api_description" in find_canaries(canaries, received), "the agency got no plaintext"
    assert request_id.encode() in stored, "the search did not reach the stored rows"
    assert b"request_submitted" in logs, "the search did not reach the API server log"
    assert b"task_" in logs, "the search did not reach the worker log"
    if pipeline_env["HUB_DATABASE_URL"].startswith("sqlite"):
        assert wal_seen, "the SQLite WAL was not there to search"

    assert find_canaries(canaries, stored) == []
    assert find_canaries(canaries, logs) == []
    if pipeline_env["HUB_BROKER_URL"].startswith("amqp"):
        captured = _drain(pipeline_env["HUB_BROKER_URL"])
        messages = json.dumps(
            [{**m, "body": m["body"].decode("utf-8", "replace")} for m in captured], default=str
        ).encode()
        assert tenant_id.encode() in messages, "the capture did not see the canary tenant's tasks"
        assert find_canaries(canaries, messages) == []
