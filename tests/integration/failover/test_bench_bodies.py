"""`hub bench overflow` sends only contacts that the contact route accepts.

The benchmark onboards fixed tenant and partner ids, so this module runs on SQLite only: a
database of the test's own keeps those ids out of the PostgreSQL database the session shares.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from overflow_support import auth

from failover.api import current_board
from failover.board import LiveBoard
from hub.core.db import get_engine


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def test_bench_contacts_accepted(hub_db):
    from hub.api.app import create_app
    from hub.cli.bench_overflow import _prepare

    bodies, _partners = _prepare(hub_db)
    board = LiveBoard(get_engine(hub_db))
    board.refresh()
    # The test's own board, without its refresh thread, replaces the one the app starts.
    app = create_app(start_relay=False, start_board=False)
    app.dependency_overrides[current_board] = lambda: board
    # Each distinct body once per key: the benchmark repeats 2,000 bodies of a few kinds.
    distinct = sorted({(b["key"], json.dumps(b["body"], sort_keys=True)) for b in bodies})
    assert len(distinct) > 3
    with TestClient(app) as client:
        for key, body in distinct:
            response = client.post(
                "/api/v1/overflow/contacts", json=json.loads(body), headers=auth(key)
            )
            assert response.status_code == 201, f"{body}: {response.text}"
