"""`hub serve` and `hub demo` on the embedded default: no configuration, a fresh directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil
import pytest
from sqlalchemy import select

from hub.cli.demo.generate import generate_day
from hub.cli.demo.pipeline import free_port
from hub.cli.demo.receiver import AgencyReceiver
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.migrate import upgrade
from hub.core.settings import reset_settings_cache
from hub.core.tasks import ALL_QUEUES
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.models import Delivery
from tenants.agencies import webhook_secrets
from tenants.keys import create_api_key
from tenants.manifest import example_paths, load_manifest
from tenants.models import Agency
from tenants.onboarding import onboard

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _clean_env() -> dict[str, str]:
    """Return the environment without any HUB_ variable, so the command runs unconfigured."""
    return {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory whose `var/` this test process shares with the command it starts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUB_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("HUB_BROKER_URL", raising=False)
    reset_settings_cache()
    dispose_engines()
    yield tmp_path
    dispose_engines()
    monkeypatch.undo()
    reset_settings_cache()


def _wait_healthy(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "hub serve exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"hub serve did not answer on port {port} within {seconds:.0f} s")


def test_serve_routes_request_to_agency(workdir: Path) -> None:
    receiver = AgencyReceiver().start()
    upgrade()
    manifest = load_manifest(next(p for p in example_paths() if p.name == "boston.yaml"))
    with unit_of_work(SystemContext("test onboarding")) as session:
        tenant, _ = onboard(session, manifest, actor="test")
        ctx = TenantContext(tenant_id=tenant.id, actor="test")
        _, api_key = create_api_key(session, ctx, roles=["open311"], label="e2e")
        for agency in session.scalars(select(Agency).where(Agency.tenant_id == tenant.id)):
            agency.webhook_url = receiver.url_for(tenant.id, agency.code)
            secret = webhook_secrets(session, agency).current
            receiver.secrets[receiver.path_for(tenant.id, agency.code)] = secret
    dispose_engines()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "serve", "--port", str(port)],
        cwd=workdir,
        env=_clean_env(),
    )
    try:
        _wait_healthy(port, server)
        item = generate_day(manifest, 1, seed=11)[0]
        response = httpx.post(
            f"http://127.0.0.1:{port}/open311/v2/requests.json",
            content=urlencode(item.form("boston.gov", api_key)),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        request_id = response.json()[0]["service_request_id"]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not receiver.snapshot():
            time.sleep(0.3)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        receiver.stop()

    (received,) = receiver.snapshot()
    with unit_of_work(SystemContext("test read"), engine=get_engine()) as session:
        delivery = session.scalars(select(Delivery).where(Delivery.request_id == request_id)).one()
    assert received.signature_ok
    assert received.payload["service_request_id"] == request_id
    assert received.payload["description"] == item.description
    assert delivery.state == "sent"
    assert server.returncode == 0


def test_serve_declares_embedded_queues(workdir: Path) -> None:
    # Two API processes publishing the first tasks to a new embedded broker at once collided
    # on kombu's queue rows, so `hub serve` declares them before it starts the processes.
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "serve",
            "--port",
            str(port),
            "--processes",
            "2",
            "--no-worker",
        ],
        cwd=workdir,
        env=_clean_env(),
    )
    try:
        _wait_healthy(port, server)
        broker = sqlite3.connect(workdir / "var" / "broker.db")
        try:
            names = {name for (name,) in broker.execute("SELECT name FROM kombu_queue")}
        finally:
            broker.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    assert names == set(ALL_QUEUES)


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait until `text` appears in `log`, while `process` runs."""
    deadline = time.monotonic() + seconds
    while text not in (output := log.read_text(encoding="utf-8", errors="replace")):
        assert process.poll() is None, output[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not logged within {seconds:.0f} s"
        time.sleep(0.2)


def _kill_tree(pid: int) -> None:
    """Kill a process and its children that still run, so that a failed test leaves none."""
    try:
        parent = psutil.Process(pid)
        processes = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


@dataclass
class TerminalJob:
    """`hub serve` with its worker ready, and the file that receives both processes' stderr."""

    server: subprocess.Popen[bytes]
    worker: psutil.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def terminal_job(workdir: Path) -> Iterator[TerminalJob]:
    """Start `hub serve` in a process group of its own, as a shell starts a foreground job,
    and wait until its worker child logs that it is ready."""
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "hub.cli.main", "serve", "--port", str(port)],
            cwd=workdir,
            env=_clean_env(),
            stderr=stderr,
            process_group=0,
        )
    try:
        _wait_healthy(port, server)
        _wait_for_line(log, " ready.", server, seconds=60)
        (worker,) = psutil.Process(server.pid).children()
        assert "worker" in worker.cmdline()
        yield TerminalJob(server, worker, log)
    finally:
        _kill_tree(server.pid)


