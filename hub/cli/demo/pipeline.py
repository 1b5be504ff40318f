"""The demo's core steps: tenants, agency receivers, API and worker, replay, routing summary."""

from __future__ import annotations

from typing import Any

from hub.cli.demo.context import DemoContext


def onboard_tenants(ctx: DemoContext) -> dict[str, Any] | None:
    raise NotImplementedError


def start_agency_receivers(ctx: DemoContext) -> dict[str, Any] | None:
    raise NotImplementedError


def start_server(ctx: DemoContext) -> dict[str, Any] | None:
    raise NotImplementedError


def replay_requests(ctx: DemoContext) -> dict[str, Any] | None:
    raise NotImplementedError


def wait_and_summarize(ctx: DemoContext) -> dict[str, Any] | None:
    raise NotImplementedError


def render_summary(section: dict[str, Any]) -> None:
    raise NotImplementedError
