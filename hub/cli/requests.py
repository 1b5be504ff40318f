"""`hub requests`: a tenant's service requests and their deliveries, for operators and staff.

`list` and `find` print no personal data. `show` prints personal fields only when given a
`--purpose`, and then decrypts them through `privacy.access`, which writes an audit entry.
`redeliver` sends dead agency deliveries again, paced per agency, and writes an audit entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from sqlalchemy.orm import Session

from hub.cli.imports import resolve_tenant
from hub.cli.operator import cli_actor
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, fail, table
from hub.core.clock import isoformat
from hub.core.db import unit_of_work
from hub.core.logging import configure_logging
from hub.core.tenancy import ROLE_STAFF, TenantContext
from hub.requests.listing import (
    UNDELIVERED_STATES,
    RequestFilters,
    count_requests,
    list_requests,
)
from hub.requests.models import STATES, ServiceRequest, StatusEvent
from hub.requests.queries import events_by_request
from hub.requests.redelivery import DEFAULT_RATE_PER_MINUTE, parse_rate, redeliver, undelivered
from hub.requests.service import get_request, search_by_contact
from hub.requests.validation import parse_datetime
from privacy.access import check_caller, decrypt_fields
from privacy.registry import encrypted_tables

app = typer.Typer(
    help="List, show and find a tenant's service requests; resend dead agency deliveries.",
    no_args_is_help=True,
)

REQUESTS_TABLE = "service_requests"
EVENTS_TABLE = "status_events"
TENANT_OPTION = typer.Option(..., "--tenant", help="Id of the tenant whose requests to read.")


def _personal_columns() -> tuple[str, ...]:
    # The ciphertext columns as `hub.requests.models` registers them with the privacy package.
    return next(t.columns for t in encrypted_tables() if t.table == REQUESTS_TABLE)


Result = TypeVar("Result")


def _context(tenant_id: str) -> TenantContext:
    tenant = resolve_tenant(tenant_id)
    return TenantContext(tenant.id, actor=cli_actor(), roles=frozenset({ROLE_STAFF}))


def _read(tenant_id: str, read: Callable[[Session, TenantContext], Result]) -> Result:
    """Return what `read` finds in a read-only transaction of the tenant, as the CLI operator."""
    configure_logging()
    with cli_errors():
        ctx = _context(tenant_id)
        with unit_of_work(ctx, write=False) as session:
            return read(session, ctx)


def summary(request: ServiceRequest) -> dict[str, Any]:
    """Return the fields of a request that carry no personal data."""
    return {
        "id": request.id,
        "service_code": request.service_code,
        "status": request.status,
        "resolution": request.resolution,
        "agency_code": request.agency_code,
        "requested_at": isoformat(request.requested_at),
        "updated_at": isoformat(request.updated_at),
        "expected_at": isoformat(request.expected_at),
        "closed_at": isoformat(request.closed_at),
        "lat": request.lat,
        "long": request.lon,
        "zipcode": request.zipcode,
        "channel": request.channel,
        "source": request.source,
        "source_id": request.source_id,
    }


def _summary_rows(requests: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r["id"], r["service_code"], r["status"], r["requested_at"], r["source"], r["source_id"])
        for r in requests
    ]


SUMMARY_COLUMNS = ["id", "service", "status", "requested", "source", "source id"]


@app.command("list")
def list_command(
    tenant_id: str = TENANT_OPTION,
    status: list[str] = typer.Option(
        [],
        "--status",
        help=f"Only this state (repeatable): {', '.join(STATES)}, or the Open311 groups open "
        "(every state but closed) and closed.",
    ),
    service: list[str] = typer.Option([], "--service", help="Only this service code (repeatable)."),
    source: str | None = typer.Option(
        None, "--source", help="Only requests from this source, such as nyc311 or open311."
    ),
    agency: list[str] = typer.Option(
        [], "--agency", help="Only requests routed to this agency code (repeatable)."
    ),
    delivery: list[str] = typer.Option(
        [],
        "--delivery",
        help=f"Only requests with a delivery in this state (repeatable): "
        f"{' or '.join(UNDELIVERED_STATES)}. With --agency, only deliveries to those agencies.",
    ),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="Requests to print."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a tenant's requests, newest first (no personal data)."""
    filters = RequestFilters(status, service, source, agency, delivery)

    def read(session: Session, ctx: TenantContext) -> dict[str, Any]:
        rows = list_requests(session, ctx, filters, limit=limit)
        total = count_requests(session, ctx, filters)
        return {"tenant": ctx.tenant_id, "total": total, "requests": [summary(r) for r in rows]}

    data = _read(tenant_id, read)

    def render(result: dict[str, Any]) -> None:
        shown = len(result["requests"])
        title = f"Requests of {result['tenant']} ({shown} of {result['total']})"
        table(title, SUMMARY_COLUMNS, _summary_rows(result["requests"]))

    emit(data, as_json, render)


