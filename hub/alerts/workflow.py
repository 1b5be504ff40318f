"""The emergency manager's steps as whole transactions, shared by the API and the CLI.

Each function opens its own units of work: a tenant session for one tenant's rows, and a
system session only where a regional alert spans tenants (compose, approval refresh, reading
the group), always after the caller's credential was checked for the originating tenant.
"""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy import Engine, select

from hub.alerts import coverage, service
from hub.alerts import models as m
from hub.alerts.cap.mapping import from_dict
from hub.alerts.cap.parser import parse
from hub.alerts.cap.problems import InvalidCap, Problem
from hub.alerts.policy import load_settings
from hub.core.db import unit_of_work
from hub.core.errors import InvalidInput, NotFound
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, SystemContext, TenantContext
from tenants.keys import registered_emergency_manager

# Keys of a JSON or YAML composition that are not CAP elements.
KIND_KEY = "kind"
TENANTS_KEY = "tenants"
# File name endings of CAP XML documents, which are never read as YAML or JSON.
XML_SUFFIXES = (".xml", ".cap")
UTF8_BOM = b"\xef\xbb\xbf"


def is_xml(data: bytes) -> bool:
    """Return True when `data` starts like an XML document, after any UTF-8 BOM and spaces."""
    return data.removeprefix(UTF8_BOM).lstrip().startswith(b"<")


def read_composition(data: bytes, name: str | None = None) -> tuple[Any, list[str], str]:
    """Parse CAP XML, JSON or YAML; return the CAP model, extra tenants and the kind.

    `name` is the file name, for messages. A name ending in .xml or .cap must contain XML.
    Raises InvalidCap listing every unreadable value.
    """
    if is_xml(data):
        result = parse(data)
        if result.alert is None or result.problems:
            raise InvalidCap(result.problems)
        return result.alert, [], "alert"
    if name is not None and name.lower().endswith(XML_SUFFIXES):
        reason = "it is empty" if not data.strip() else "it does not start with '<'"
        raise InvalidCap(
            [
                Problem(
                    "alert",
                    f"{name} is not XML because {reason}; give a CAP 1.2 XML document, or "
                    "name a YAML or JSON composition .yaml or .json",
                )
            ]
        )
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        message = "composition is not UTF-8 text; save it as UTF-8"
        raise InvalidCap([Problem("alert", message)]) from exc
    except yaml.YAMLError as exc:
        raise InvalidCap([Problem("alert", _yaml_message(exc))]) from exc
    if not isinstance(document, dict):
        raise InvalidCap(
            [
                Problem(
                    "alert",
                    "composition must be a mapping of CAP element names; give CAP XML, or "
                    "YAML or JSON with keys such as identifier, sender, status and info",
                )
            ]
        )
    return from_mapping(document)


