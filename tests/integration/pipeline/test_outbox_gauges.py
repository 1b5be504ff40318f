"""Outbox backlog gauges read at scrape time: only rows that are due count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from pipeline_support import create_database
from sqlalchemy import Engine

from hub.cli.bench_support import drop_database
from hub.core.clock import utcnow
from hub.core.collectors import OUTBOX_OLDEST, OUTBOX_PENDING, outbox_reader
from hub.core.db import get_engine, unit_of_work
from hub.core.outbox import backlog, enqueue
from hub.core.tenancy import SystemContext


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_outbox(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated database of the test's own, so no other test's outbox rows fall due in it."""
    if request.param == "sqlite":
        yield get_engine(request.getfixturevalue("sqlite_url"))
        return
    server = request.getfixturevalue("pg_server")
    url = create_database(server)
    yield get_engine(url)
    drop_database(server, url)


def _add(engine: Engine, *, created_ago: float, due_in: float) -> None:
    with unit_of_work(SystemContext("test: outbox row"), engine=engine) as session:
        message = enqueue(
            session, "test.task", queue="intake", tenant_id=None, delay_seconds=due_in
        )
        message.created_at = utcnow() - timedelta(seconds=created_ago)


def test_gauges_ignore_rows_not_yet_due(empty_outbox: Engine) -> None:
    # A delivery retry written 10 minutes ago and due in 5: it waits on purpose.
    _add(empty_outbox, created_ago=600, due_in=300)

    samples = outbox_reader(empty_outbox)()

    assert samples[OUTBOX_PENDING.name] == [((), 0.0)]
    assert samples[OUTBOX_OLDEST.name] == [((), 0.0)]
    assert backlog(empty_outbox) == 0


def test_gauges_age_from_due_time(empty_outbox: Engine) -> None:
    # Written 10 minutes ago, due 2 minutes ago, and still not published.
    _add(empty_outbox, created_ago=600, due_in=-120)
    _add(empty_outbox, created_ago=600, due_in=300)

    samples = outbox_reader(empty_outbox)()

    assert samples[OUTBOX_PENDING.name] == [((), 1.0)]
    ((labels, oldest),) = samples[OUTBOX_OLDEST.name]
    assert 120 <= oldest < 180
    assert backlog(empty_outbox) == 1
