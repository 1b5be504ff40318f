"""Helpers shared by the `hub bench` subcommands: server start-up, load processes, percentiles."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from hub.cli.output import fail


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
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f"the benchmark server on port {port} exited with code {server.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    fail(f"the benchmark server on port {port} did not start within {seconds:.0f} s")


def run_load_process(module: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Run `python -m MODULE PLAN.json` and return the JSON document on its last output line.

    The plan must name `duration_seconds`; the process is stopped 120 s after that.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(plan, handle)
    try:
        output = subprocess.run(
            [sys.executable, "-m", module, handle.name],
            check=True,
            capture_output=True,
            text=True,
            timeout=plan["duration_seconds"] + 120,
        ).stdout
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return json.loads(output.strip().splitlines()[-1])
