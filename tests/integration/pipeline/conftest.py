"""Fixtures for the pipeline tests: a configured database and a loopback agency receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.db import dispose_engines, get_engine
from hub.core.settings import reset_settings_cache


@pytest.fixture
def configured_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """Make `db_url` the configured database, as tasks read it from settings."""
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    reset_settings_cache()
    yield get_engine(db_url)
    monkeypatch.delenv("HUB_DATABASE_URL")
    reset_settings_cache()
    dispose_engines()


@pytest.fixture
def receiver() -> Iterator[AgencyReceiver]:
    server = AgencyReceiver().start()
    yield server
    server.stop()
