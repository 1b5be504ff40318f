"""Fixtures for the `hub` command tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hub.cli.main import app
from hub.core.db import dispose_engines
from hub.core.settings import reset_settings_cache


@pytest.fixture
def run_demo_without_steps(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Result]:
    """Return a function that runs `hub demo --no-serve --json` on a var folder with no steps.

    With no steps the demo files no requests, so it ends within seconds with exit code 1 after
    its summary, unless it stops earlier.
    """

    def run(var: Path) -> Result:
        monkeypatch.setenv("HUB_VAR_DIR", str(var))
        # Set here so the demo leaves the test process's environment as it was.
        monkeypatch.setenv("HUB_ALERT_WEBHOOKS_ALLOW_PRIVATE", "true")
        monkeypatch.setenv("HUB_LOG_LEVEL", "WARNING")
        monkeypatch.setattr("hub.cli.demo.steps.STEPS", [])
        reset_settings_cache()
        try:
            return CliRunner().invoke(app, ["demo", "--no-serve", "--json"])
        finally:
            reset_settings_cache()
            dispose_engines()

    return run
