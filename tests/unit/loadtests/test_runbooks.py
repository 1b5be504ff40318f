"""Runbooks, README and monitoring files: every `hub` command exists and the rules load."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hub.cli.main import app

REPO = Path(__file__).resolve().parents[3]
RUNBOOKS = REPO / "runbooks"
DOCUMENTS = sorted(RUNBOOKS.glob("*.md")) + [REPO / "README.md", REPO / "docs" / "capacity.md"]
CODE_BLOCK = re.compile(r"```(?:sh|bash|console)?\n(.*?)```", re.DOTALL)
RUNBOOK_NAMES = [
    "surge-and-overflow",
    "broker-outage",
    "agency-webhook-down",
    "database-outage",
    "worker-crash-loop",
    "key-rotation",
    "suspected-key-compromise",
    "tenant-onboarding",
    "tenant-offboarding",
    "false-alert",
    "alert-not-going-out",
    "disaster-mode",
    "audit-evidence-for-an-assessor",
]
SECTIONS = ["## Symptom", "## Detection", "## Steps", "## Verification", "## Rollback"]


def documented_commands() -> list[tuple[str, str]]:
    """Return (document name, command line) for each `hub` line in a shell code block."""
    commands = []
    for path in DOCUMENTS:
        if not path.is_file():
            continue
        for block in CODE_BLOCK.findall(path.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = line.strip()
                if line.startswith("hub "):
                    commands.append((path.name, line.split("  #")[0].strip()))
    return commands


def is_group(command: Any) -> bool:
    # Typer ships its own copy of click, so command classes are checked by their attributes.
    return hasattr(command, "commands")


def resolve(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """Walk the command tree along `words`; return the command, its path and the rest."""
    command = typer.main.get_command(app)
    path: list[str] = []
    rest = list(words)
    while is_group(command) and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return command, path, rest


COMMANDS = documented_commands()


def test_documents_contain_hub_commands() -> None:
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("document", "line"), COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_documented_command_accepts_arguments(document: str, line: str) -> None:
    words = shlex.split(line)[1:]
    command, path, rest = resolve(words)

    assert path, f"{document}: `hub {words[0]}` does not exist: {line}"
    assert not is_group(command), f"{document}: `hub {' '.join(path)}` needs a subcommand"
    help_result = CliRunner().invoke(app, [*path, "--help"])
    assert help_result.exit_code == 0, f"{document}: `hub {' '.join(path)} --help` failed"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = [word.split("=")[0] for word in rest if word.startswith("--")]
    unknown = [word for word in used if word not in options]
    assert not unknown, f"{document}: `hub {' '.join(path)}` has no option {unknown}"
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    takes_value = {
        opt
        for param in command.params
        if param.param_type_name == "option" and not param.is_flag
        for opt in param.opts
    }
    positional, skip = [], False
    for word in rest:
        if skip:
            skip = False
        elif word.startswith("--"):
            skip = "=" not in word and word in takes_value
        else:
            positional.append(word)
    maximum = sum(1 if a.nargs == 1 else 10**6 for a in arguments)
    assert len(positional) <= maximum, f"{document}: too many arguments for `hub {' '.join(path)}`"
    required = sum(1 for a in arguments if a.required)
    assert len(positional) >= required, f"{document}: missing arguments for `hub {' '.join(path)}`"
    missing_options = [
        param.opts[0]
        for param in command.params
        if param.param_type_name == "option"
        and param.required
        and not any(opt in used for opt in (*param.opts, *param.secondary_opts))
    ]
    assert not missing_options, (
        f"{document}: `hub {' '.join(path)}` needs the option(s) {missing_options}: {line}"
    )


@pytest.mark.parametrize("name", RUNBOOK_NAMES)
def test_runbook_has_every_section(name: str) -> None:
    text = (RUNBOOKS / f"{name}.md").read_text(encoding="utf-8")

    for section in SECTIONS:
        assert section in text, f"{name}.md lacks {section}"
    assert "```sh" in text


def rule_files() -> list[dict]:
    return yaml.safe_load((RUNBOOKS / "alerts.yml").read_text(encoding="utf-8"))["groups"]


def test_alert_rules_structure() -> None:
    names = []
    for group in rule_files():
        assert group["name"]
        for rule in group["rules"]:
            assert rule["alert"]
            assert rule["expr"].strip()
            assert rule["labels"]["severity"] in {"page", "warning", "info"}
            assert (REPO / rule["annotations"]["runbook"]).is_file(), rule["alert"]
            names.append(rule["alert"])
    assert len(names) == len(set(names))


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus); structure checked")
    result = subprocess.run(
        [promtool, "check", "rules", str(RUNBOOKS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_on_stalled_alert() -> None:
    """The rules about alerts that do not go out fire on a stalled alert and stay quiet on a
    large alert paced by its rate limits. HubWorkerCrashLoop fires on a worker restarted every
    15 s but not on a rolling deploy. The cases are in alert_rules_test.yml."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    cases = Path(__file__).with_name("alert_rules_test.yml")
    result = subprocess.run(
        [promtool, "test", "rules", cases.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cases.parent,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_runbooks_name_existing_alert_rules() -> None:
    alerts = {rule["alert"] for group in rule_files() for rule in group["rules"]}
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")

    named = set(re.findall(r"\bHub[A-Z][A-Za-z]+\b", index))
    assert named <= alerts
    assert alerts <= named


def test_grafana_dashboard_uses_hub_metrics() -> None:
    dashboard = json.loads((RUNBOOKS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]

    assert dashboard["uid"]
    assert len(expressions) >= 15
    assert all("hub_" in expr for expr in expressions)


def test_monitoring_files_name_defined_metrics() -> None:
    """Every `hub_` metric in the alert rules, the dashboard and the observability page is
    defined in the source, so no rule or panel watches a metric that never exists."""
    sources = "".join(
        path.read_text(encoding="utf-8")
        for package in ("hub", "privacy", "tenants", "failover")
        for path in (REPO / package).rglob("*.py")
    )
    files = [RUNBOOKS / "alerts.yml", RUNBOOKS / "grafana-dashboard.json"]
    files.append(REPO / "docs" / "observability.md")

    for path in files:
        for name in sorted(set(re.findall(r"\bhub_[a-z0-9_]+\b", path.read_text("utf-8")))):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            defined = f'"{name}"' in sources or f'"{base}"' in sources
            assert defined, f"{path.name}: metric {name} is not defined in the source"


def test_observability_page_lists_every_metric() -> None:
    """Every metric family the source defines has a row on the observability page."""
    sources = "".join(
        path.read_text(encoding="utf-8")
        for package in ("hub", "privacy", "tenants", "failover")
        for path in (REPO / package).rglob("*.py")
    )
    constructors = r"\b(?:Counter|Gauge|Histogram|Summary|GaugeSpec|GaugeMetricFamily)\(\s*"
    defined = set(re.findall(constructors + r'"(hub_[a-z0-9_]+)"', sources))
    page = (REPO / "docs" / "observability.md").read_text(encoding="utf-8")

    assert len(defined) >= 40
    missing = sorted(name for name in defined if re.sub(r"_total$", "", name) not in page)
    assert missing == []


def test_assessor_verify_pins_public_key() -> None:
    """Without `--public-key` the signatures are checked only against keys inside the file."""
    runbook = "audit-evidence-for-an-assessor.md"
    verify_lines = [c for d, c in COMMANDS if d == runbook and c.startswith("hub audit verify")]

    assert verify_lines
    for line in verify_lines:
        assert "--public-key" in shlex.split(line), line


def test_runbook_load_runs_name_staging() -> None:
    """A load run adds tenants, keys and requests to its database, so each runbook step that
    runs `hub loadtest` directs the reader to run it on staging, or not to run it."""
    for path in sorted(RUNBOOKS.glob("*.md")):
        blocks = path.read_text(encoding="utf-8").split("\n\n")
        for index, block in enumerate(blocks):
            if "hub loadtest" not in block:
                continue
            # The block with the command and its neighbours: a step's text, code and note.
            passage = "\n\n".join(blocks[max(index - 1, 0) : index + 2])
            assert "staging" in passage or "Do not run" in passage, f"{path.name}: {block}"


def test_crash_loop_rule_counts_worker_starts() -> None:
    """HubWorkerCrashLoop reads the starts recorded in the database. A rule on changes of a
    scraped gauge missed 5 restarts 15 s apart, because each worker was down for about 3 s."""
    rules = {rule["alert"]: rule for group in rule_files() for rule in group["rules"]}
    expr = rules["HubWorkerCrashLoop"]["expr"].strip()

    match = re.fullmatch(r"max by \(host\) \(hub_worker_recent_starts\) > (\d+)", expr)
    assert match, expr
    # The drill: one start, then 5 restarts within 10 minutes.
    assert 1 <= int(match.group(1)) < 6
    runbook = (RUNBOOKS / "worker-crash-loop.md").read_text(encoding="utf-8")
    assert "hub_worker_recent_starts" in runbook