def _yaml_message(exc: yaml.YAMLError) -> str:
    """Describe a YAML or JSON syntax error on one line, with its position when known."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    reason = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
    return f"composition is neither CAP XML nor valid YAML/JSON{where} ({reason}); fix the syntax"


def from_mapping(document: dict[str, Any]) -> tuple[Any, list[str], str]:
    tenants = [str(t) for t in document.pop(TENANTS_KEY, None) or []]
    kind = str(document.pop(KIND_KEY, "alert"))
    if kind not in ("alert", "notice"):
        raise InvalidInput(f"kind {kind!r} is invalid; use alert or notice")
    cap, problems = from_dict(document)
    if problems:
        raise InvalidCap(problems)
    return cap, tenants, kind


def named_manager(engine: Engine | None, tenant_id: str, name: str) -> TenantContext:
    """Return the context of the emergency manager `name` acting for the tenant without a key,
    as the CLI's `--as NAME` does.

    The name must be the holder of an active emergency_manager key of the tenant, ignoring
    case. The actor id is `cli:` and the holder as the key records it. Raises NotFound for an
    unknown tenant and Forbidden for any other name (`registered_emergency_manager`).
    """
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        service.require_tenant(session, tenant_id)
        holder = registered_emergency_manager(session, tenant_id, name)
    roles = frozenset({ROLE_EMERGENCY_MANAGER})
    return TenantContext(tenant_id, actor=f"cli:{holder}", roles=roles)


def compose(
    engine: Engine | None,
    ctx: TenantContext,
    cap: Any,
    *,
    tenants: list[str] | None = None,
    kind: str = "alert",
) -> list[dict[str, Any]]:
    """Store the alert as drafts and return each tenant's part.

    Each part's `warnings` names the parts of a regional alert that this Update or Cancel
    leaves out, then the tenant's own warnings (`service.warnings`).
    """
    service.require_emergency_manager(ctx)
    regional = bool([t for t in tenants or [] if t != ctx.tenant_id])
    scope = SystemContext("regional alert compose", actor=ctx.actor) if regional else ctx
    with unit_of_work(scope, engine=engine) as session:
        rows = service.compose(session, ctx, cap, tenants=tenants, kind=kind)
        result = [summary(row) for row in rows]
    reference_warnings: list[str] = []
    if any(row.references_alert_id for row in rows):
        system = SystemContext("alert reference parts", actor=ctx.actor)
        with unit_of_work(system, engine=engine, write=False) as session:
            reference_warnings = service.reference_parts_left_out(session, rows)
    # Each tenant's session, so the residents counted are that tenant's only. NOTE: this
    # selects the recipients as preview does, so it takes as long as a preview of the alert.
    for item in result:
        with unit_of_work(TenantContext(item["tenant_id"]), engine=engine, write=False) as s:
            row = service.get_alert(s, item["id"])
            tenant_warnings = service.warnings(s, row, load_settings(s, row.tenant_id))
        item["warnings"] = reference_warnings + tenant_warnings
    return result


def check_areas(
    engine: Engine | None, ctx: TenantContext, cap: Any, tenants: list[str]
) -> tuple[list[Problem], list[str]]:
    """Check the alert's areas against the service areas of its tenants, as compose does.

    Return the problems, and the warnings about each tenant that no area reaches.
    """
    scope = SystemContext("alert area check", actor=ctx.actor)
    with unit_of_work(scope, engine=engine, write=False) as session:
        participants = service.participating_tenants(session, ctx.tenant_id, tenants)
        problems = service.area_problems(session, cap, participants)
        missed = [
            coverage.missed_tenant(cap, load_settings(session, tenant_id))
            for tenant_id in participants
        ]
    return problems, [text for text in missed if text and not problems]


def approve(engine: Engine | None, ctx: TenantContext, alert_id: str) -> dict[str, Any]:
    """Record the caller's approval and return this tenant's row with `approval`, its
    approval state, and `tenants`, the state of every participating tenant's row afterwards."""
    with unit_of_work(ctx, engine=engine) as session:
        row = service.approve(
            session, ctx, alert_id, settings=load_settings(session, ctx.tenant_id)
        )
        group_id = row.group_id
    with unit_of_work(SystemContext("alert approval refresh", actor=ctx.actor), engine=engine) as s:
        service.refresh_group_approvals(s, group_id)
        states = [
            service.approval_state(s, member, load_settings(s, member.tenant_id))
            for member in service.group_rows(s, group_id)
        ]
    with unit_of_work(ctx, engine=engine, write=False) as session:
        result = summary(service.get_alert(session, alert_id))
    # The caller's tenant first, then the others in the group's order.
    states.sort(key=lambda state: state["tenant_id"] != ctx.tenant_id)
    return {**result, "approval": states[0], "tenants": states}


def _group(engine: Engine | None, ctx: TenantContext, alert_id: str) -> list[m.Alert]:
    """Return every tenant's row of the caller's alert; the caller must see its own row."""
    with unit_of_work(ctx, engine=engine, write=False) as session:
        own = service.get_alert(session, alert_id)
        group_id = own.group_id
    with unit_of_work(SystemContext("alert group read", actor=ctx.actor), engine=engine) as s:
        return service.group_rows(s, group_id)


def send(
    engine: Engine | None, ctx: TenantContext, alert_id: str, *, approved_only: bool = False
) -> dict[str, Any]:
    """Start the fan-out of an approved alert in every participating tenant.

    By default every part must be approved (`service.rows_to_send`). With `approved_only` the
    approved parts go now and a part still in draft waits for its own approval and a later
    send. Returns `deliveries` queued in all, `already_sent`, and `tenants`: for each part,
    the deliveries queued now, an `outcome` code and a `message`.
    """
    service.require_emergency_manager(ctx)
    rows = _group(engine, ctx, alert_id)
    origin = rows[0].origin_tenant_id
    if ctx.tenant_id != origin:
        raise NotFound(
            f"alert {alert_id} was composed by tenant {origin}; only its emergency managers send it"
        )
    if not service.unsent_rows(rows):
        parts = [
            _part(row, "already_sent", f"already sent ({row.state}); nothing to do") for row in rows
        ]
        return {
            "group_id": rows[0].group_id,
            "deliveries": 0,
            "already_sent": True,
            "tenants": parts,
        }
    try:
        ready = {row.id for row in service.rows_to_send(rows, approved_only=approved_only)}
    except InvalidInput as exc:
        if exc.code == "expired":
            _mark_expired(engine, rows)
        raise
    parts = []
    for row in rows:
        if row.id not in ready:
            parts.append(_unsent_part(row))
            continue
        tenant_ctx = TenantContext(row.tenant_id, actor=ctx.actor)
        with unit_of_work(tenant_ctx, engine=engine) as session:
            current = service.get_alert(session, row.id)
            reference = (
                session.get(m.Alert, current.references_alert_id)
                if current.references_alert_id
                else None
            )
            never_sent = reference is not None and reference.send_started_at is None
            count = service.start_sending(
                session, current, load_settings(session, row.tenant_id), actor=ctx.actor
            )
            parts.append(_queued_part(current, count, reference if never_sent else None))
    total = sum(part["deliveries"] for part in parts)
    return {
        "group_id": rows[0].group_id,
        "deliveries": total,
        "already_sent": False,
        "tenants": parts,
    }


