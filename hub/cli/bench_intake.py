"""`hub bench intake`: Open311 POST and GET throughput of the hub against a bare FastAPI app."""

from __future__ import annotations

from hub.cli.output import JSON_OPTION, fail


def intake(as_json: bool = JSON_OPTION) -> None:
    """Measure POST and GET requests/s and p99 of the hub and of a bare FastAPI endpoint."""
    fail("hub bench intake is not built yet")
