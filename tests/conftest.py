"""Fixtures shared by every test layer.

Services: tests that need PostgreSQL or RabbitMQ take the `pg_url` or `rabbitmq_url` fixture.
Without the service they skip with the reason; with `HUB_REQUIRE_SERVICES=1` (set by `.ci/run`)
they fail instead, and so does a missing `../shared/data`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HUB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PG_ADMIN_URL = os.environ.get(
    "HUB_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RABBITMQ_URL = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def services_required() -> bool:
    return os.environ.get("HUB_REQUIRE_SERVICES") == "1"


def missing(reason: str) -> None:
    """Skip the test, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} (HUB_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _isolated_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the embedded default's files at a temporary folder for the whole run."""
    from hub.core.settings import reset_settings_cache

    var_dir = tmp_path_factory.mktemp("var")
    saved = {k: os.environ.get(k) for k in ("HUB_VAR_DIR", "HUB_ENV")}
    os.environ["HUB_VAR_DIR"] = str(var_dir)
    os.environ["HUB_ENV"] = "test"
    reset_settings_cache()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings_cache()


@pytest.fixture(autouse=True)
def _no_pending_encryption_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test with no pending encryption counts.

    The counts are process-wide, and the CLI, API and worker record them at exit, so an
    earlier test's counts would be written into its database, which may be gone.
    """
    from privacy import fields

    monkeypatch.setattr(fields, "usage_counter", fields._UsageCounter())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public inputs beside the repository (tests only, never at run time)."""
    if not SHARED_DATA.is_dir():
        missing(f"real test inputs not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_server() -> str:
    if not _port_open("127.0.0.1", 5432):
        missing("PostgreSQL is not reachable on 127.0.0.1:5432")
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    """Create an empty database, migrate it to the newest schema and return its URL."""
    from hub.core.migrate import upgrade

    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return url


def drop_pg_database(admin_url: str, url: str) -> None:
    from hub.core.db import dispose_engines

    dispose_engines()
    name = url.rsplit("/", 1)[1]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_url(pg_server: str) -> Iterator[str]:
    """A migrated PostgreSQL database shared by the session; tests isolate by tenant."""
    url = create_pg_database(pg_server)
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database of the test's own."""
    from hub.core.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run the test on both databases: the embedded default and PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def configured_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """Make `db_url` the configured database, as tasks and exit hooks read it from settings."""
    from hub.core.db import dispose_engines, get_engine
    from hub.core.settings import reset_settings_cache

    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    reset_settings_cache()
    yield get_engine(db_url)
    monkeypatch.delenv("HUB_DATABASE_URL")
    reset_settings_cache()
    dispose_engines()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    if not _port_open("127.0.0.1", 5672):
        missing("RabbitMQ is not reachable on 127.0.0.1:5672")
    return RABBITMQ_URL
