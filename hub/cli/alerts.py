"""`hub alerts`: validate, compose, approve, send and follow CAP alerts; manage subscribers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import NoReturn

import typer
from rich.progress import Progress

from hub.alerts import workflow
from hub.alerts.cap.model import Alert as CapAlert
from hub.alerts.cap.problems import InvalidCap, Problem
from hub.alerts.cap.validate import check_document
from hub.alerts.channels import reveal_webhook_secret
from hub.alerts.importer import count_records, import_subscribers
from hub.alerts.service import compose_problems, expiry_problems
from hub.alerts.subscriber_counts import subscriber_counts
from hub.cli.operator import cli_actor
from hub.cli.output import (
    JSON_OPTION,
    cli_errors,
    console,
    emit,
    err_console,
    print_error,
    require_file,
    table,
)
from hub.core.clock import local_and_utc
from hub.core.db import unit_of_work
from hub.core.logging import configure_logging
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, TenantContext
from tenants.registry import get_tenant

app = typer.Typer(help="CAP 1.2 alerts: validate, compose, approve, send, status.")


@app.callback()
def _logging() -> None:
    # Logs go to stderr, so stdout carries only the command's output (one document with --json).
    configure_logging()


def _check_file(path: Path) -> tuple[CapAlert | None, list[str], list[Problem], list[str]]:
    """Return the alert, its extra tenants, its problems and its warnings.

    CAP XML gets the schema's rules, and an expiry that has passed is a warning, because the
    file is still valid CAP; a YAML or JSON composition gets the rules of compose.
    """
    data = path.read_bytes()
    if workflow.is_xml(data):
        alert, problems = check_document(data)
        expired = expiry_problems(alert) if alert is not None and not problems else []
        warnings = [f"{p.path}: compose rejects the alert: {p.message}" for p in expired]
        return alert, [], problems, warnings
    try:
        cap, tenants, _kind = workflow.read_composition(data, name=str(path))
    except InvalidCap as exc:
        return None, [], exc.problems, []
    return cap, tenants, compose_problems(cap), []


def _problem_list(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"path": p.path, "message": p.message} for p in problems]


@app.command("validate")
def validate_command(
    path: Path = typer.Argument(..., help="Alert as CAP 1.2 XML, or YAML or JSON to compose."),
    tenant: str | None = typer.Option(
        None,
        "--tenant",
        help="Also check that the areas overlap the service area of this tenant (and of the "
        "--also tenants and the file's tenants list), as compose does.",
    ),
    also: list[str] = typer.Option(
        [], "--also", help="Another tenant of the region the alert would include (repeatable)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print every problem in an alert file; exit 1 when it is invalid.

    YAML and JSON files also get the stricter rules for alerts the hub sends, among them an
    `expires` that has passed. In CAP XML a passed `expires` is a warning, because compose
    rejects the alert although it is valid CAP. With --tenant, an area that overlaps the
    service area of none of the tenants is a problem.
    """
    with cli_errors():
        require_file(path)
        alert, tenants, problems, warnings = _check_file(path)
        if tenant is not None and alert is not None and not problems:
            problems, missed = workflow.check_areas(
                None, _manager(tenant, "operator"), alert, tenants + list(also)
            )
            warnings += missed
    data = {
        "file": str(path),
        "valid": not problems,
        "identifier": alert.identifier if alert else None,
        "problems": _problem_list(problems),
        "warnings": warnings,
    }

    def render(result: dict) -> None:
        if result["valid"]:
            console.print(f"{path}: valid CAP 1.2 ({result['identifier']})", markup=False)
        else:
            console.print(f"{path}: {len(problems)} problem(s)", markup=False)
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        _print_warnings(warnings)

    emit(data, as_json, render)
    if problems:
        raise typer.Exit(1)


def _print_warnings(warnings: list[str] | list[tuple[str, str]]) -> None:
    """Print warnings to stderr, each text once. A (tenant id, text) pair is printed with the
    tenant id in front, because a regional alert repeats a warning in each tenant's part."""
    printed: set[str] = set()
    for warning in warnings:
        prefix, text = (
            (f"{warning[0]}: ", warning[1]) if isinstance(warning, tuple) else ("", warning)
        )
        if text in printed:
            continue
        printed.add(text)
        err_console.print(
            f"  warning: {prefix}{text}", markup=False, highlight=False, soft_wrap=True
        )


