"""Fixtures for the alert tests: an engine per backend and local receivers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alerts_support import HttpReceiver, SmtpReceiver
from sqlalchemy import Engine

from hub.core.db import get_engine


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@pytest.fixture
def cli(engine: Engine, monkeypatch: pytest.MonkeyPatch):
    """Run `hub alerts ARGS...` against the test database; return click's result."""
    from typer.testing import CliRunner

    from hub.cli.main import app
    from hub.core.settings import reset_settings_cache

    monkeypatch.setenv("HUB_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    reset_settings_cache()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, ["alerts", *args])
    monkeypatch.delenv("HUB_DATABASE_URL")
    reset_settings_cache()


@pytest.fixture
def allow_private_webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let residents' webhooks use loopback addresses, as the receivers of these tests need
    (`HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE`). Worker processes that a test starts inherit it."""
    from hub.core.settings import reset_settings_cache

    monkeypatch.setenv("HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE", "true")
    reset_settings_cache()
    yield
    monkeypatch.delenv("HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE")
    reset_settings_cache()


@pytest.fixture
def webhook_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()
