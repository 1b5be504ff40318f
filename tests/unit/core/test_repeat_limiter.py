"""`RepeatLimiter` and the repeated error lines it limits: the API's `database_unavailable`,
the outbox relay's round and publish failures, and the overflow board's refresh failures."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from failover import board as board_module
from failover.board import LiveBoard
from hub.api import app as app_module
from hub.core import outbox
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import RepeatLimiter
from hub.core.outbox import OutboxRelay, enqueue
from hub.core.settings import Settings, reset_settings_cache
from hub.core.tenancy import SystemContext
from loadtests.stack import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs() -> Iterator[list[dict]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


def test_limiter_logs_first_occurrence(logs: list[dict]) -> None:
    # A logger made inside capture_logs: a cached one would keep the earlier configuration.
    logger = structlog.get_logger("test.limiter")
    limiter = RepeatLimiter(10.0, clock=FakeClock())

    limiter.log(logger.error, "database_unavailable", key="OperationalError", error="x")

    assert events(logs, "database_unavailable") == [
        {"event": "database_unavailable", "log_level": "error", "error": "x"}
    ]


def test_limiter_counts_suppressed_repeats(logs: list[dict]) -> None:
    logger = structlog.get_logger("test.limiter")
    clock = FakeClock()
    limiter = RepeatLimiter(10.0, clock=clock)

    for _ in range(5):
        limiter.log(logger.warning, "relay_failed", key="E")
        clock.now += 1.0
    clock.now += 10.0
    limiter.log(logger.warning, "relay_failed", key="E")

    logged = events(logs, "relay_failed")
    assert len(logged) == 2
    assert "repeats_suppressed" not in logged[0]
    assert logged[1]["repeats_suppressed"] == 4


def test_limiter_keys_independent(logs: list[dict]) -> None:
    logger = structlog.get_logger("test.limiter")
    limiter = RepeatLimiter(10.0, clock=FakeClock())

    for key in ("OperationalError", "TimeoutError", "OperationalError"):
        limiter.log(logger.warning, "relay_failed", key=key, error=key)
    limiter.log(logger.warning, "other_event", key="OperationalError")

    assert [e["error"] for e in events(logs, "relay_failed")] == [
        "OperationalError",
        "TimeoutError",
    ]
    assert len(events(logs, "other_event")) == 1


def test_limiter_forgets_oldest_key() -> None:
    limiter = RepeatLimiter(10.0, clock=FakeClock())

    for index in range(RepeatLimiter.MAX_KEYS + 1):
        assert limiter.admit(index) == 0

    assert limiter.admit(0) == 0
    assert limiter.admit(RepeatLimiter.MAX_KEYS) is None


def test_api_database_unavailable_logged_once(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "_database_down_log", RepeatLimiter(10.0))
    monkeypatch.setenv("HUB_DATABASE_URL", sqlite_url)
    reset_settings_cache()
    # create_app configures logging, so logs are captured only after it.
    app = app_module.create_app(Settings(database_url=sqlite_url), start_relay=False)

    @app.get("/test-database-down")
    def database_down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    with TestClient(app) as client, structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(app_module, "log", structlog.get_logger(app_module.__name__))
        statuses = [client.get("/test-database-down").status_code for _ in range(20)]
    reset_settings_cache()

    assert statuses == [503] * 20
    logged = events(logs, "database_unavailable")
    assert len(logged) == 1
    assert logged[0]["error"] == "OperationalError"


def run_relay(relay: OutboxRelay, seconds: float) -> None:
    relay.start()
    try:
        time.sleep(seconds)
    finally:
        relay.stop()


def test_relay_round_failure_logged_once(logs: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "log", structlog.get_logger(outbox.__name__))
    monkeypatch.setattr(outbox, "_repeat_log", RepeatLimiter(10.0))
    # Nothing listens on the closed port, so every round fails to connect.
    unreachable = create_engine(f"postgresql+psycopg://hub@127.0.0.1:{free_port()}/hub")
    relay = OutboxRelay(
        lambda message: None, poll_seconds=0.01, engine=unreachable, min_round_seconds=0.01
    )

    run_relay(relay, 1.0)

    assert relay.database_ok is False
    assert len(events(logs, "outbox_relay_round_failed")) == 1


def test_relay_publish_failure_logged_once(
    sqlite_url: str, logs: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "log", structlog.get_logger(outbox.__name__))
    monkeypatch.setattr(outbox, "_repeat_log", RepeatLimiter(10.0))
    engine = get_engine(sqlite_url)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        for index in range(3):
            enqueue(session, "test.task", queue="intake", tenant_id=None, item_id=f"m{index}")
    attempts: list[int] = []

    def publish(message: outbox.OutboxItem) -> None:
        attempts.append(message.id)
        raise ConnectionError("broker down")

    relay = OutboxRelay(publish, poll_seconds=0.01, engine=engine, min_round_seconds=0.01)
    run_relay(relay, 1.0)

    assert len(attempts) > 3
    assert len(events(logs, "outbox_publish_failed")) == 1


def test_board_refresh_failure_logged_once(
    sqlite_url: str, logs: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(board_module, "log", structlog.get_logger(board_module.__name__))
    monkeypatch.setattr(board_module, "_refresh_failed_log", RepeatLimiter(10.0))
    board = LiveBoard(get_engine(sqlite_url), refresh_seconds=0.01)
    refreshes: list[bool] = []

    def refresh(**kwargs: object) -> None:
        refreshes.append(True)
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(board, "refresh", refresh)
    board.start()
    try:
        time.sleep(0.5)
    finally:
        board.stop()

    assert len(refreshes) > 3
    assert len(events(logs, "overflow_board_refresh_failed")) == 1
