"""Start and stop a hub stack on loopback for a load run, and onboard the load-test tenants.

With `HUB_DATABASE_URL` and `HUB_BROKER_URL` set, the stack is the distributed deployment:
`hub serve --no-worker` with several API processes plus separate `hub worker` processes on
PostgreSQL and RabbitMQ. Otherwise it is the embedded default (`hub serve` with its own
worker) on SQLite and the embedded broker, inside the run's directory. Every process listens on
127.0.0.1 only and is stopped when the run ends, by its process id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

HOST = "127.0.0.1"
# Seconds to wait for `/readyz`; each process imports the app and migrates before it listens.
READY_TIMEOUT = 180.0
# POST requests a minute for the load's API keys: far above what a scenario files per key,
# so that a 429 never counts as a failure of the hub.
LOAD_KEY_POST_LIMIT = 1_000_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def hub_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli.main", *args]


@dataclass
class Stack:
    """The processes of a started stack, the URL of its API and the environment they share."""

    url: str
    env: dict[str, str]
    distributed: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self, timeout: float = 30) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def is_distributed(env: dict[str, str]) -> bool:
    return env.get("HUB_DATABASE_URL", "").startswith("postgresql")


def stack_environment(run_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for the stack's processes, with a metrics directory of its own.

    The embedded default also gets its own var directory (database, broker and root key). A
    distributed stack keeps the configured one, because the tenants' keys in the configured
    database are wrapped by the root key there.
    """
    env = dict(os.environ if base is None else base)
    if not is_distributed(env):
        env["HUB_VAR_DIR"] = str(run_dir / "var")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    env.setdefault("HUB_LOG_LEVEL", "WARNING")
    # The alert-storm residents have webhooks on the harness's receiver on 127.0.0.1.
    env.setdefault("HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE", "true")
    (run_dir / "metrics").mkdir(parents=True, exist_ok=True)
    return env


def wait_ready(url: str, processes: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"a stack process exited with status {process.returncode} while starting;"
                    " see the logs in the run directory"
                )
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = f"status {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise RuntimeError(f"the hub at {url} was not ready after {timeout:.0f} s ({last})")


def start_stack(
    run_dir: Path,
    *,
    api_processes: int = 2,
    workers: int = 1,
    base_env: dict[str, str] | None = None,
) -> Stack:
    """Start the hub on a free loopback port and wait until `/readyz` returns 200.

    `base_env` replaces this process's environment as the base of the stack's (tests pass the
    database and broker URLs this way).
    """
    env = stack_environment(run_dir, base_env)
    distributed = is_distributed(env)
    port = free_port()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # `hub serve` and `hub worker` migrate the database themselves before they start.
    serve_args = ["serve", "--host", HOST, "--port", str(port)]
    if distributed:
        serve_args += ["--processes", str(api_processes), "--no-worker"]
    processes = [_spawn(serve_args, env, logs / "serve.log")]
    if distributed:
        for index in range(workers):
            args = ["worker", "--concurrency", "2", "--pool", "threads"]
            processes.append(_spawn(args, env, logs / f"worker-{index}.log"))

    stack = Stack(url=f"http://{HOST}:{port}", env=env, distributed=distributed)
    stack.processes = processes
    try:
        wait_ready(stack.url, processes, timeout=READY_TIMEOUT)
    except BaseException:
        stack.stop()
        raise
    return stack


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("ab")
    return subprocess.Popen(hub_command(*args), env=env, stdout=log_file, stderr=log_file)


def onboard(manifest: Any, engine: Engine, roles: Sequence[str], label: str) -> str:
    """Onboard a `Manifest` (updating the tenant when it exists) and return a new API key.

    The hub's own onboarding and key functions run in this process against the stack's
    database, as `hub demo` does, so the key is known without parsing command output.
    """
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext, TenantContext
    from tenants.keys import create_api_key
    from tenants.onboarding import onboard as onboard_manifest

    with unit_of_work(SystemContext("load test onboarding"), engine=engine) as session:
        tenant, _first_key = onboard_manifest(session, manifest, actor="cli:loadtest")
        context = TenantContext(tenant_id=tenant.id, actor="cli:loadtest")
        # The POST limiter runs, as in production, but the load's keys stay under it.
        _row, key = create_api_key(
            session,
            context,
            roles=list(roles),
            label=label,
            max_posts_per_minute=LOAD_KEY_POST_LIMIT,
        )
    return key
