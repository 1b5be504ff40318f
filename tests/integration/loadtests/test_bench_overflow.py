"""`hub bench overflow` end to end, briefly: the hub and the bare endpoint under the same
load, on a database the benchmark creates and drops."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import create_engine, text


def bench_databases(admin_url: str) -> set[str]:
    engine = create_engine(admin_url)
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE 'hub_bench_%'")
        )
        found = {row[0] for row in names}
    engine.dispose()
    return found


def test_bench_overflow_short_run(pg_server, tmp_path):
    before = bench_databases(pg_server)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["HUB_VAR_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "hub.cli.main", "bench", "overflow", "--json"]
    command += ["--rate", "20", "--duration", "2", "--contacts", "1000"]
    command += ["--admin-url", pg_server]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]

    figures = json.loads(result.stdout)
    hub, bare = figures["api"], figures["bare"]
    assert hub["ok"] == hub["sent"] == 40
    assert hub["errors"] == {}
    assert sum(hub["decisions"].values()) == 40
    assert 0 < hub["p50_ms"] <= hub["p99_ms"] <= hub["max_ms"]
    assert bare["ok"] == bare["sent"] == 40
    assert bare["errors"] == {}
    assert figures["decision"]["decisions"] > 0
    assert figures["simulation"]["contacts"] > 0
    # The benchmark drops the database it created, and the tasks its servers queued went to
    # a broker of its own, not to the user's embedded one.
    assert bench_databases(pg_server) == before
    assert not (tmp_path / "broker.db").exists()
