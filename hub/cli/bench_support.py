"""Helpers shared by the `hub bench` subcommands: benchmark databases, server start-up, load
processes, percentiles."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hub.cli.output import fail
from hub.core.db import dispose_engines
from hub.core.settings import get_settings


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def wait_until_serving(
    port: int, server: subprocess.Popen[bytes], *, path: str = "/healthz", seconds: float = 60
) -> None:
    """Return once the server on `port` returns any HTTP response for `path`.

    Exits the command with an error when the server process ends or `seconds` pass first.
    """
    deadline = time.monotonic() + seconds
    url = f"http://127.0.0.1:{port}{path}"
    # httpx logs every request at INFO. The intake probe sends no jurisdiction, so its 400
    # status read as a failure on stderr.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f"the benchmark server on port {port} exited with code {server.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    fail(f"the benchmark server on port {port} did not start within {seconds:.0f} s")


@contextmanager
def server_environment(database_url: str, broker_url: str = "") -> Iterator[dict[str, str]]:
    """Yield the environment for benchmark servers: the benchmark's database, and `broker_url`,
    else the configured broker, else an embedded broker in a scratch directory.

    The servers run without a worker, so the tasks they queue are never consumed. In the
    scratch broker they are deleted with it instead of piling up in the user's embedded broker
    (`var/broker.db`), where the next `hub serve` would run them.
    """
    env = {**os.environ, "HUB_DATABASE_URL": database_url}
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as scratch:
        broker = broker_url or get_settings().broker_url
        env["HUB_BROKER_URL"] = broker or f"sqla+sqlite:///{Path(scratch) / 'broker.db'}"
        yield env


def run_load_process(module: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Run `python -m MODULE PLAN.json` and return the JSON document on its last output line.

    The plan must name `duration_seconds`; the process is stopped 120 s after that.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(plan, handle)
    limit = plan["duration_seconds"] + 120
    try:
        result = subprocess.run(
            [sys.executable, "-m", module, handle.name],
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        fail(f"the load generator {module} did not finish within {limit:.0f} s and was stopped")
    finally:
        Path(handle.name).unlink(missing_ok=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        errors = result.stderr.strip().splitlines()
        problem = errors[-1] if errors else "no output"
        fail(
            f"the load generator {module} failed with exit code {result.returncode}: {problem}; "
            "the server's log is in the var folder"
        )
    return json.loads(lines[-1])


def create_database(admin_url: str, *, prefix: str = "hub_bench") -> str:
    """Create an empty PostgreSQL database named `prefix` and a random suffix; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure gets the same advice
        fail(
            f"could not create a benchmark database through {admin_url} "
            f"({type(exc).__name__}); start PostgreSQL or pass --admin-url"
        )
    return str(make_url(admin_url).set(database=name).render_as_string(hide_password=False))


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of `url`, closing the hub's connections to it first."""
    dispose_engines()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()
