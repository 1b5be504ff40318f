"""A Celery pool process forked from `hub worker` leaves the parent's pooled connections alone.

The parent keeps using its pool after the fork (the outbox relay and the scheduler run there),
so the child must drop the inherited connections without closing them.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from hub.core.db import dispose_engines, get_engine
from hub.core.settings import reset_settings_cache


@pytest.fixture
def configured_pg(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("HUB_DATABASE_URL", pg_url)
    reset_settings_cache()
    dispose_engines()
    yield pg_url
    monkeypatch.delenv("HUB_DATABASE_URL")
    reset_settings_cache()
    dispose_engines()


def backend_pid() -> int:
    with get_engine().connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_pool_process_keeps_parent_connections(configured_pg):
    from hub.worker.app import _after_fork

    # The connection goes back to the pool, as the relay's does between rounds.
    before = backend_pid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _after_fork()
            if backend_pid() == before:
                code = 2
        except BaseException:  # noqa: BLE001 - report anything, then leave the fork
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the pool process reused or failed"
    assert backend_pid() == before
