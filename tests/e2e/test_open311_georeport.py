"""The real `georeport` Open311 client against `hub serve` on a loopback port, JSON and XML."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from georeport import GeoReport
from open311_support import TenantKeys, onboard_tenant, pothole_form

from hub.core.db import dispose_engines, get_engine
from hub.core.migrate import upgrade
from hub.core.settings import reset_settings_cache
from tenants.keys import forget_cached_keys
from tenants.registry import invalidate_cache

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TenantKeys]]:
    """`hub serve` on SQLite with one onboarded tenant; yields the Open311 root URL."""
    # The session's HUB_VAR_DIR stays, so the server and later tests share its root key file.
    db_dir: Path = tmp_path_factory.mktemp("serve")
    url = f"sqlite:///{db_dir / 'hub.db'}"
    saved = os.environ.get("HUB_DATABASE_URL")
    os.environ["HUB_DATABASE_URL"] = url
    reset_settings_cache()
    dispose_engines()
    invalidate_cache()
    forget_cached_keys()
    upgrade(url)
    tenant = onboard_tenant(get_engine(url), "georeport-city")
    dispose_engines()

    port = _free_port()
    env = {**os.environ, "HUB_DATABASE_URL": url}
    command = [
        sys.executable, "-m", "hub.cli.main", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--no-worker",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "hub serve exited during start-up"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "hub serve did not start within 60 s"
            time.sleep(0.2)
        yield f"{base}/open311/v2", tenant
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        if saved is None:
            os.environ.pop("HUB_DATABASE_URL", None)
        else:
            os.environ["HUB_DATABASE_URL"] = saved
        reset_settings_cache()
        dispose_engines()


@pytest.fixture(scope="module")
def filed(served) -> list[str]:
    root, tenant = served
    ids = []
    for service_code in ("pothole", "graffiti"):
        form = pothole_form(tenant, service_code=service_code)
        if service_code != "pothole":
            form.pop("attribute[depth]")
        response = httpx.post(f"{root}/requests.json", data=form, timeout=10)
        assert response.status_code == 201
        ids.append(response.json()[0]["service_request_id"])
    return ids


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_georeport_services(served, fmt):
    root, tenant = served
    client = GeoReport(root, jurisdiction=tenant.jurisdiction, output_format=fmt)
    services = client.get_service_list()
    codes = {service["service_code"] for service in services}
    assert codes == {"pothole", "graffiti", "encampment"}


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_georeport_service_definition(served, fmt):
    root, tenant = served
    client = GeoReport(root, jurisdiction=tenant.jurisdiction, output_format=fmt)
    definition = client.get_service_definition("pothole")
    attributes = definition["attributes"]
    if fmt == "xml":
        attributes = attributes["attribute"]
    assert definition["service_code"] == "pothole"
    assert attributes[0]["code"] == "depth"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_georeport_requests_with_filters(served, filed, fmt):
    root, tenant = served
    client = GeoReport(root, jurisdiction=tenant.jurisdiction, output_format=fmt)
    potholes = client.get_service_requests(service_code="pothole", status="open")
    by_id = client.get_service_requests(service_request_id=",".join(filed))
    if fmt == "xml":
        # xmltodict returns one dict, not a list, for a single <request>.
        potholes = potholes if isinstance(potholes, list) else [potholes]
    assert [r["service_request_id"] for r in potholes] == [filed[0]]
    assert {r["service_request_id"] for r in by_id} == set(filed)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_georeport_one_request(served, filed, fmt):
    root, tenant = served
    client = GeoReport(root, jurisdiction=tenant.jurisdiction, output_format=fmt)
    one = client.get_service_request(filed[1])
    assert one["service_request_id"] == filed[1]
    assert one["service_code"] == "graffiti"
    assert one["status"] == "open"
