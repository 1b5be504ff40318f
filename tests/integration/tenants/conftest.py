"""Fixtures for the tenants tests: example manifests under fresh ids, so tests share a database."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import yaml

from tenants.manifest import example_paths


def _example(name: str) -> dict:
    path = next(p for p in example_paths() if p.stem == name)
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def make_manifest() -> Callable[..., dict]:
    """Return a factory: an example manifest (by file stem) with a unique id and domain."""

    def factory(name: str = "boston", region: str | None = None) -> dict:
        data = _example(name)
        suffix = uuid.uuid4().hex[:8]
        data["id"] = f"{name}-{suffix}"
        data["jurisdiction_id"] = f"{suffix}.{data['jurisdiction_id']}"
        if region is not None:
            data["region"] = region
        return data

    return factory