def test_ctrl_c_stops_worker_once(terminal_job: TerminalJob) -> None:
    server = terminal_job.server
    # Ctrl-C in a terminal sends SIGINT to every process of the foreground job's group.
    os.killpg(server.pid, signal.SIGINT)
    server.wait(timeout=60)

    output = terminal_job.output()
    assert server.returncode == 0, output[-3000:]
    assert not terminal_job.worker.is_running()
    # The worker shuts down once, when `hub serve` stops it after the API's own shutdown.
    assert output.count("Warm shutdown") == 1, output[-3000:]


def test_worker_stops_after_serve_killed(terminal_job: TerminalJob) -> None:
    terminal_job.server.kill()
    terminal_job.server.wait(timeout=10)
    # Raises TimeoutExpired while the orphaned worker still runs.
    terminal_job.worker.wait(timeout=30)


def test_serve_fails_when_worker_dies(terminal_job: TerminalJob) -> None:
    terminal_job.worker.kill()
    terminal_job.server.wait(timeout=60)

    output = terminal_job.output()
    assert terminal_job.server.returncode == 1, output[-3000:]
    assert "worker_failed" in output
    assert "was killed by signal 9 (SIGKILL)" in output


def test_serve_stops_with_stopped_worker(terminal_job: TerminalJob) -> None:
    # A supervisor may send SIGTERM to the worker as well as to hub serve, and the worker may
    # finish its warm shutdown first.
    terminal_job.worker.terminate()
    terminal_job.server.wait(timeout=60)

    output = terminal_job.output()
    assert terminal_job.server.returncode == 0, output[-3000:]
    assert "worker_stopped" in output


@pytest.fixture
def background_demo(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start `hub demo` the way a shell without job control starts a background job, with
    SIGINT ignored as `trap "" INT` leaves it, and yield the process and its log once it
    serves."""
    log = workdir / "demo.log"
    with log.open("wb") as stderr:
        demo = subprocess.Popen(
            [
                "sh",
                "-c",
                'trap "" INT; exec "$0" -m hub.cli.main demo --requests 2',
                sys.executable,
            ],
            cwd=workdir,
            env=_clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_for_line(log, "press Ctrl-C", demo, seconds=180)
        yield demo, log
    finally:
        _kill_tree(demo.pid)


def test_demo_stops_on_sigint_as_background_job(background_demo) -> None:
    demo, log = background_demo
    demo.send_signal(signal.SIGINT)
    demo.wait(timeout=60)

    assert demo.returncode == 0, log.read_text(encoding="utf-8")[-3000:]


def test_demo_stops_when_worker_dies(background_demo) -> None:
    demo, log = background_demo
    (worker,) = psutil.Process(demo.pid).children()
    worker.kill()
    demo.wait(timeout=60)

    output = log.read_text(encoding="utf-8")
    assert demo.returncode == 1, output[-3000:]
    assert "the worker process was killed by signal 9 (SIGKILL)" in " ".join(output.split())


def test_demo_summary_adds_up(workdir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "demo",
            "--no-serve",
            "--json",
            "--requests",
            "6",
            "--wait",
            "90",
        ],
        cwd=workdir,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["pipeline"]["complete"] is True
    assert set(summary["tenants"]["onboarded"]) == {"boston", "new-york-city", "san-francisco"}
    for tenant_id, item in summary["pipeline"]["tenants"].items():
        replay = summary["replay"][tenant_id]
        assert replay["posted"] == 6, tenant_id
        assert replay["accepted"] == 6, tenant_id
        assert item["received"] == replay["accepted"], tenant_id
        assert sum(item["by_status"].values()) == item["received"], tenant_id
        settled = item["routed"] + item["unroutable"] + item["without_agency"] + item["pending"]
        assert settled == item["received"], tenant_id
        assert item["routed"] == item["received"], tenant_id
        assert item["agency_receipts"] == item["deliveries"].get("sent", 0), tenant_id
        assert sum(item["sla"].values()) == item["received"], tenant_id
