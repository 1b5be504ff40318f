"""Load generator processes: a failed one ends the benchmark with its own last error line."""

from __future__ import annotations

import pytest
import typer

from hub.cli.bench_support import run_load_process


def test_failed_generator_names_its_error(capsys):
    with pytest.raises(typer.Exit) as stopped:
        run_load_process("hub.cli.no_such_generator", {"duration_seconds": 1})

    assert stopped.value.exit_code == 2
    message = capsys.readouterr().err
    assert "hub.cli.no_such_generator failed with exit code 1" in message
    assert "No module named hub.cli.no_such_generator" in message
    assert "Traceback" not in message
