"""`hub db status`: the outbox backlog per queue and task, read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pipeline_support import create_database
from sqlalchemy import func, select

from hub.cli.bench_support import create_database as create_empty_database
from hub.cli.bench_support import drop_database
from hub.core.clock import utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import OutboxMessage, enqueue
from hub.core.tenancy import SystemContext
from loadtests.stack import free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of the test's own, so its outbox holds only this test's rows."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    server = request.getfixturevalue("pg_server")
    url = create_database(server)
    yield url
    drop_database(server, url)


def add_row(url: str, task: str, queue: str, *, due_ago: float = 0, due_in: float = 0) -> None:
    with unit_of_work(SystemContext("test: outbox row"), engine=get_engine(url)) as session:
        message = enqueue(session, task, queue=queue, tenant_id=None, delay_seconds=due_in)
        if due_ago:
            message.available_at = utcnow() - timedelta(seconds=due_ago)


def hub_db_status(url: str) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env["HUB_DATABASE_URL"] = url
    command = [sys.executable, "-m", "hub.cli.main", "db", "status", "--json"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_db_status_counts_backlog(database_url: str) -> None:
    add_row(database_url, "hub.requests.route_batch", "intake", due_ago=120)
    add_row(database_url, "hub.requests.route_batch", "intake", due_ago=30)
    add_row(database_url, "hub.requests.deliver", "delivery", due_in=600)

    result = hub_db_status(database_url)

    assert result.returncode == 0, result.stderr
    outbox = json.loads(result.stdout)["outbox"]
    assert outbox["due"] == 2
    assert 120 <= outbox["oldest_due_seconds"] < 180
    assert outbox["scheduled"] == 1
    by_task = {(row["queue"], row["task"]): row for row in outbox["by_task"]}
    intake = by_task[("intake", "hub.requests.route_batch")]
    assert intake["due"] == 2
    assert intake["scheduled"] == 0
    delivery = by_task[("delivery", "hub.requests.deliver")]
    assert delivery["due"] == 0
    assert delivery["oldest_due_seconds"] is None
    assert delivery["scheduled"] == 1


def test_db_status_changes_nothing(database_url: str) -> None:
    add_row(database_url, "hub.requests.route_batch", "intake", due_ago=10)

    assert hub_db_status(database_url).returncode == 0

    with unit_of_work(SystemContext("test"), engine=get_engine(database_url)) as session:
        unpublished = session.scalar(
            select(func.count()).where(OutboxMessage.published_at.is_(None))
        )
    assert unpublished == 1


def test_db_status_unreachable_database() -> None:
    url = f"postgresql+psycopg://hub@127.0.0.1:{free_port()}/hub"

    result = hub_db_status(url)

    assert result.returncode != 0
    assert "cannot read the database" in result.stderr
    assert "HUB_DATABASE_URL" in result.stderr


def test_db_status_before_any_migration(tmp_path, pg_server) -> None:
    """A folder with no database yet, and a database without the hub's tables, get the
    command that creates them; no database file is created."""
    path = tmp_path / "var" / "hub.db"
    missing = hub_db_status(f"sqlite:///{path}")
    assert missing.returncode == 2
    assert f"no hub database at {path} yet" in missing.stderr
    assert "`hub db upgrade`" in missing.stderr
    assert not path.exists()

    empty = create_empty_database(pg_server, prefix="hub_pipeline")
    try:
        bare = hub_db_status(empty)
    finally:
        drop_database(pg_server, empty)
    assert bare.returncode == 2
    assert "has no hub tables yet; create them with `hub db upgrade`" in bare.stderr
