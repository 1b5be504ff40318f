"""Load generator for `hub bench intake`, run as its own process so it never shares the
server's event loop: `python -m hub.cli.bench_load PLAN.json` prints one JSON result line.

The plan names the URL, the method, the bodies or paths to cycle through and the concurrency.
It also sets two bounds, a request count and a duration, and the run stops at the first reached.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from hub.cli.bench_support import percentile


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    base_url: str = plan["base_url"]
    method: str = plan["method"]
    targets: list[str] = plan["targets"]
    max_requests: int = plan["requests"]
    duration: float = plan["duration_seconds"]
    concurrency: int = plan["concurrency"]
    collect_ids: bool = plan.get("collect_ids", False)

    latencies: list[float] = []
    errors: dict[str, int] = {}
    ids: list[str] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + duration
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else {}
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=connector) as session:

        async def client_loop() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                target = targets[issued % len(targets)]
                issued += 1
                sent = time.perf_counter()
                try:
                    if method == "POST":
                        response = await session.post(base_url, data=target, headers=headers)
                    else:
                        response = await session.get(base_url + target)
                    body = await response.read()
                    status = response.status
                except aiohttp.ClientError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - sent)
                if status >= 400:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                elif collect_ids and len(ids) < 2000:
                    # While intake is degraded the response carries a token instead of an id.
                    entry = json.loads(body)[0]
                    if entry.get("service_request_id"):
                        ids.append(entry["service_request_id"])

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))

    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    ok = len(latencies) - sum(v for k, v in errors.items() if k.startswith("HTTP"))
    return {
        "requests": len(latencies),
        "ok": ok,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
        "ids": ids,
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        plan = json.load(handle)
    result = asyncio.run(run(plan))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
