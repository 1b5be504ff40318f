"""The var folder: a path the hub cannot create is a configuration error naming HUB_VAR_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.core.errors import ConfigurationError
from hub.core.settings import Settings


def test_var_dir_created(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "a" / "var")
    settings.ensure_var_dir()
    assert (tmp_path / "a" / "var").is_dir()


def test_var_dir_under_a_file_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    settings = Settings(var_dir=blocker / "var")

    with pytest.raises(ConfigurationError, match=r"^HUB_VAR_DIR=.*cannot create the folder"):
        settings.ensure_var_dir()
