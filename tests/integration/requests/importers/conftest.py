"""Fixtures for the importer tests."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from hub.core.db import get_engine


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)
