"""The local root key file: created safely in development, strict in production."""

from __future__ import annotations

import secrets
import stat

import pytest

from hub.core.errors import ConfigurationError
from hub.core.settings import Settings
from privacy.keys import LocalKeyProvider, load_root_key


def test_missing_key_created_with_mode_0600(tmp_path):
    path = tmp_path / "keys" / "root.key"
    key = load_root_key(path, production=False)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_key_is_reused(tmp_path):
    path = tmp_path / "root.key"
    first = load_root_key(path, production=False)
    assert load_root_key(path, production=False) == first


def test_production_rejects_missing_key(tmp_path):
    path = tmp_path / "root.key"
    with pytest.raises(ConfigurationError, match="missing") as caught:
        load_root_key(path, production=True)
    assert str(path) in str(caught.value)
    assert not path.exists()


def test_production_rejects_readable_key(tmp_path):
    path = tmp_path / "root.key"
    load_root_key(path, production=False)
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_root_key(path, production=True)


@pytest.mark.parametrize("value", ["0" * 64, "ab" * 32, "changeme" * 8])
def test_production_rejects_placeholder(tmp_path, value):
    path = tmp_path / "root.key"
    path.write_text(value + "\n")
    path.chmod(0o600)
    if value.startswith("change"):
        match = "invalid"
    else:
        match = "placeholder"
    with pytest.raises(ConfigurationError, match=match):
        load_root_key(path, production=True)


def test_malformed_key_rejected_everywhere(tmp_path):
    path = tmp_path / "root.key"
    path.write_text("too short\n")
    with pytest.raises(ConfigurationError, match="64 hex digits"):
        load_root_key(path, production=False)


def test_provider_wraps_and_unwraps(tmp_path):
    settings = Settings(env="production", root_key_file=tmp_path / "root.key")
    (tmp_path / "root.key").write_text(secrets.token_hex(32) + "\n")
    (tmp_path / "root.key").chmod(0o600)
    provider = LocalKeyProvider.from_settings(settings)
    key_id, blob = provider.wrap(b"k" * 32, b"aad")
    assert key_id == provider.key_id
    assert provider.unwrap(blob, b"aad", key_id=key_id) == b"k" * 32
    with pytest.raises(Exception, match="failed authentication"):
        provider.unwrap(blob, b"other", key_id=provider.key_id)


@pytest.mark.parametrize("value", ["deadbeef" * 8, "0123456789abcdef" * 4, "12345678" * 8])
def test_production_rejects_repeated_pattern(tmp_path, value):
    path = tmp_path / "root.key"
    path.write_text(value + "\n")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="placeholder"):
        load_root_key(path, production=True)


def test_production_accepts_random_key(tmp_path):
    path = tmp_path / "root.key"
    key = secrets.token_bytes(32)
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    assert load_root_key(path, production=True) == key
