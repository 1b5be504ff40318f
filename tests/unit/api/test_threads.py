"""The API's thread pool for blocking endpoints takes its size from the settings."""

from __future__ import annotations

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.core.settings import Settings, reset_settings_cache


def _pool_size(client: TestClient) -> float:
    return client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)


@pytest.mark.parametrize("threads", [3, 8])
def test_api_threads_set_the_pool(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, threads: int):
    monkeypatch.setenv("HUB_DATABASE_URL", sqlite_url)
    reset_settings_cache()
    app = create_app(Settings(database_url=sqlite_url, api_threads=threads), start_relay=False)
    try:
        with TestClient(app) as client:
            assert _pool_size(client) == threads
            assert client.get("/healthz").status_code == 200
    finally:
        reset_settings_cache()
