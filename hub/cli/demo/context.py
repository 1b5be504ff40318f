"""State shared by the steps of `hub demo`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from hub.core.settings import Settings


@dataclass
class DemoTenant:
    """An onboarded example tenant and the Open311 API key the demo files requests with."""

    tenant_id: str
    jurisdiction_id: str
    name: str
    api_key: str
    manifest_path: Path


@dataclass
class DemoOptions:
    requests_per_tenant: int = 40
    replay_file: Path | None = None
    replay_format: str | None = None
    replay_tenant: str | None = None
    wait_seconds: float = 60.0
    seed: int = 311


@dataclass
class DemoContext:
    """What one demo run has set up so far. Steps read it and add to it.

    `base_url` is the API's loopback address once the `server` step ran; `summary` maps each
    step's name to the section it returned, and becomes the demo's JSON output.
    """

    settings: Settings
    engine: Engine
    options: DemoOptions
    tenants: list[DemoTenant] = field(default_factory=list)
    base_url: str = ""
    # Agency code per tenant -> the loopback URL of its demo receiver.
    receiver_urls: dict[tuple[str, str], str] = field(default_factory=dict)
    receivers: Any = None
    # The `hub worker` child process, once the `server` step started it.
    worker: subprocess.Popen[bytes] | None = None
    # Tenant id -> ids of the requests the replay step filed and the API accepted.
    request_ids: dict[str, list[str]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Register `callback` to run when the demo stops, in reverse order of registration."""
        self._cleanups.append(callback)

    def close(self) -> None:
        while self._cleanups:
            self._cleanups.pop()()

    def tenant(self, tenant_id: str) -> DemoTenant:
        for tenant in self.tenants:
            if tenant.tenant_id == tenant_id:
                return tenant
        raise KeyError(tenant_id)