TENANT_OPTION = typer.Option(..., "--tenant", help="Tenant id the emergency manager acts for.")
ACTOR_OPTION = typer.Option(
    ...,
    "--as",
    help="Name of the emergency manager acting, recorded in the audit log: the holder of an "
    "active emergency_manager key of the tenant (`hub tenants keys create --holder NAME`), "
    "ignoring case. Approvals count it and that key as one person.",
)


def _manager(tenant: str, actor: str) -> TenantContext:
    return TenantContext(tenant, actor=f"cli:{actor}", roles=frozenset({ROLE_EMERGENCY_MANAGER}))


def _review_note(row: dict) -> str:
    """Describe the review state of a single-approver alert, or return "" for other alerts."""
    if row.get("reviewed_at"):
        when = _tenant_time(row["reviewed_at"], row["tenant_id"])
        return f"reviewed by {row['reviewer']} at {when}"
    if row.get("awaiting_review"):
        return f"awaiting review, due {_tenant_time(row['review_due_at'], row['tenant_id'])}"
    return ""


def _tenant_time(value: object, tenant_id: str) -> str:
    """Format a time in the tenant's time zone and in UTC."""
    if not isinstance(value, datetime):
        return str(value)
    tenant = get_tenant(tenant_id)
    return local_and_utc(value, tenant.timezone if tenant else "UTC")


def _sent(row: dict) -> str:
    """Return the CAP `sent` time as an Update's or Cancel's `references` must give it."""
    value = row["sent"]
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _print_rows(rows: list[dict]) -> None:
    table(
        None,
        ["id", "tenant", "identifier", "sent", "status", "msgType", "state", "note"],
        [
            [
                r["id"],
                r["tenant_id"],
                r["identifier"],
                _sent(r),
                r["status"],
                r["msg_type"],
                r["state"],
                r.get("hold_reason") or _review_note(r),
            ]
            for r in rows
        ],
    )


