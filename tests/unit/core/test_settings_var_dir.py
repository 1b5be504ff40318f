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
    """var/ is 0700 and hub.db with its -wal and -shm files 0600, whatever the umask."""
    import sqlite3

    settings = Settings(var_dir=tmp_path / "var")
    settings.ensure_var_dir()
    database = tmp_path / "var" / "hub.db"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.execute("INSERT INTO t VALUES ('x')")
        connection.commit()
        modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "var").iterdir()}
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700
    assert modes == {
        "hub.db": 0o600,
        "hub.db-wal": 0o600,
        "hub.db-shm": 0o600,
        "broker.db": 0o600,
    }


def test_existing_database_file_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    database = tmp_path / "var" / "hub.db"
    database.write_bytes(b"")
    database.chmod(0o640)
    Settings(var_dir=tmp_path / "var").ensure_var_dir()
    assert database.stat().st_mode & 0o777 == 0o640
