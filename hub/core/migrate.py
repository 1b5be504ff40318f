"""Run the Alembic migrations from code, so `hub` needs no alembic.ini on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from hub.core.settings import get_settings

# Arbitrary constant naming the advisory lock that serializes migrations on PostgreSQL.
_MIGRATION_LOCK = 311_0001

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url or get_settings().effective_database_url)
    return config


def upgrade(url: str | None = None) -> None:
    """Bring the database at `url` (default: the configured one) to the newest schema.

    Feature packages keep their migrations on their own branches, so the target is `heads`.
    """
    settings = get_settings()
    settings.ensure_var_dir()
    url = url or settings.effective_database_url
    if not url.startswith("postgresql"):
        command.upgrade(alembic_config(url), "heads")
        return

    # Several API and worker processes may start at once; an advisory lock lets one migrate
    # while the others wait, then find nothing left to do.
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            try:
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.upgrade(config, "heads")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()
