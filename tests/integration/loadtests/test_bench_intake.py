"""`hub bench intake` end to end, briefly: the hub and the bare endpoint under the same load,
on a database the benchmark creates and drops."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_bench_overflow import bench_databases


def test_bench_intake_short_run(pg_server, tmp_path):
    before = bench_databases(pg_server)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["HUB_VAR_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "hub.cli.main", "bench", "intake", "--json"]
    command += ["--duration", "1", "--requests", "200", "--concurrency", "8"]
    command += ["--admin-url", pg_server]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    figures = json.loads(result.stdout)
    for target in ("hub", "bare"):
        for method in ("post", "get"):
            run = figures[target][method]
            assert run["ok"] > 0, (target, method)
            assert run["errors"] == {}, (target, method)
            assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    # The GET run starts once the relay has published every request of the POST run.
    assert figures["hub"]["post"]["outbox_drain_seconds"] >= 0
    assert "outbox_drain_seconds" not in figures["bare"]["post"]
    assert set(figures["ratio"]) == {"post", "get"}
    # Runs of 1 s: the JSON document carries the warning that the table prints.
    assert len(figures["warnings"]) == 1
    assert "Raise --duration and --requests" in figures["warnings"][0]
    assert bench_databases(pg_server) == before
    assert not (tmp_path / "broker.db").exists()


def test_micro_intake_prints_rounds(pg_server, tmp_path):
    """The intake write micro-benchmark prints one JSON line per round and drops its database."""
    before = bench_databases(pg_server)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["HUB_VAR_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "loadtests.micro_intake", "--admin-url", pg_server]
    command += ["--batches", "3", "--batch-size", "4", "--rounds", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    rounds = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rounds) == 2
    for figures in rounds:
        assert figures["requests"] == 12
        assert figures["cpu_ms_per_request"] > 0
        # The relay publishes the round's three routing rows together.
        assert figures["relay_messages"] == 1
    assert bench_databases(pg_server) == before
