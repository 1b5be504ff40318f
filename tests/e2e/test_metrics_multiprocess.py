"""`hub serve` on the embedded default: worker task metrics reach the API's `/metrics`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.core.db import dispose_engines, unit_of_work
from hub.core.migrate import upgrade
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import SystemContext, TenantContext
from loadtests.harness import required_attributes
from loadtests.stack import free_port
from tenants.keys import create_api_key
from tenants.manifest import example_paths, load_manifest
from tenants.onboarding import onboard

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HUB_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("HUB_BROKER_URL", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reset_settings_cache()
    dispose_engines()
    yield tmp_path / "var"
    dispose_engines()
    monkeypatch.undo()
    reset_settings_cache()


def task_samples(port: int) -> list:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families.get("hub_worker_tasks")
    return [s for s in family.samples if s.name.endswith("_total")] if family else []


def test_worker_task_metrics_reach_api(var_dir: Path) -> None:
    upgrade()
    manifest = load_manifest(next(p for p in example_paths() if p.name == "boston.yaml"))
    with unit_of_work(SystemContext("test onboarding")) as session:
        tenant, _ = onboard(session, manifest, actor="test")
        context = TenantContext(tenant_id=tenant.id, actor="test")
        _, api_key = create_api_key(session, context, roles=["open311"], label="e2e")
    dispose_engines()
    service = manifest.services[0]
    lon_min, lat_min, lon_max, lat_max = manifest.service_area.bounds()
    form = {
        "jurisdiction_id": manifest.jurisdiction_id,
        "api_key": api_key,
        "service_code": service.code,
        "lat": str((lat_min + lat_max) / 2),
        "long": str((lon_min + lon_max) / 2),
        "description": "Metrics test",
    }
    form.update({f"attribute[{k}]": v for k, v in required_attributes(service).items()})

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "serve", "--port", str(port)], env=os.environ.copy()
    )
    metrics_dir = var_dir / "metrics" / str(process.pid)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, "hub serve exited during start-up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert metrics_dir.is_dir()

        filed = httpx.post(f"http://127.0.0.1:{port}/open311/v2/requests.json", data=form)
        assert filed.status_code in (200, 201), filed.text

        samples: list = []
        while time.monotonic() < deadline and not samples:
            samples = [s for s in task_samples(port) if s.labels["outcome"] == "ok"]
            time.sleep(1)
        assert samples, "no worker task outcome reached /metrics"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)

    assert not metrics_dir.exists()
