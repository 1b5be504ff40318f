"""`hub demo` prints a notice on stderr when port 8311, which the docs' examples use, is taken."""

from __future__ import annotations

import socket

import pytest

from hub.cli.demo.pipeline import DEMO_API_PORT, choose_api_port


def test_taken_api_port_is_announced(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", DEMO_API_PORT))
        except OSError:
            pass  # another program has the port already, which is the case under test
        port = choose_api_port()

    assert port != DEMO_API_PORT
    err = capsys.readouterr().err
    assert f"port {DEMO_API_PORT} is in use by another program" in err
    assert f"listens on port {port}" in err
