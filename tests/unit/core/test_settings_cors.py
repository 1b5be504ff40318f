"""HUB_CORS_ORIGINS: origins as browsers send them, and a startup error for a bad value."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.core.errors import ConfigurationError
from hub.core.settings import Settings, get_settings, reset_settings_cache


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    reset_settings_cache()
    yield monkeypatch
    reset_settings_cache()


def test_cors_off_by_default(environment):
    environment.delenv("HUB_CORS_ORIGINS", raising=False)
    assert get_settings().cors_origins == ()


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", ()),
        (" , ", ()),
        ("*", ("*",)),
        ("https://app.example.org", ("https://app.example.org",)),
        (
            "https://App.Example.org/, http://localhost:8080,,https://app.example.org:443",
            ("https://app.example.org", "http://localhost:8080"),
        ),
        ("http://[::1]:3000,http://127.0.0.1:80", ("http://[::1]:3000", "http://127.0.0.1")),
    ],
)
def test_cors_origins_read_from_environment(environment, value, origins):
    environment.setenv("HUB_CORS_ORIGINS", value)
    assert get_settings().cors_origins == origins


@pytest.mark.parametrize(
    "value",
    [
        "app.example.org",
        "ftp://app.example.org",
        "https://app.example.org/path",
        "https://app.example.org?query",
        "https://app.example.org:99999",
        "https://",
        "null",
    ],
)
def test_bad_origin_is_a_startup_error(environment, value):
    environment.setenv("HUB_CORS_ORIGINS", f"https://ok.example.org,{value}")
    with pytest.raises(ConfigurationError) as raised:
        get_settings()
    message = str(raised.value)
    assert message.startswith(f"invalid setting HUB_CORS_ORIGINS='https://ok.example.org,{value}'")
    assert f"{value!r} is not an origin" in message
    assert "such as https://app.example.org" in message


def test_origin_with_password_is_not_repeated(environment):
    environment.setenv("HUB_CORS_ORIGINS", "https://user:secret@app.example.org")
    with pytest.raises(
        ConfigurationError, match="an origin has no user name or password"
    ) as raised:
        get_settings()
    assert "secret" not in str(raised.value)


def test_any_origin_must_stand_alone(environment):
    environment.setenv("HUB_CORS_ORIGINS", "*,https://app.example.org")
    with pytest.raises(ConfigurationError, match=r"HUB_CORS_ORIGINS=.*\* allows any origin"):
        get_settings()


def test_cors_origins_accept_a_list():
    settings = Settings(cors_origins=["https://A.example.org/"])
    assert settings.cors_origins == ("https://a.example.org",)
