"""Fixtures for the pipeline tests: a loopback agency receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.cli.demo.receiver import AgencyReceiver


@pytest.fixture
def receiver() -> Iterator[AgencyReceiver]:
    server = AgencyReceiver().start()
    yield server
    server.stop()
