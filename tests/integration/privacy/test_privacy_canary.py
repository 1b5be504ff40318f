"""Canary: personal data filed through intake appears nowhere in plaintext.

A request with unique personal values goes through the intake service and an audited staff
view. Then the raw SQLite file (with its WAL) or a PostgreSQL `pg_dump`, and every log line,
are searched for those values. The dump includes the outbox rows whose kwargs become broker
messages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

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


def run_scenario(db_url: str, tenant_id: str) -> bytes:
    args = [f"{name}={value}" for name, value in CANARIES.items()]
    env = {**os.environ, "HUB_LOG_LEVEL": "DEBUG"}
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
