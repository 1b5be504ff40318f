"""The var folder: a path the hub cannot create is a configuration error naming HUB_VAR_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.core.errors import ConfigurationError
from hub.core.settings import Settings


def test_var_dir_created(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "a" / "var")
    settings.ensure_var_dir()
    assert (tmp_path / "a" / "var").is_dir()


def test_var_dir_under_a_file_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    settings = Settings(var_dir=blocker / "var")

    with pytest.raises(ConfigurationError, match=r"^HUB_VAR_DIR=.*cannot create the folder"):
        settings.ensure_var_dir()


def test_embedded_database_files_are_private(tmp_path: Path) -> None:
    """var/ is 0700, and hub.db with its -wal and -shm files 0600, whatever the umask."""
    from sqlalchemy import text

    from hub.core.db import get_engine

    settings = Settings(var_dir=tmp_path / "var")
    url = f"sqlite:///{tmp_path / 'var' / 'hub.db'}"
    engine = get_engine(url, settings=settings)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x TEXT)"))
            connection.execute(text("INSERT INTO t VALUES ('x')"))
            modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "var").iterdir()}
    finally:
        engine.dispose()
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700
    assert modes == {"hub.db": 0o600, "hub.db-wal": 0o600, "hub.db-shm": 0o600}


def test_var_dir_alone_creates_no_database_file(tmp_path: Path) -> None:
    """A command that never opens the embedded broker leaves no broker.db behind."""
    Settings(var_dir=tmp_path / "var").ensure_var_dir()
    assert list((tmp_path / "var").iterdir()) == []


def test_existing_database_file_keeps_its_mode(tmp_path: Path) -> None:
    from hub.core.db import get_engine

    (tmp_path / "var").mkdir()
    database = tmp_path / "var" / "hub.db"
    database.write_bytes(b"")
    database.chmod(0o640)
    engine = get_engine(f"sqlite:///{database}", settings=Settings(var_dir=tmp_path / "var"))
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
    assert database.stat().st_mode & 0o777 == 0o640
