"""Start and stop a hub stack on loopback for a load run, and onboard the example tenants.

With `HUB_DATABASE_URL` and `HUB_BROKER_URL` set, the stack is the distributed deployment:
`hub serve --no-worker` with several API processes plus separate `hub worker` processes on
PostgreSQL and RabbitMQ. Otherwise it is the embedded default (`hub serve` with its own
worker) on SQLite and the embedded broker, inside the run's directory. Every process listens on
127.0.0.1 only and is stopped when the run ends, by its process id.
"""

from __future__ import annotations

import json
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

HOST = "127.0.0.1"


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


def stack_environment(run_dir: Path) -> dict[str, str]:
    """Return the environment for the stack's processes: its own var and metrics directories."""
    env = os.environ.copy()
    env["HUB_VAR_DIR"] = str(run_dir / "var")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    env.setdefault("HUB_LOG_LEVEL", "WARNING")
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


def start_stack(run_dir: Path, *, api_processes: int = 2, workers: int = 1) -> Stack:
    """Start the hub on a free loopback port and wait until `/readyz` returns 200."""
    env = stack_environment(run_dir)
    distributed = bool(env.get("HUB_DATABASE_URL", "").startswith("postgresql"))
    port = free_port()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    subprocess.run(hub_command("db", "upgrade"), env=env, check=True, capture_output=True)
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
        wait_ready(stack.url, processes, timeout=90)
    except BaseException:
        stack.stop()
        raise
    return stack


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = log_path.open("ab")
    return subprocess.Popen(hub_command(*args), env=env, stdout=log_file, stderr=log_file)


def _find_key(data: Any) -> str | None:
    """Return the first API key in a command's JSON output (`api_key` or `key` fields)."""
    if isinstance(data, dict):
        for name in ("api_key", "key", "open311_api_key"):
            value = data.get(name)
            if isinstance(value, str) and value:
                return value
        values = list(data.values())
    elif isinstance(data, list):
        values = data
    else:
        return None
    for value in values:
        found = _find_key(value)
        if found:
            return found
    return None


def run_hub_json(args: Sequence[str], env: dict[str, str]) -> Any:
    """Run `hub ARGS --json` and return its JSON output, raising with its error line on failure."""
    result = subprocess.run(
        hub_command(*args, "--json"), env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"`hub {' '.join(args)}` failed: {message}")
    return json.loads(result.stdout)


def onboard(manifest: Path, tenant_id: str, env: dict[str, str], roles: Sequence[str]) -> str:
    """Onboard a tenant (or reuse it when it exists) and return a new API key with `roles`."""
    try:
        key = _find_key(run_hub_json(["tenants", "onboard", str(manifest)], env))
    except RuntimeError as exc:
        if "exist" not in str(exc):
            raise
        key = None
    if key and list(roles) == ["open311"]:
        return key
    role_args = [arg for role in roles for arg in ("--role", role)]
    command = ["tenants", "keys", "create", "--tenant", tenant_id, *role_args]
    command += ["--label", "load test"]
    key = _find_key(run_hub_json(command, env))
    if not key:
        raise RuntimeError(f"`hub tenants keys create --tenant {tenant_id}` printed no key")
    return key