@app.command("compose")
def compose_command(
    path: Path = typer.Argument(..., help="Alert as CAP 1.2 XML, YAML or JSON."),
    tenant: str = TENANT_OPTION,
    also: list[str] = typer.Option(
        [], "--also", help="Another tenant of the region to include (repeatable)."
    ),
    notice: bool = typer.Option(False, "--notice", help="Send as a non-emergency notice."),
    actor: str = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Store an alert as a draft for approval; an Update or Cancel with an unknown reference
    is held and reported."""
    with cli_errors():
        require_file(path)
        try:
            cap, tenants, kind = workflow.read_composition(path.read_bytes(), name=str(path))
            rows = workflow.compose(
                None,
                workflow.named_manager(None, tenant, actor),
                cap,
                tenants=tenants + list(also),
                kind="notice" if notice else kind,
            )
        except InvalidCap as exc:
            _fail_problems(path, exc, as_json)

    def render(data: list[dict]) -> None:
        _print_rows(data)
        _print_warnings(
            [(row["tenant_id"], warning) for row in data for warning in row.get("warnings", [])]
        )

    emit(rows, as_json, render)
    if any(r["state"] == "held" for r in rows):
        raise typer.Exit(1)


def _fail_problems(path: Path, exc: InvalidCap, as_json: bool) -> NoReturn:
    """Print every problem of an invalid alert file and exit 2. Under `--json` the error
    document on stdout lists them in `problems`, as `hub alerts validate --json` does."""
    print_error(
        f"{path} is not a valid alert; fix the problems listed and compose it again",
        code=2,
        as_json=as_json,
        file=str(path),
        problems=_problem_list(exc.problems),
    )
    for problem in exc.problems:
        err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command("approve")
def approve_command(
    alert_id: str = typer.Argument(..., help="Alert id printed by `hub alerts compose`."),
    tenant: str = TENANT_OPTION,
    actor: str = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve this tenant's part of an alert as the named emergency manager, and print the
    approval state of each participating tenant's part and which approval is still needed."""
    with cli_errors():
        result = workflow.approve(None, workflow.named_manager(None, tenant, actor), alert_id)

    def render(data: dict) -> None:
        for state in data["tenants"]:
            heading = f"{state['tenant_id']} (alert {state['id']}, {state['state']})"
            console.print(f"{heading}: {state['message']}", markup=False, highlight=False)

    emit(result, as_json, render)


@app.command("review")
def review_command(
    alert_id: str = typer.Argument(..., help="Alert id, as `hub alerts list` prints it."),
    tenant: str = TENANT_OPTION,
    actor: str = ACTOR_OPTION,
    note: str | None = typer.Option(
        None, "--note", help="What the review found, up to 1,000 characters."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Review an alert that one emergency manager approved alone (Immediate and Extreme
    alerts, when the tenant's policy allows it). The reviewer must be another emergency
    manager, and the review is recorded in the audit log."""
    with cli_errors():
        row = workflow.review(None, workflow.named_manager(None, tenant, actor), alert_id, note)
    emit([row], as_json, _print_rows)


@app.command("send")
def send_command(
    alert_id: str = typer.Argument(..., help="Alert id printed by `hub alerts compose`."),
    tenant: str = TENANT_OPTION,
    actor: str = ACTOR_OPTION,
    approved_only: bool = typer.Option(
        False,
        "--approved-only",
        help="For a regional alert: send the parts already approved now, and leave each other "
        "part to a later send once it is approved. Without it, every part must be approved.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start the fan-out of an approved alert in every participating tenant, and print for
    each tenant's part the deliveries queued or why it was not sent."""
    with cli_errors():
        ctx = workflow.named_manager(None, tenant, actor)
        result = workflow.send(None, ctx, alert_id, approved_only=approved_only)

    def render(data: dict) -> None:
        if data["already_sent"]:
            console.print(f"alert {alert_id} was already sent; nothing to do", markup=False)
            return
        for part in data["tenants"]:
            heading = f"{part['tenant_id']} (alert {part['id']})"
            console.print(f"{heading}: {part['message']}", markup=False, highlight=False)

    emit(result, as_json, render)


@app.command("status")
def status_command(
    alert_id: str = typer.Argument(..., help="Alert id."),
    tenant: str = TENANT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the live delivery state of an alert per tenant, channel and state."""
    with cli_errors():
        rows = workflow.status(None, _manager(tenant, "operator"), alert_id)

    def render(data: list[dict]) -> None:
        lines = []
        for row in data:
            if not row["deliveries"]:
                lines.append([row["tenant_id"], row["state"], "", "", "", "", "", ""])
            for channel, counts in sorted(row["deliveries"].items()):
                lines.append(
                    [
                        row["tenant_id"],
                        row["state"],
                        channel,
                        counts.get("pending", 0),
                        counts.get("sent", 0),
                        counts.get("failed", 0),
                        _dropped_note(counts.get("dropped", 0), row["drop_reasons"].get(channel)),
                        _error_note(row["errors"].get(channel, {})),
                    ]
                )
        table(
            f"alert {alert_id}",
            ["tenant", "state", "channel", "pending", "sent", "failed", "dropped", "last error"],
            lines,
        )
        for row in data:
            note = _state_note(row)
            if note:
                console.print(f"{row['tenant_id']}: {note}", markup=False, highlight=False)
            review = _review_note(row)
            if review:
                console.print(f"{row['tenant_id']}: {review}", markup=False)

        # Every tenant's row carries the same CAP message, so one line serves them all.
        for reference in sorted({_reference(row) for row in data}):
            console.print(
                f"an Update or Cancel of this alert gives references: {reference}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    emit(rows, as_json, render)


def _reference(row: dict) -> str:
    """Return `sender,identifier,sent`, the CAP reference to this alert."""
    return f"{row['sender']},{row['identifier']},{_sent(row)}"


def _error_note(reasons: dict[str, int]) -> str:
    """Join a channel's error reasons with their delivery counts, most frequent first."""
    return "; ".join(f"{reason} ({count})" for reason, count in reasons.items())


def _dropped_note(count: int, reasons: dict[str, int] | None) -> str:
    """Return the dropped count with why they were dropped: `2 (cancelled 2)`."""
    if not reasons:
        return str(count)
    return f"{count} ({', '.join(f'{reason} {n}' for reason, n in reasons.items())})"


def _state_note(row: dict) -> str:
    """Explain a state that reports failed deliveries, or return ""."""
    if row["state"] == "failed":
        return "no delivery succeeded; residents were not reached (see the last error column)"
    if row["state"] == "partly_failed":
        return "some deliveries failed for good (see the failed and last error columns)"
    if row["state"] == "sending" and row["errors"]:
        return "some deliveries failed and are retried with backoff, up to 6 attempts"
    return ""


@app.command("preview")
def preview_command(
    alert_id: str = typer.Argument(..., help="Alert id."),
    tenant: str = TENANT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show messages per tenant, channel and language (one per resident and channel), the
    residents they reach and the time each channel needs at its configured rate. Warn about
    residents who get another language than they prefer, channels without a provider and
    tenants where nobody would get the alert."""
    with cli_errors():
        rows = workflow.preview(None, _manager(tenant, "operator"), alert_id)

    def render(data: list[dict]) -> None:
        lines = []
        for row in data:
            for channel, count in sorted(row["by_channel"].items()):
                lines.append([row["tenant_id"], channel, count, row["seconds_by_channel"][channel]])
            languages = ", ".join(f"{k}: {v}" for k, v in sorted(row["by_language"].items()))
            lines.append([row["tenant_id"], "languages", languages, ""])
        table(f"preview of {alert_id}", ["tenant", "channel", "messages", "seconds"], lines)
        for row in data:
            console.print(
                f"{row['tenant_id']}: {row['subscribers']} resident(s) get "
                f"{row['recipients']} message(s), one per resident and channel",
                markup=False,
                highlight=False,
            )
            _print_warnings([(row["tenant_id"], warning) for warning in row["warnings"]])

    emit(rows, as_json, render)


@app.command("list")
def list_command(
    tenant: str = TENANT_OPTION,
    awaiting_review: bool = typer.Option(
        False,
        "--awaiting-review",
        help="List only alerts approved by a single emergency manager and not reviewed yet.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the tenant's most recent alerts. The note column gives the reason an alert is
    held, or its review state."""
    with cli_errors():
        rows = workflow.list_alerts(
            None, _manager(tenant, "operator"), awaiting_review=awaiting_review
        )
    emit(rows, as_json, _print_rows)


subscribers_app = typer.Typer(help="Alert subscribers: bulk opt-in lists and counts.")
app.add_typer(subscribers_app, name="subscribers")


@subscribers_app.command("import")
def import_subscribers_command(
    path: Path = typer.Argument(..., help="Opt-in list as .csv or .json."),
    tenant: str = typer.Option(..., "--tenant", help="Tenant the residents subscribe to."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Subscribe every resident in an opt-in list; bad records are skipped and listed.
    Residents already subscribed with the same channels and addresses are skipped, so
    importing a list again creates no duplicate subscribers."""
    with cli_errors():
        require_file(path)
        total = count_records(path)
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("importing subscribers", total=total)
            result = import_subscribers(
                None, tenant, path, progress=lambda n: progress.advance(task, n)
            )

    def render(data: dict) -> None:
        console.print(
            f"{data['imported']} subscribers imported, {data['skipped_existing']} skipped as "
            f"already subscribed, {data['skipped']} skipped as invalid",
            markup=False,
        )
        for problem in data["problems"]:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)

    emit(result, as_json, render)


@app.command("webhook-key")
def webhook_key_command(
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the key that signs the tenant's resident webhooks (X-Hub-Signature-256), for the
    city app that checks them. Each use is recorded in the audit log."""
    ctx = TenantContext(tenant, actor=cli_actor())
    with cli_errors():
        with unit_of_work(ctx) as session:
            key = reveal_webhook_secret(session, ctx)
    data = {"tenant_id": tenant, "webhook_key": key}
    emit(
        data,
        as_json,
        lambda d: print(
            f"alert webhook key of {d['tenant_id']}; give it to the city app's developers over "
            f"a secure channel:\n{d['webhook_key']}"
        ),
    )


@subscribers_app.command("counts")
def subscriber_counts_command(
    tenant: str | None = typer.Option(
        None, "--tenant", help="Count only this tenant's subscribers; default: every tenant."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print, per tenant, how many active subscribers prefer each language and how many
    active channels of each kind they have. The output has no personal data."""
    with cli_errors():
        rows = subscriber_counts(None, tenant)

    def render(data: list[dict]) -> None:
        lines = []
        for row in data:
            lines.append([row["tenant_id"], "subscribers", "all", row["subscribers"]])
            lines.append([row["tenant_id"], "subscribers", "test opt-in", row["test_opt_in"]])
            for language, count in row["by_language"].items():
                lines.append([row["tenant_id"], "language", language, count])
            for channel, count in row["by_channel"].items():
                lines.append([row["tenant_id"], "channel", channel, count])
        table("active alert subscribers", ["tenant", "by", "value", "count"], lines)

    emit(rows, as_json, render)
