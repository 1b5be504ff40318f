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
def webhook_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()
