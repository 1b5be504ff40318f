"""`hub demo --json` prints exactly one JSON document on stdout, also when the demo fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import Result


def test_failed_demo_prints_one_document(
    tmp_path: Path, run_demo_without_steps: Callable[[Path], Result]
) -> None:
    result = run_demo_without_steps(tmp_path / "var")

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert "accepted none" in document["error"]
    assert document["exit_code"] == 1
    assert "error: the API accepted none" in result.stderr
