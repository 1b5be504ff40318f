"""Load-run figures: raw-sample percentiles, reconciliation and the criteria check."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext
from hub.requests.models import ServiceRequest
from loadtests.analysis import (
    ALL_ENDPOINTS,
    Reconciliation,
    check_criteria,
    endpoint_figures,
    load_criteria,
    read_acks,
    read_samples,
    reconcile,
)
from loadtests.harness import LOADTEST_DIR
from tenants.models import Tenant


def add_tenants(engine: Engine, tenant_ids: list[str]) -> None:
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        for tenant_id in tenant_ids:
            session.add(
                Tenant(
                    id=tenant_id,
                    jurisdiction_id=f"{tenant_id}.example.org",
                    name="Load test city",
                    timezone="UTC",
                    languages=["en", "es"],
                    default_language="en",
                    manifest={},
                )
            )


def write_samples(directory: Path, rows: list[tuple[float, str, float, int]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{t:.3f},{name},{ms:.3f},{ok}" for t, name, ms, ok in rows]
    (directory / "samples-1.csv").write_text("\n".join(lines) + "\n")


def test_percentiles_never_exceed_max(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    latencies = rng.lognormal(3, 1.5, size=997)
    write_samples(tmp_path, [(1000 + i * 0.01, "GET /x", ms, 1) for i, ms in enumerate(latencies)])

    figures = {f.name: f for f in endpoint_figures(read_samples(tmp_path))}
    overall = figures[ALL_ENDPOINTS]

    assert overall.requests == 997
    assert overall.p99_ms <= overall.max_ms
    assert overall.p95_ms <= overall.p99_ms
    assert overall.p99_ms in np.round(latencies, 1)


def test_figures_count_failures_per_endpoint(tmp_path: Path) -> None:
    rows = [(1000.0 + i, "POST /a", 10.0, i % 4 != 0) for i in range(8)]
    rows += [(1000.0 + i, "GET /b", 5.0, 1) for i in range(4)]
    write_samples(tmp_path, [(t, n, ms, int(ok)) for t, n, ms, ok in rows])

    figures = {f.name: f for f in endpoint_figures(read_samples(tmp_path))}

    assert figures["POST /a"].failures == 2
    assert figures["GET /b"].failures == 0
    assert figures[ALL_ENDPOINTS].requests == 12


def test_unmeetable_criteria_fail(tmp_path: Path) -> None:
    write_samples(tmp_path, [(1000.0 + i, "GET /b", 5.0, 1) for i in range(10)])
    figures = endpoint_figures(read_samples(tmp_path))
    criteria = load_criteria(LOADTEST_DIR / "criteria" / "unmeetable.yaml")

    checks = check_criteria(criteria, figures, Reconciliation())

    failed = [c.criterion for c in checks if not c.passed]
    assert "requests per second >=" in failed
    assert "* p95_ms <=" in failed
    assert "lost acknowledged requests <=" not in failed


def test_criteria_fail_on_missing_endpoint(tmp_path: Path) -> None:
    write_samples(tmp_path, [(1000.0, "GET /b", 5.0, 1)])
    criteria = {"endpoints": {"POST /open311/v2/requests.json": {"p95_ms": 1000}}}

    checks = check_criteria(criteria, endpoint_figures(read_samples(tmp_path)), Reconciliation())

    assert [c.passed for c in checks if "requests.json" in c.criterion] == [False]


def test_criteria_fail_on_lost_request() -> None:
    figures = [f for f in endpoint_figures(read_samples(Path("/nonexistent")))]

    checks = check_criteria({"max_lost": 0}, figures, Reconciliation(lost=1))

    assert [c.passed for c in checks if c.criterion.startswith("lost")] == [False]


def test_reconcile_finds_planted_lost_request(db_url: str, tmp_path: Path) -> None:
    engine = get_engine(db_url)
    tenant_id = f"load-{uuid.uuid4().hex[:8]}"
    stored_id = uuid.uuid4().hex[:12]
    add_tenants(engine, [tenant_id])
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        session.add(ServiceRequest(id=stored_id, tenant_id=tenant_id, service_code="pothole"))
    planted = uuid.uuid4().hex[:12]
    acks = [
        {"tenant_id": tenant_id, "service_request_id": stored_id, "token": None},
        {"tenant_id": tenant_id, "service_request_id": planted, "token": None},
    ]
    (tmp_path / "acks-1.jsonl").write_text("\n".join(json.dumps(a) for a in acks) + "\n")

    result = reconcile(read_acks(tmp_path), engine)

    assert result.acknowledged == 2
    assert result.stored == 1
    assert result.lost == 1
    assert result.lost_examples == [f"{tenant_id}/{planted}"]


def test_reconcile_scopes_ids_by_tenant(db_url: str) -> None:
    engine = get_engine(db_url)
    owner, other = (f"load-{uuid.uuid4().hex[:8]}" for _ in range(2))
    request_id = uuid.uuid4().hex[:12]
    add_tenants(engine, [owner, other])
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        session.add(ServiceRequest(id=request_id, tenant_id=owner, service_code="pothole"))

    result = reconcile([{"tenant_id": other, "service_request_id": request_id}], engine)

    assert result.lost == 1


@pytest.mark.parametrize(
    "path", sorted((LOADTEST_DIR / "criteria").glob("*.yaml")), ids=lambda p: p.name
)
def test_criteria_files_load(path: Path) -> None:
    criteria = load_criteria(path)

    assert "max_lost" in criteria
    assert "*" in criteria["endpoints"]
