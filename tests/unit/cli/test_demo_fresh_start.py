"""`hub demo` on the embedded default starts from an empty database on every run."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import typer

from hub.cli.demo.command import DEMO_MARKER, _demo_tenants, _start_fresh
from hub.core.settings import Settings


def _database_with_tenant(var: Path, *tenant_ids: str) -> Path:
    var.mkdir(parents=True, exist_ok=True)
    database = var / "hub.db"
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT)")
        for tenant_id in tenant_ids or ("someone",):
            conn.execute("INSERT INTO tenants VALUES (?)", (tenant_id,))
        conn.commit()
    return database


def test_demo_first_run_marks_folder(tmp_path: Path) -> None:
    _start_fresh(Settings(var_dir=tmp_path / "var"))
    assert (tmp_path / "var" / DEMO_MARKER).exists()


def test_demo_second_run_removes_database(tmp_path: Path) -> None:
    var = tmp_path / "var"
    database = _database_with_tenant(var, *_demo_tenants())
    (var / DEMO_MARKER).write_text("demo", encoding="utf-8")
    (var / "demo").mkdir()
    (var / "demo" / "boston-open-data.csv").write_text("old", encoding="utf-8")
    (var / "root.key").write_text("kept", encoding="utf-8")

    _start_fresh(Settings(var_dir=var))

    assert not database.exists()
    assert not (var / "demo").exists()
    assert (var / "root.key").read_text(encoding="utf-8") == "kept"


def test_demo_keeps_operator_database(tmp_path: Path, capsys) -> None:
    var = tmp_path / "var"
    database = _database_with_tenant(var)

    with pytest.raises(typer.Exit) as stopped:
        _start_fresh(Settings(var_dir=var))

    assert stopped.value.exit_code == 2
    assert database.exists()
    assert "did not create" in capsys.readouterr().err
    assert not (var / DEMO_MARKER).exists()


def test_demo_keeps_tenant_onboarded_after(tmp_path: Path, capsys) -> None:
    """A tenant onboarded into the demo's database after a run is the operator's."""
    var = tmp_path / "var"
    database = _database_with_tenant(var, *sorted(_demo_tenants()), "harbor-city")
    (var / DEMO_MARKER).write_text("demo", encoding="utf-8")

    with pytest.raises(typer.Exit) as stopped:
        _start_fresh(Settings(var_dir=var))

    assert stopped.value.exit_code == 2
    assert database.exists()
    assert "onboarded after the demo (harbor-city)" in capsys.readouterr().err


def test_demo_replaces_empty_database(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "hub.db").write_bytes(b"")
    _start_fresh(Settings(var_dir=var))
    assert not (var / "hub.db").exists()
    assert (var / DEMO_MARKER).exists()


def test_demo_ignores_configured_database(tmp_path: Path) -> None:
    var = tmp_path / "var"
    database = _database_with_tenant(var)
    _start_fresh(Settings(var_dir=var, database_url=f"sqlite:///{database}"))
    assert database.exists()
    assert not (var / DEMO_MARKER).exists()
