"""The `hub` entry point: usage errors under `--json`, port bounds and flag help."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.core.settings import reset_settings_cache


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["overflow", "simulate", "--from-tenant", "boston", "--surge", "abc", "--json"],
            "Invalid value for '--surge'",
        ),
        (["overflow", "staffing", "--handle-time", "240", "--json"], "Missing option"),
        (["overflow", "simulate", "--no-such-option", "--json"], "No such option"),
        (["no-such-command", "--json"], "No such command"),
        (["overflow", "no-such-command", "--json"], "No such command"),
    ],
)
def test_usage_error_json_document(args, expected):
    result = run(*args)

    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert set(document) == {"error", "exit_code"}
    assert expected in document["error"]
    assert "--help" in document["error"]
    assert document["exit_code"] == 2


def test_usage_error_text_without_json():
    result = run("overflow", "simulate", "--from-tenant", "boston", "--surge", "abc")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '--surge'" in result.stderr


@pytest.mark.parametrize("port", ["0", "-1", "65536", "99999"])
def test_serve_port_out_of_range(port):
    result = run("serve", "--port", port)

    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.stderr


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_worker_metrics_port_out_of_range(port):
    result = run("worker", "--metrics-port", port)

    assert result.exit_code == 2
    assert "Invalid value for '--metrics-port'" in result.stderr


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["serve", "--help"], ["--worker", "--help"]),
        (["overflow", "staffing", "--help"], ["--json", "--help"]),
    ],
)
def test_help_shows_flags_without_type(args, flags):
    result = run(*args)

    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    for flag in flags:
        assert flag in result.stdout
    # Options that take a value still show its type.
    assert "<float>" in result.stdout or "<int range>" in result.stdout


@pytest.mark.parametrize(
    ("args", "summary"),
    [
        (
            ["--help"],
            "Onboard the example cities, file a day of requests through Open311, route them to "
            "local agency receivers and print a summary per tenant.",
        ),
        (
            ["alerts", "--help"],
            "Store an alert as a draft for approval; an Update or Cancel with an unknown "
            "reference is held and reported.",
        ),
    ],
)
def test_command_list_summary_on_one_line(monkeypatch, args, summary):
    # Wide enough for the whole summary, so only a line break kept from the docstring splits it.
    monkeypatch.setenv("COLUMNS", "300")
    result = run(*args)

    assert result.exit_code == 0
    assert summary in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HUB_API_THREADS", "0", "HUB_API_THREADS='0': Input should be greater than or equal to 1"),
        ("HUB_DATABASE_URL", "notaurl", "HUB_DATABASE_URL='notaurl': not a database URL"),
        (
            "HUB_DATABASE_URL",
            "mysql://hub:secret@127.0.0.1/hub",
            "HUB_DATABASE_URL='mysql://hub:***@127.0.0.1/hub': the hub runs on",
        ),
        ("HUB_LOG_LEVEL", "LOUD", "HUB_LOG_LEVEL='LOUD': unknown log level"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_setting_names_the_variable(monkeypatch, tmp_path, variable, value, expected, as_json):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    reset_settings_cache()
    try:
        result = run("tenants", "list", *(["--json"] if as_json else []))
    finally:
        monkeypatch.delenv(variable)
        reset_settings_cache()

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert expected in result.stderr
    assert "secret" not in result.output
    if as_json:
        assert expected in json.loads(result.stdout)["error"]


def test_unreachable_database_is_one_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql+psycopg://hub:secret@127.0.0.1:9/hub")
    reset_settings_cache()
    try:
        result = run("tenants", "list")
    finally:
        monkeypatch.delenv("HUB_DATABASE_URL")
        reset_settings_cache()

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "could not use the database at postgresql+psycopg://hub:***@127.0.0.1:9/hub" in (
        result.stderr
    )
    assert "correct HUB_DATABASE_URL" in result.stderr
    assert "secret" not in result.output
