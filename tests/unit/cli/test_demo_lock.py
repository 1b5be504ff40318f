"""A running `hub demo` locks its var folder against a second demo and against `hub serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import Result

from hub.cli.demo.command import DEMO_MARKER
from hub.cli.demo.lock import hold_demo_lock, hold_serve_lock
from hub.core.settings import Settings

# Runs in a child process: takes the lock named by argv[2] on the folder argv[1], prints a line
# once it holds it, and keeps it until the test closes stdin.
_HOLDER = """
import sys
from hub.cli.demo.lock import hold_demo_lock, hold_serve_lock
from hub.core.settings import Settings
take = hold_demo_lock if sys.argv[2] == "demo" else hold_serve_lock
handle = take(Settings(var_dir=sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def _start_holder(var: Path, kind: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(var), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _stop_holder(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait(timeout=10)


@pytest.fixture
def demo_holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    holder = _start_holder(tmp_path / "var", "demo")
    yield holder
    _stop_holder(holder)


def test_second_demo_rejected_before_deleting(
    tmp_path: Path,
    demo_holder: subprocess.Popen[str],
    run_demo_without_steps: Callable[[Path], Result],
) -> None:
    var = tmp_path / "var"
    # An earlier demo's files, which a demo that ignored the lock would delete.
    database = var / "hub.db"
    database.write_bytes(b"")
    (var / DEMO_MARKER).write_text("demo", encoding="utf-8")

    result = run_demo_without_steps(var)

    assert result.exit_code == 2
    assert database.exists()
    assert f"pid {demo_holder.pid}" in result.stderr
    assert "HUB_VAR_DIR" in result.stderr
    assert f"pid {demo_holder.pid}" in json.loads(result.stdout)["error"]


def test_demo_lock_released_when_holder_dies(tmp_path: Path) -> None:
    var = tmp_path / "var"
    holder = _start_holder(var, "demo")
    _stop_holder(holder)

    hold_demo_lock(Settings(var_dir=var)).close()


def test_serve_rejected_while_demo_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(typer.Exit) as stopped:
        hold_serve_lock(Settings(var_dir=tmp_path / "var"))

    assert stopped.value.exit_code == 2
    assert f"`hub demo` (pid {demo_holder.pid})" in capsys.readouterr().err


def test_demo_rejected_while_serve_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    var = tmp_path / "var"
    holder = _start_holder(var, "serve")
    try:
        with pytest.raises(typer.Exit) as stopped:
            hold_demo_lock(Settings(var_dir=var))
    finally:
        _stop_holder(holder)

    assert stopped.value.exit_code == 2
    assert f"pid {holder.pid}" in capsys.readouterr().err


def test_two_servers_share_folder(tmp_path: Path) -> None:
    var = tmp_path / "var"
    holder = _start_holder(var, "serve")
    try:
        hold_serve_lock(Settings(var_dir=var)).close()
    finally:
        _stop_holder(holder)