def _part(row: m.Alert, outcome: str, message: str, deliveries: int = 0) -> dict[str, Any]:
    return {
        "tenant_id": row.tenant_id,
        "id": row.id,
        "deliveries": deliveries,
        "outcome": outcome,
        "message": message,
    }


def _queued_part(row: m.Alert, count: int, unsent_reference: m.Alert | None) -> dict[str, Any]:
    """Describe a part whose fan-out started; `unsent_reference` is the alert it updates or
    cancels when that alert was never sent."""
    message = f"{count} deliveries queued"
    if unsent_reference is not None and row.msg_type == "Cancel":
        message += (
            f"; it cancels alert {unsent_reference.id}, which was never sent, so nobody was "
            f"reached and alert {unsent_reference.id} will never be sent"
        )
    elif unsent_reference is not None:
        message += (
            f"; it replaces alert {unsent_reference.id}, which was never sent and now never will be"
        )
    return _part(row, "queued", message, count)


def _unsent_part(row: m.Alert) -> dict[str, Any]:
    """Describe a part that this send did not start."""
    if row.state == m.DRAFT:
        return _part(
            row,
            "not_approved",
            f"not approved yet, so nothing was sent; once "
            f"`{service.approve_command(row.id, row.tenant_id)}` approves it, "
            f"`{service.send_command(row)}` sends it",
        )
    if row.state == m.HELD:
        return _part(row, "held", f"held and never sent: {row.hold_reason}")
    if row.state in (m.CANCELLED, m.SUPERSEDED) and row.send_started_at is None:
        return _part(row, row.state, f"{row.state} before it was sent; nothing was sent")
    return _part(row, "already_sent", f"already sent ({row.state}); nothing to do")


def _mark_expired(engine: Engine | None, rows: list[m.Alert]) -> None:
    for row in rows:
        with unit_of_work(TenantContext(row.tenant_id, actor="system"), engine=engine) as s:
            current = service.get_alert(s, row.id)
            if current.state in (m.DRAFT, m.APPROVED):
                current.state = m.EXPIRED


def status(engine: Engine | None, ctx: TenantContext, alert_id: str) -> list[dict[str, Any]]:
    """Live state of every tenant's row of the alert: counts per channel and state."""
    result = []
    for row in _group(engine, ctx, alert_id):
        with unit_of_work(TenantContext(row.tenant_id), engine=engine, write=False) as session:
            result.append(service.status(session, service.get_alert(session, row.id)))
    return result


def preview(engine: Engine | None, ctx: TenantContext, alert_id: str) -> list[dict[str, Any]]:
    """Recipients per tenant, language and channel, with the time each channel needs."""
    result = []
    for row in _group(engine, ctx, alert_id):
        with unit_of_work(TenantContext(row.tenant_id), engine=engine, write=False) as session:
            current = service.get_alert(session, row.id)
            settings = load_settings(session, row.tenant_id)
            result.append(service.preview(session, current, settings).as_dict())
    return result


def list_alerts(
    engine: Engine | None, ctx: TenantContext, limit: int = 50, *, awaiting_review: bool = False
) -> list[dict]:
    """List the tenant's most recent alerts, or only those still awaiting review."""
    query = select(m.Alert).order_by(m.Alert.created_at.desc()).limit(limit)
    if awaiting_review:
        query = query.where(m.Alert.review_due_at.is_not(None), m.Alert.reviewed_at.is_(None))
    with unit_of_work(ctx, engine=engine, write=False) as session:
        service.require_tenant(session, ctx.tenant_id)
        return [summary(row) for row in session.scalars(query)]


def review(
    engine: Engine | None, ctx: TenantContext, alert_id: str, note: str | None = None
) -> dict[str, Any]:
    """Record a second emergency manager's review of this tenant's part of an alert."""
    with unit_of_work(ctx, engine=engine) as session:
        return summary(service.review(session, ctx, alert_id, note=note))


def summary(row: m.Alert) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "group_id": row.group_id,
        "kind": row.kind,
        "identifier": row.identifier,
        "sender": row.sender,
        "sent": service.aware(row.sent),
        "status": row.status,
        "msg_type": row.msg_type,
        "state": row.state,
        "hold_reason": row.hold_reason,
        "expires_at": service.aware(row.expires_at),
        **service.review_fields(row),
    }
