"""`hub loadtest --target` accepts loopback URLs only, judged on the parsed host."""

from __future__ import annotations

import pytest

from hub.cli.loadtest import is_loopback_url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8311", "http://[::1]:8311/", "http://localhost:8000", "http://127.0.0.1"],
)
def test_loopback_urls_accepted(url: str) -> None:
    assert is_loopback_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1.example.com:8311",
        "http://localhost@other.example:8311",
        "http://user:pw@127.0.0.1:8311",
        "http://10.0.0.5:8311",
        "https://127.0.0.1:8311",
        "http://127.0.0.1:99999",
        "http://[::1",
        "127.0.0.1:8311",
    ],
)
def test_other_urls_rejected(url: str) -> None:
    assert not is_loopback_url(url)