@app.command("show")
def show_command(
    request_id: str = typer.Argument(..., metavar="ID", help="The request's tracking id."),
    tenant_id: str = TENANT_OPTION,
    purpose: str | None = typer.Option(
        None,
        "--purpose",
        help="Why personal fields are needed: a purpose the tenant's manifest declares in "
        "privacy.decryption_purposes (by default staff.request_view). Decrypts them and writes "
        "an audit entry. Without it only non-personal fields are shown.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one request with its status history."""
    configure_logging()
    with cli_errors():
        ctx = _context(tenant_id)
        with unit_of_work(ctx) as session:
            if purpose is not None:
                # The operator names the purpose, so only the tenant's staff purposes count.
                check_caller(session, ctx, REQUESTS_TABLE, request_id, purpose=purpose)
            request = get_request(session, ctx, request_id)
            events = events_by_request(session, ctx, [request.id]).get(request.id, [])
            data = summary(request)
            data["history"] = [_event(session, ctx, event, purpose) for event in events]
            if purpose is not None:
                blobs = {column: getattr(request, column) for column in _personal_columns()}
                plain = decrypt_fields(
                    session, ctx, REQUESTS_TABLE, request.id, blobs, purpose=purpose
                )
                data["personal"] = {
                    column.removesuffix("_enc"): value for column, value in plain.items()
                }
    emit(data, as_json, _render_request)


def _event(
    session: Any, ctx: TenantContext, event: StatusEvent, purpose: str | None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "at": isoformat(event.at),
        "status": event.status,
        "resolution": event.resolution,
        "actor": event.actor,
        "channel": event.channel,
        "has_note": event.note_enc is not None,
    }
    if purpose is not None and event.note_enc is not None:
        plain = decrypt_fields(
            session, ctx, EVENTS_TABLE, str(event.id), {"note_enc": event.note_enc}, purpose=purpose
        )
        item["note"] = plain["note_enc"]
    return item


def _render_request(data: dict[str, Any]) -> None:
    fields = {k: v for k, v in data.items() if k not in ("history", "personal")}
    table(f"Request {data['id']}", ["field", "value"], list(fields.items()))
    if "personal" in data:
        table("Personal fields (decrypted, audited)", ["field", "value"], data["personal"].items())
    else:
        console.print("personal fields hidden; pass --purpose to decrypt them (audited)")
    table(
        "History",
        ["at", "status", "resolution", "actor", "note"],
        [
            (e["at"], e["status"], e["resolution"], e["actor"], e.get("note", ""))
            for e in data["history"]
        ],
    )


@app.command("find")
def find_command(
    tenant_id: str = TENANT_OPTION,
    phone: str | None = typer.Option(None, "--phone", help="Caller's phone number, any format."),
    email: str | None = typer.Option(None, "--email", help="Caller's email address."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="Requests to print."),
    purpose: str | None = typer.Option(
        None,
        "--purpose",
        help="Why you search, as a purpose the tenant declares for staff; the audit entry "
        "records it.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find a caller's requests by phone or email through the blind index (no decryption).

    The search is audited, with the blind index in place of the phone or email.
    """
    configure_logging()
    if not phone and not email:
        fail("give --phone NUMBER or --email ADDRESS to search by")
    with cli_errors():
        ctx = _context(tenant_id)
        with unit_of_work(ctx) as session:
            rows = search_by_contact(
                session, ctx, email=email, phone=phone, limit=limit, purpose=purpose
            )
            data = {"tenant": ctx.tenant_id, "requests": [summary(r) for r in rows]}

    def render(result: dict[str, Any]) -> None:
        title = f"Requests of {result['tenant']} from this caller ({len(result['requests'])})"
        table(title, SUMMARY_COLUMNS, _summary_rows(result["requests"]))

    emit(data, as_json, render)


@app.command("deliveries")
def deliveries_command(
    tenant_id: str = typer.Option(..., "--tenant", help="Tenant id."),
    agency: str | None = typer.Option(
        None, "--agency", help="Only deliveries to this agency code. Default: every agency."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the deliveries that have not reached their agency: retrying and dead, per agency."""
    tenant, standings = _read(
        tenant_id, lambda session, ctx: (ctx.tenant_id, undelivered(session, ctx, agency=agency))
    )
    data = {
        "tenant": tenant,
        "agencies": [
            {
                "agency": entry.agency,
                "state": entry.state,
                "deliveries": entry.deliveries,
                "oldest_first_attempt": isoformat(entry.oldest_first_attempt),
                "last_errors": sorted(entry.last_errors),
            }
            for entry in standings
        ],
    }

    def render(result: dict[str, Any]) -> None:
        if not result["agencies"]:
            console.print(f"no delivery of {result['tenant']} is failing or dead", markup=False)
            return
        rows = [
            (
                entry["agency"],
                entry["state"],
                entry["deliveries"],
                entry["oldest_first_attempt"] or "",
                ", ".join(entry["last_errors"]),
            )
            for entry in result["agencies"]
        ]
        columns = ["agency", "state", "deliveries", "oldest first attempt", "last errors"]
        table(f"Undelivered deliveries of {result['tenant']}", columns, rows)

    emit(data, as_json, render)


@app.command("redeliver")
def redeliver_command(
    tenant_id: str = typer.Option(
        ..., "--tenant", help="Id of the tenant whose deliveries to resend."
    ),
    agency: str | None = typer.Option(
        None, "--agency", help="Only deliveries to this agency code. Default: every agency."
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="ISO-DATETIME",
        help="Only deliveries that went dead at or after this time, with a UTC offset, such as "
        "2024-01-31T09:00:00-05:00. Default: every dead delivery.",
    ),
    rate: str = typer.Option(
        f"{DEFAULT_RATE_PER_MINUTE:g}",
        "--rate",
        metavar="PER-MINUTE",
        help="Deliveries per minute to each agency, such as 60 or 0.5. Each agency's first "
        "delivery is due at once, or after the last one that an earlier redelivery to it still "
        "has waiting, and the others follow at this pace. The default, one a second, is gentle "
        "on a back office that has just come back, and 1,000 deliveries still drain in about "
        "17 minutes. An agency's max_deliveries_per_minute in the manifest still caps the "
        "sends, so they go out at the lower of the two.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Count the dead deliveries per agency, show when they would be due and change "
        "nothing.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Resend dead agency deliveries, paced per agency: back to pending with a new retry window
    (audited).

    Deliveries already sent are never touched, so running it twice resends nothing twice.
    """
    configure_logging()
    with cli_errors():
        moment = parse_datetime("--since", since) if since is not None else None
        rate_per_minute = parse_rate("--rate", rate)
        ctx = _context(tenant_id)
        with unit_of_work(ctx, write=not dry_run) as session:
            result = redeliver(
                session,
                ctx,
                agency=agency,
                since=moment,
                rate_per_minute=rate_per_minute,
                dry_run=dry_run,
            )
    data = {
        "tenant": ctx.tenant_id,
        "dry_run": dry_run,
        "rate_per_minute": result.rate_per_minute,
        "deliveries": result.deliveries,
        "requests": result.requests,
        "agencies": [
            {
                "agency": entry.agency,
                "deliveries": entry.deliveries,
                "first_due_at": isoformat(entry.first_due_at),
                "last_due_at": isoformat(entry.last_due_at),
                "last_errors": sorted(entry.last_errors),
            }
            for entry in result.agencies
        ],
    }

    def render(outcome: dict[str, Any]) -> None:
        if not outcome["agencies"]:
            console.print(f"no dead deliveries of {outcome['tenant']} match", markup=False)
            return
        pace = f"at {outcome['rate_per_minute']:g} per minute per agency"
        verb = f"to resend {pace} (dry run)" if outcome["dry_run"] else f"queued again {pace}"
        title = f"Dead deliveries of {outcome['tenant']} {verb} ({outcome['deliveries']})"
        rows = [
            (
                a["agency"],
                a["deliveries"],
                a["first_due_at"],
                a["last_due_at"],
                ", ".join(a["last_errors"]),
            )
            for a in outcome["agencies"]
        ]
        table(title, ["agency", "deliveries", "first due", "last due", "last errors"], rows)

    emit(data, as_json, render)
