"""Agency webhooks to placeholder hosts fail at once, without a lookup or a connection."""

from __future__ import annotations

import pytest

from hub.requests import webhook


@pytest.mark.parametrize(
    ("url", "placeholder"),
    [
        ("https://agency-webhooks.example.invalid/boston/PWD_HWY", True),
        ("http://INVALID./x", True),
        ("https://invalid.example.org/x", False),
        ("http://127.0.0.1:18311/agencies/x", False),
    ],
)
def test_placeholder_hosts(url, placeholder):
    assert webhook.is_placeholder_url(url) is placeholder


def test_placeholder_never_contacted(monkeypatch):
    def no_client():
        raise AssertionError("a placeholder host must not be contacted")

    monkeypatch.setattr(webhook, "_client", no_client)

    result = webhook.post(
        "https://agency-webhooks.example.invalid/a", b"{}", secret="s" * 32, delivery_id="d1"
    )

    assert result.ok is False
    assert result.transient is False
    assert result.error == "placeholder host (.invalid)"


@pytest.mark.parametrize(
    "url",
    [
        # An IPv6 literal without its closing bracket: urlsplit raises ValueError.
        "http://[::1/hook",
        # An empty label: the IDNA codec raises UnicodeError.
        "http://agency..example.org/hook",
        # A label over 63 characters: the IDNA codec raises UnicodeError.
        f"http://{'a' * 70}.example.org/hook",
        # A tab: httpx raises InvalidURL.
        "http://agency\t.example.org/hook",
    ],
)
def test_malformed_url_is_permanent(url):
    result = webhook.post(url, b"{}", secret="s" * 32, delivery_id="d1")

    assert result.ok is False
    assert result.transient is False
    assert result.error == "invalid webhook URL"
