"""`hub --as NAME`, HUB_OPERATOR and the OS user name as the audited CLI actor."""

from __future__ import annotations

import getpass

import pytest
import typer

from hub.cli import operator
from hub.core.settings import reset_settings_cache


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HUB_OPERATOR", raising=False)
    reset_settings_cache()
    operator.set_operator(None)
    yield
    operator.set_operator(None)
    reset_settings_cache()


def test_default_is_os_user():
    assert operator.cli_actor() == f"cli:{getpass.getuser()}"
    assert operator.cli_actor() != "cli:operator" or getpass.getuser() == "operator"


def test_setting_names_operator(monkeypatch):
    monkeypatch.setenv("HUB_OPERATOR", "ana@example.gov")
    reset_settings_cache()
    assert operator.cli_actor() == "cli:ana@example.gov"


def test_option_overrides_setting(monkeypatch):
    monkeypatch.setenv("HUB_OPERATOR", "ana")
    reset_settings_cache()
    operator.set_operator("ben")
    assert operator.cli_actor() == "cli:ben"


def test_invalid_name_rejected(capsys):
    operator.set_operator("ana lee")
    with pytest.raises(typer.Exit) as raised:
        operator.cli_actor()
    assert raised.value.exit_code == 2
    error = capsys.readouterr().err
    assert "invalid operator name 'ana lee' from --as" in error


def test_nameless_os_user_rejected(monkeypatch, capsys):
    def no_name():
        raise OSError("no user name")

    monkeypatch.setattr(getpass, "getuser", no_name)
    with pytest.raises(typer.Exit):
        operator.cli_actor()
    assert "set HUB_OPERATOR" in capsys.readouterr().err
