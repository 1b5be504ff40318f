"""Compose, approve, preview and send alerts; resolve Update and Cancel references.

Every function takes the caller's session and only flushes. A regional alert touches several
tenants' rows. Its callers therefore check the emergency manager's credential for the
originating tenant and then pass a session opened with a `SystemContext`. All other calls
take a tenant session.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, func, insert, literal, select, union, update
from sqlalchemy.orm import Session, aliased

from hub.alerts import coverage
from hub.alerts import models as m
from hub.alerts.cap.model import Alert as CapAlert
from hub.alerts.cap.model import Info
from hub.alerts.cap.parser import parse
from hub.alerts.cap.problems import InvalidCap, Problem
from hub.alerts.cap.validate import validate
from hub.alerts.cap.writer import write
from hub.alerts.cells import CellSet, area_cells
from hub.alerts.language import choose_info, has_language
from hub.alerts.metrics import TARGETING_SECONDS
from hub.alerts.policy import TenantAlertSettings, approvals_needed, load_settings
from hub.alerts.targeting import (
    Recipient,
    address_of,
    area_condition,
    recipient_rows,
    recipients,
    subscriber_ids_in,
)
from hub.core.clock import as_utc, local_and_utc, utcnow
from hub.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from hub.core.ids import tracking_code
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_ALERTS_BULK, QUEUE_ALERTS_URGENT
from hub.core.tenancy import ROLE_EMERGENCY_MANAGER, TenantContext
from privacy.audit import audit
from tenants.keys import actor_person
from tenants.models import Tenant

log = structlog.get_logger(__name__)

# Deliveries per task. Small enough that a killed worker repeats little work, large enough
# that one task keeps many connections busy.
BATCH_SIZE = 500
DELIVER_TASK = "alerts.deliver_batch"


def require_emergency_manager(ctx: TenantContext) -> None:
    if not ctx.has_role(ROLE_EMERGENCY_MANAGER):
        raise Forbidden("this action needs the emergency_manager role", code="forbidden")


def load_cap(row: m.Alert) -> CapAlert:
    result = parse(row.cap_xml)
    assert result.alert is not None, f"stored CAP of alert {row.id} is unreadable"
    return result.alert


def get_alert(session: Session, alert_id: str) -> m.Alert:
    """Return one alert of the session's tenant; another tenant's alert is NotFound.

    The error names an unknown tenant as such, so a mistyped `--tenant` is not reported as
    a missing alert.
    """
    row = session.scalar(select(m.Alert).where(m.Alert.id == alert_id))
    if row is not None:
        return row
    tenant_id = session_tenant(session)
    if tenant_id is None:
        raise NotFound(f"alert {alert_id} not found")
    require_tenant(session, tenant_id)
    raise NotFound(
        f"alert {alert_id} not found in tenant {tenant_id}; list its alerts with "
        f"`hub alerts list --tenant {tenant_id}`"
    )


def session_tenant(session: Session) -> str | None:
    """Return the tenant id of a tenant session, or None for a system session."""
    scope = session.info.get("scope")
    return scope.tenant_id if isinstance(scope, TenantContext) else None


def require_tenant(session: Session, tenant_id: str) -> Tenant:
    """Return the active tenant `tenant_id`, or raise NotFound naming the unknown tenant."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.status != "active":
        raise NotFound(f"tenant {tenant_id} not found; check the id with `hub tenants list`")
    return tenant


def group_rows(session: Session, group_id: str) -> list[m.Alert]:
    return list(
        session.scalars(
            select(m.Alert).where(m.Alert.group_id == group_id).order_by(m.Alert.tenant_id)
        )
    )


def participating_tenants(session: Session, origin: str, requested: list[str] | None) -> list[str]:
    tenants = [origin] + [t for t in (requested or []) if t != origin]
    origin_row = require_tenant(session, origin)
    if len(tenants) == 1:
        return tenants
    if not origin_row.region:
        raise InvalidInput(
            f"tenant {origin} has no region, so it cannot send a regional alert; set `region` "
            "in its manifest"
        )
    for tenant_id in tenants[1:]:
        row = session.get(Tenant, tenant_id)
        if row is None or row.status != "active":
            raise NotFound(_unknown_tenant_message(session, tenant_id, origin_row.region))
        if row.region != origin_row.region:
            raise InvalidInput(
                f"tenant {tenant_id} is in region {row.region or '(none)'}, not in region "
                f"{origin_row.region} of {origin}; a regional alert covers the tenants of one "
                f"region, so leave out --also {tenant_id} and have an emergency manager of "
                f"{tenant_id} compose its own alert"
            )
    return tenants


def _unknown_tenant_message(session: Session, tenant_id: str, region: str) -> str:
    """Say that `tenant_id` is unknown and suggest the closest active tenant id, preferring
    the tenants of `region`."""
    active = session.execute(select(Tenant.id, Tenant.region).where(Tenant.status == "active"))
    in_region, elsewhere = [], []
    for candidate, candidate_region in active:
        (in_region if candidate_region == region else elsewhere).append(candidate)
    close = difflib.get_close_matches(tenant_id, in_region, n=1) or difflib.get_close_matches(
        tenant_id, elsewhere, n=1
    )
    hint = f"did you mean {close[0]}?" if close else "check the id with `hub tenants list`"
    return f"tenant {tenant_id} not found; {hint}"


def _resolve_reference(
    session: Session, tenant_id: str, cap: CapAlert
) -> tuple[m.Alert | None, str | None]:
    """Find this tenant's row of the alert that `cap` updates or cancels, which is the last
    entry of `references` stored in the hub. Return (row, None) or (None, reason to hold)."""
    entries = cap.reference_list()
    for entry in reversed(entries):
        row = session.scalar(
            select(m.Alert).where(
                m.Alert.tenant_id == tenant_id,
                m.Alert.sender == entry.sender,
                m.Alert.identifier == entry.identifier,
            )
        )
        if row is not None:
            return row, None
    listed = " ".join(e.to_text() for e in entries) or "(none)"
    return None, f"references an unknown alert: {listed}"[:300]


def show_time(value: datetime) -> str:
    """Return a time in the offset the sender wrote, and in UTC when that offset is another."""
    utc = as_utc(value).isoformat()
    written = value.isoformat()
    return written if written == utc else f"{written} ({utc})"


def expiry_problems(cap: CapAlert) -> list[Problem]:
    """Report each info block's `expires` when every block expired, because such an alert
    could never be sent."""
    latest = cap.expires()
    if latest is None or as_utc(latest) > utcnow():
        return []
    return [
        Problem(
            f"alert/info[{number}]/expires",
            f"expires {show_time(info.expires)} has passed, so the alert could never be sent; "
            "set a later expires time",
        )
        for number, info in enumerate(cap.infos, start=1)
        if info.expires is not None
    ]


def compose_problems(cap: CapAlert) -> list[Problem]:
    """Return every problem that makes compose reject the alert, before tenants are read."""
    problems = validate(cap, sending=True)
    if cap.status == "Draft":
        problems.append(
            Problem("alert/status", "status Draft is never sent; use Actual, Exercise or Test")
        )
    return problems + expiry_problems(cap)


def area_problems(session: Session, cap: CapAlert, participants: list[str]) -> list[Problem]:
    """Report each area of the alert that overlaps no participating tenant's service area."""
    return coverage.area_problems(cap, [load_settings(session, t) for t in participants])


def compose(
    session: Session,
    ctx: TenantContext,
    cap: CapAlert,
    *,
    tenants: list[str] | None = None,
    kind: str = "alert",
) -> list[m.Alert]:
    """Store a validated alert as drafts, one row per participating tenant.

    Raises InvalidCap listing every problem, and Conflict when this sender already used the
    identifier. An Update or Cancel whose reference is unknown is stored as held: it is
    reported and can never be sent.
    """
    require_emergency_manager(ctx)
    problems = compose_problems(cap)
    if problems:
        raise InvalidCap(problems)
    # Validation above guarantees these; the asserts narrow the types.
    assert cap.sender is not None
    assert cap.identifier is not None
    assert cap.sent is not None
    assert cap.msg_type is not None
    assert cap.status is not None

    participants = participating_tenants(session, ctx.tenant_id, tenants)
    problems = area_problems(session, cap, participants)
    if problems:
        raise InvalidCap(problems)
    for tenant_id in participants:
        existing = session.scalar(
            select(m.Alert.id).where(
                m.Alert.tenant_id == tenant_id,
                m.Alert.sender == cap.sender,
                m.Alert.identifier == cap.identifier,
            )
        )
        if existing is not None:
            raise Conflict(
                f"identifier {cap.identifier} was already used by sender {cap.sender} "
                f"(alert {existing}); give the message a new identifier",
                code="identifier_reused",
            )

    group_id = tracking_code(12)
    composer = actor_person(session, ctx.actor)
    first = cap.infos[0] if cap.infos else None
    document = write(cap).decode("utf-8")
    rows = []
    for tenant_id in participants:
        row = m.Alert(
            id=group_id if tenant_id == ctx.tenant_id else tracking_code(12),
            tenant_id=tenant_id,
            group_id=group_id,
            origin_tenant_id=ctx.tenant_id,
            kind=kind,
            identifier=cap.identifier,
            sender=cap.sender,
            sent=as_utc(cap.sent),
            status=cap.status,
            msg_type=cap.msg_type,
            urgency=first.urgency if first else None,
            severity=first.severity if first else None,
            expires_at=as_utc(cap.expires()) if cap.expires() else None,
            cap_xml=document,
            state=m.DRAFT,
            created_by=ctx.actor,
            created_by_person=composer,
        )
        if cap.msg_type in ("Update", "Cancel"):
            reference, reason = _resolve_reference(session, tenant_id, cap)
            if reference is None:
                row.state = m.HELD
                row.hold_reason = reason
                log.warning("alert_held", alert_id=row.id, tenant_id=tenant_id)
            else:
                row.references_alert_id = reference.id
        session.add(row)
        rows.append(row)
    session.flush()
    for row in rows:
        audit_alert(session, row, ctx.actor, "alert.compose")
    log.info("alert_composed", group_id=group_id, tenants=participants, msg_type=cap.msg_type)
    return rows


def reference_parts_left_out(session: Session, rows: list[m.Alert]) -> list[str]:
    """Warn about the parts of a regional alert that an Update or Cancel leaves out.

    `rows` are the parts of a message just composed. The session must see every tenant (a
    system session). Returns one message per part of a referenced alert whose tenant is not
    among the rows, unless that part already ended as held, cancelled, superseded or expired.
    """
    included = {row.tenant_id for row in rows}
    ended = (m.HELD, m.CANCELLED, m.SUPERSEDED, m.EXPIRED)
    warnings = []
    for row in rows:
        reference = session.get(m.Alert, row.references_alert_id or "")
        if reference is None or reference.tenant_id != row.origin_tenant_id:
            continue
        others = [
            part
            for part in group_rows(session, reference.group_id)
            if part.tenant_id not in included and part.state not in ended
        ]
        if not others:
            continue
        listed = ", ".join(f"{part.tenant_id} (alert {part.id}, {part.state})" for part in others)
        options = " ".join(f"--also {part.tenant_id}" for part in others)
        warnings.append(
            f"{row.msg_type} {row.identifier} covers only {', '.join(sorted(included))}, but "
            f"alert {reference.id} that it references is a regional alert with parts in "
            f"{listed}, which it leaves as they are. To include them, compose the "
            f"{row.msg_type} again with a new identifier and `{options}`"
        )
    return warnings


# Audit details are limited to 200 characters per string (`privacy.audit`), and a CAP
# identifier may be longer, so entries carry its first 200.
AUDIT_IDENTIFIER_CHARS = 200


def audit_alert(session: Session, row: m.Alert, actor: str, action: str, **details: Any) -> None:
    """Append an audit entry about one tenant's row of an alert.

    Every entry names the row's own id (`alert_id`, which differs per tenant in a regional
    alert), the regional `group_id`, the CAP `identifier`, `msg_type` and `status`. So the
    export of one tenant's chain can be read per message without the other tenants' rows.
    """
    audit(
        session,
        tenant_id=row.tenant_id,
        actor=actor,
        action=action,
        subject=f"alerts:{row.id}",
        details={
            "alert_id": row.id,
            "group_id": row.group_id,
            "identifier": row.identifier[:AUDIT_IDENTIFIER_CHARS],
            "msg_type": row.msg_type,
            "status": row.status,
            **details,
        },
    )


def approve(
    session: Session, ctx: TenantContext, alert_id: str, *, settings: TenantAlertSettings
) -> m.Alert:
    """Record the caller's approval of this tenant's row and approve it once the tenant's
    policy is satisfied. Approving twice is harmless."""
    require_emergency_manager(ctx)
    row = get_alert(session, alert_id)
    if row.state == m.HELD:
        raise Conflict(f"alert {row.id} is held ({row.hold_reason}); it cannot be approved")
    if row.state != m.DRAFT:
        return row
    known = session.scalar(
        select(m.AlertApproval.id).where(
            m.AlertApproval.alert_id == row.id, m.AlertApproval.actor == ctx.actor
        )
    )
    if known is None:
        person = actor_person(session, ctx.actor)
        session.add(
            m.AlertApproval(
                tenant_id=row.tenant_id, alert_id=row.id, actor=ctx.actor, person=person
            )
        )
        session.flush()
        audit_alert(session, row, ctx.actor, "alert.approve", person=person)
    _apply_policy(session, row, settings)
    return row


def approve_command(alert_id: str, tenant_id: str) -> str:
    """Return the CLI command that approves an alert, with NAME for the approver."""
    return f"hub alerts approve {alert_id} --tenant {tenant_id} --as NAME"


def _approvals(session: Session, alert_id: str) -> dict[str, str]:
    """Return the person of each actor that approved the alert.

    The two-person rule compares these with `created_by_person`. Both are stored when the
    person acts, so a decision never changes later, whatever happens to the key. Resolving
    when the rule is applied would also miss the holder on a regional alert's row in another
    tenant, because that tenant's session cannot read the composer's key.
    """
    rows = session.execute(
        select(m.AlertApproval.actor, m.AlertApproval.person).where(
            m.AlertApproval.alert_id == alert_id
        )
    )
    return {actor: person for actor, person in rows}


def _person_label(actor: str, person: str) -> str:
    """Return the person for messages, with the actor id in brackets unless it is `cli:NAME`."""
    if actor in (person, f"cli:{person}"):
        return person
    return f"{person} ({actor})"


def _approver_labels(approvals: dict[str, str]) -> str:
    return ", ".join(sorted(_person_label(actor, person) for actor, person in approvals.items()))


def _follows_origin(row: m.Alert, settings: TenantAlertSettings) -> bool:
    """Return whether this row is another tenant's part of a regional alert whose policy
    accepts the originating tenant's approval (`regional_requires_each_tenant: false`)."""
    regional_guest = row.tenant_id != row.origin_tenant_id
    return regional_guest and not settings.alerts.approval.regional_requires_each_tenant


def _apply_policy(session: Session, row: m.Alert, settings: TenantAlertSettings) -> None:
    approvals = _approvals(session, row.id)
    approvers = set(approvals.values())
    second, review = approvals_needed(
        settings, status=row.status, urgency=row.urgency, severity=row.severity
    )
    follows_origin = _follows_origin(row, settings)
    if follows_origin:
        origin = session.scalar(
            select(m.Alert).where(
                m.Alert.group_id == row.group_id, m.Alert.tenant_id == row.origin_tenant_id
            )
        )
        satisfied = origin is not None and origin.approved_at is not None
    elif second:
        satisfied = bool(approvers - {row.created_by_person})
    else:
        satisfied = bool(approvers)
    if not satisfied:
        return
    row.state = m.APPROVED
    row.approved_at = utcnow()
    if review and approvers <= {row.created_by_person}:
        row.review_due_at = row.approved_at + timedelta(
            hours=settings.alerts.approval.review_within_hours
        )
    log.info(
        "alert_approved",
        alert_id=row.id,
        tenant_id=row.tenant_id,
        approvers=sorted(approvals),
        persons=sorted(approvers),
        through_origin_tenant=row.origin_tenant_id if follows_origin else None,
    )


def approval_state(session: Session, row: m.Alert, settings: TenantAlertSettings) -> dict:
    """Describe the approval state of one tenant's row: an `outcome` code, the
    approvers, and a `message` that names the command still needed, if any.

    The session must see the row's tenant (its own tenant session or a system session).
    """
    approvals = _approvals(session, row.id)
    approvers = set(approvals.values())
    composer = _person_label(row.created_by, row.created_by_person)
    command = approve_command(row.id, row.tenant_id)
    second, _review = approvals_needed(
        settings, status=row.status, urgency=row.urgency, severity=row.severity
    )
    follows_origin = _follows_origin(row, settings)
    if row.state == m.HELD:
        outcome, message = "held", f"held and never sent: {row.hold_reason}"
    elif row.state != m.DRAFT and follows_origin and not approvers:
        outcome = "approved_by_origin"
        message = (
            f"approved through the approval in {row.origin_tenant_id}, because the policy of "
            f"{row.tenant_id} accepts it (alerts.approval.regional_requires_each_tenant: false)"
        )
    elif row.state != m.DRAFT:
        outcome = "approved"
        message = f"approved by {_approver_labels(approvals) or 'policy'}"
        if awaiting_review(row):
            message += (
                f"; one emergency manager approved it alone, so another must review it by "
                f"{local_and_utc(row.review_due_at, settings.timezone)} with "
                f"`hub alerts review {row.id} --tenant {row.tenant_id} --as NAME`"
            )
    elif follows_origin:
        outcome = "awaiting_origin_approval"
        message = (
            f"waits for the approval in {row.origin_tenant_id}, which the policy of "
            f"{row.tenant_id} accepts for regional alerts"
        )
    elif second and approvers and approvers <= {row.created_by_person}:
        outcome = "awaiting_second_approver"
        message = (
            f"recorded as the first approval, because {composer} composed the alert; a "
            f"second emergency manager other than {row.created_by_person} must approve it with "
            f"`{command}`"
        )
    else:
        outcome = "awaiting_approval"
        message = (
            f"waits for an emergency manager of {row.tenant_id} to approve it with `{command}`"
        )
    return {
        "tenant_id": row.tenant_id,
        "id": row.id,
        "state": row.state,
        "approvers": sorted(approvals),
        "outcome": outcome,
        "message": message,
    }


def refresh_group_approvals(session: Session, group_id: str) -> None:
    """Re-apply each tenant's policy after an approval (system session, regional alerts)."""
    for row in group_rows(session, group_id):
        if row.state == m.DRAFT:
            _apply_policy(session, row, load_settings(session, row.tenant_id))


REVIEW_NOTE_MAX_CHARS = 1000


def awaiting_review(row: m.Alert) -> bool:
    """Return whether a single approver approved the alert and no review is recorded yet."""
    return row.review_due_at is not None and row.reviewed_at is None


def review(session: Session, ctx: TenantContext, alert_id: str, *, note: str | None) -> m.Alert:
    """Record the caller's review of an alert that one emergency manager approved alone.

    The reviewer must be an emergency manager who neither composed nor approved it. Raises
    NotFound for an unknown id, Conflict when the alert needs no review or was reviewed
    already, Forbidden when the caller composed or approved it, and InvalidInput for a note
    over 1,000 characters.
    """
    require_emergency_manager(ctx)
    row = get_alert(session, alert_id)
    if row.review_due_at is None:
        raise Conflict(
            f"alert {row.id} was not approved by a single emergency manager, so it needs no review",
            code="review_not_needed",
        )
    if row.reviewed_at is not None:
        raise Conflict(
            f"alert {row.id} was already reviewed by {reviewer_label(row)} at "
            f"{as_utc(row.reviewed_at).isoformat()}",
            code="already_reviewed",
        )
    approvals = _approvals(session, row.id)
    reviewer = actor_person(session, ctx.actor)
    if reviewer in set(approvals.values()) | {row.created_by_person}:
        raise Forbidden(
            f"{_person_label(ctx.actor, reviewer)} composed or approved alert {row.id}; another "
            "emergency manager must review it",
            code="reviewer_is_approver",
        )
    text = (note or "").strip() or None
    if text is not None and len(text) > REVIEW_NOTE_MAX_CHARS:
        raise InvalidInput(
            f"review note has {len(text)} characters; shorten it to {REVIEW_NOTE_MAX_CHARS}",
            field="note",
        )

    # Conditional, so two reviewers at the same moment cannot both succeed.
    reviewed_at = utcnow()
    updated = session.execute(
        update(m.Alert)
        .where(m.Alert.id == row.id, m.Alert.reviewed_at.is_(None))
        .values(
            reviewed_at=reviewed_at,
            reviewed_by=ctx.actor,
            reviewed_by_person=reviewer,
            review_note=text,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if updated != 1:
        raise Conflict(
            f"alert {row.id} was reviewed by someone else just now; see "
            f"`hub alerts status {row.id} --tenant {row.tenant_id}`",
            code="already_reviewed",
        )
    session.refresh(row)
    # The note is free text, so the audit entry records only its length.
    audit_alert(
        session,
        row,
        ctx.actor,
        "alert.review",
        approvers=sorted(approvals),
        overdue=reviewed_at > as_utc(row.review_due_at),
        note_chars=len(text or ""),
    )
    log.info("alert_reviewed", alert_id=row.id, reviewer=ctx.actor)
    return row


# --- targeting and preview -----------------------------------------------------------------


def target_cells(cap: CapAlert, settings: TenantAlertSettings) -> CellSet:
    cells = CellSet()
    for info in cap.infos:
        for area in info.areas:
            cells.update(area_cells(area, settings.zones))
    return cells


def _delivered_subscribers(session: Session, alert_id: str) -> set[str]:
    return set(
        session.scalars(
            select(m.Delivery.subscriber_id).where(
                m.Delivery.alert_id == alert_id, m.Delivery.state == m.DELIVERED
            )
        )
    )


def _targeted_subscribers(session: Session, alert_id: str) -> set[str]:
    return set(
        session.scalars(select(m.Delivery.subscriber_id).where(m.Delivery.alert_id == alert_id))
    )


def select_recipients(
    session: Session, row: m.Alert, cap: CapAlert, settings: TenantAlertSettings
) -> list[Recipient]:
    """Recipients of this tenant's row: the area's subscribers, plus for an Update everyone
    the referenced alert targeted; a Cancel reaches only those the reference reached."""
    test_only = row.status in ("Exercise", "Test")
    if row.msg_type == "Cancel":
        ids = _delivered_subscribers(session, row.references_alert_id or "")
    else:
        with TARGETING_SECONDS.time():
            ids = subscriber_ids_in(session, target_cells(cap, settings))
        if row.msg_type == "Update" and row.references_alert_id:
            ids |= _targeted_subscribers(session, row.references_alert_id)
    return recipients(session, ids, test_only=test_only)


def language_infos(session: Session, row: m.Alert, cap: CapAlert) -> list[Info]:
    """Info blocks that decide each recipient's language: the alert's own, or for a Cancel
    without info those of the alert it cancels."""
    if cap.infos or not row.references_alert_id:
        return cap.infos
    referenced = session.get(m.Alert, row.references_alert_id)
    return load_cap(referenced).infos if referenced is not None else []


@dataclass
class Preview:
    tenant_id: str
    alert_id: str
    # Messages: one per resident and channel (residents who share an address get one).
    recipients: int = 0
    # Residents: subscribers who get at least one message.
    subscribers: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)
    # Messages per language of the info block they carry.
    by_language: dict[str, int] = field(default_factory=dict)
    # Seconds to reach every recipient on each channel at the tenant's configured rate.
    seconds_by_channel: dict[str, float] = field(default_factory=dict)
    # Sentences about residents the alert misses or reaches in another language.
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def preview(session: Session, row: m.Alert, settings: TenantAlertSettings) -> Preview:
    cap = load_cap(row)
    found = select_recipients(session, row, cap, settings)
    result = Preview(tenant_id=row.tenant_id, alert_id=row.id)
    result.recipients = len(found)
    result.subscribers = len({r.subscriber_id for r in found})
    result.by_channel = dict(Counter(r.channel for r in found))
    languages: Counter[str] = Counter()
    infos = language_infos(session, row, cap)
    if infos:
        for r in found:
            info = infos[choose_info(infos, r.languages, settings.default_language)]
            languages[info.effective_language] += 1
    result.by_language = dict(languages)
    result.seconds_by_channel = {
        channel: round(count / settings.rate(channel), 1)
        for channel, count in result.by_channel.items()
    }
    result.warnings = _warnings(session, row, cap, settings, found)
    return result


def warnings(session: Session, row: m.Alert, settings: TenantAlertSettings) -> list[str]:
    """Return the warnings `compose` and `preview` give about this tenant's row: an area
    that misses the tenant, nobody reached, missing translations and channels without a
    provider. None of them blocks the alert."""
    if row.state == m.HELD:
        return []
    cap = load_cap(row)
    return _warnings(session, row, cap, settings, select_recipients(session, row, cap, settings))


def _warnings(
    session: Session,
    row: m.Alert,
    cap: CapAlert,
    settings: TenantAlertSettings,
    found: list[Recipient],
) -> list[str]:
    missed = coverage.missed_tenant(cap, settings)
    if missed:
        return [missed]
    result = language_warnings(language_infos(session, row, cap), settings, found)
    if not found:
        audience = "subscribed resident"
        if row.status in ("Exercise", "Test"):
            audience = "resident who opted in to test messages"
        result.insert(
            0, f"nobody in {row.tenant_id} would get this message: no {audience} matches it"
        )
    return result + channel_warnings(settings, found)


def language_warnings(
    infos: list[Info], settings: TenantAlertSettings, found: list[Recipient]
) -> list[str]:
    """Warn about the tenant's languages without an `info` block, and count the residents
    whose first language has none, by the language they get instead."""
    if not infos:
        return []
    result = []
    absent = [tag for tag in settings.languages if not has_language(infos, tag)]
    if absent:
        fallback = infos[choose_info(infos, [], settings.default_language)].effective_language
        result.append(
            f"no info block in {', '.join(absent)}, which {settings.tenant_id} declares; "
            f"residents who prefer {'it' if len(absent) == 1 else 'them'} get {fallback}"
        )
    gaps: dict[str, tuple[set[str], set[str]]] = {}
    for r in found:
        if not r.languages or has_language(infos, r.languages[0]):
            continue
        fallback = infos[choose_info(infos, r.languages, settings.default_language)]
        preferred, residents = gaps.setdefault(fallback.effective_language, (set(), set()))
        preferred.add(r.languages[0])
        residents.add(r.subscriber_id)
    for fallback, (preferred, residents) in sorted(gaps.items()):
        result.append(
            f"{_residents(len(residents))} {'prefers' if len(residents) == 1 else 'prefer'} "
            f"{', '.join(sorted(preferred))}: no info block in "
            f"{_those(preferred, 'that language')}, they get {fallback}"
        )
    return result


def channel_warnings(settings: TenantAlertSettings, found: list[Recipient]) -> list[str]:
    """Warn about each channel the targeted residents use that has no provider configured."""
    result = []
    for channel, count in sorted(Counter(r.channel for r in found).items()):
        reason = settings.provider_missing(channel)
        if reason:
            residents = len({r.subscriber_id for r in found if r.channel == channel})
            result.append(
                f"{_residents(residents)} {'uses' if residents == 1 else 'use'} {channel}, but "
                f"{settings.tenant_id} has no provider for it: {count} {channel} "
                f"message(s) would fail with '{reason}'"
            )
    return result


def _residents(count: int) -> str:
    return f"{count} resident" if count == 1 else f"{count} residents"


def _those(tags: Any, one: str) -> str:
    return one if len(tags) == 1 else "those languages"


# --- sending -------------------------------------------------------------------------------


def queue_for(row: m.Alert) -> str:
    return QUEUE_ALERTS_BULK if row.kind == "notice" else QUEUE_ALERTS_URGENT


def unsent_rows(rows: list[m.Alert]) -> list[m.Alert]:
    """Return the parts of a group whose fan-out has not started.

    A part that expired before its fan-out started counts, so every later `send` reports the
    expiry instead of "already sent".
    """
    return [
        row
        for row in rows
        if row.state in (m.DRAFT, m.APPROVED, m.HELD)
        or (row.state == m.EXPIRED and row.send_started_at is None)
    ]


def send_command(row: m.Alert) -> str:
    """Return the CLI command that sends the alert group of `row`, with NAME for the sender."""
    return f"hub alerts send {row.group_id} --tenant {row.origin_tenant_id} --as NAME"


def rows_to_send(rows: list[m.Alert], *, approved_only: bool = False) -> list[m.Alert]:
    """Return the parts of an alert group to send now; raise when the send must not start.

    `rows` are every tenant's part of the group. Raises InvalidInput (code `expired`) when the
    alert expired. By default every unsent part must be approved: a held part raises Conflict,
    and parts still in draft raise Forbidden (code `not_approved`) naming each of them. With
    `approved_only` the approved parts are returned and the others are left as they are, so a
    later send starts each draft once it is approved. It still raises Forbidden when no part
    is approved and one is in draft, and Conflict when every part left is held.
    """
    unsent = unsent_rows(rows)
    now = utcnow()
    for row in unsent:
        if row.expires_at is not None and as_utc(row.expires_at) <= now:
            raise InvalidInput(
                f"alert {row.id} expired at {as_utc(row.expires_at).isoformat()}; nothing was "
                "sent. Compose a new alert with a later expires time",
                code="expired",
            )
    regional = len(rows) > 1
    held = [row for row in unsent if row.state == m.HELD]
    drafts = [row for row in unsent if row.state == m.DRAFT]
    ready = [row for row in unsent if row.state == m.APPROVED]
    option_hint = ""
    if regional:
        option_hint = (
            f". To send the approved parts now and each other part once it is approved, run "
            f"`{send_command(rows[0])} --approved-only`"
        )
    if held and not approved_only:
        raise Conflict(_held_message(held) + option_hint)
    if held and approved_only and not ready and not drafts:
        raise Conflict(f"nothing was sent, because every part left is held: {_held_message(held)}")
    if drafts and (not approved_only or not ready):
        raise Forbidden(_not_approved_message(drafts, ready, regional), code="not_approved")
    return ready


def _held_message(held: list[m.Alert]) -> str:
    return "; ".join(
        f"alert {row.id} of tenant {row.tenant_id} is held and is never sent: {row.hold_reason}"
        for row in held
    )


def _not_approved_message(drafts: list[m.Alert], ready: list[m.Alert], regional: bool) -> str:
    """Name each part still in draft with the command that approves it, and for a regional
    alert the `--approved-only` option of `send`."""
    commands = "; ".join(
        f"alert {row.id} of tenant {row.tenant_id}: an emergency manager of {row.tenant_id} "
        f"approves it with `{approve_command(row.id, row.tenant_id)}`"
        for row in drafts
    )
    message = f"nothing was sent, because {len(drafts)} part(s) are not approved yet ({commands})"
    if not regional:
        return message
    if ready:
        parts = ", ".join(row.tenant_id for row in ready)
        return (
            f"{message}. To send the approved parts ({parts}) now and each other part once it "
            f"is approved, run `{send_command(drafts[0])} --approved-only`"
        )
    return f"{message}. `--approved-only` sends only approved parts, and none is approved yet"


def queue_batch(session: Session, row: m.Alert, batch: int) -> None:
    """Queue the delivery task of one batch of an alert row, on the row's priority queue."""
    enqueue(
        session,
        DELIVER_TASK,
        queue=queue_for(row),
        tenant_id=row.tenant_id,
        alert_id=row.id,
        batch=batch,
    )


def start_sending(
    session: Session, row: m.Alert, settings: TenantAlertSettings, *, actor: str
) -> int:
    """Create the deliveries of one tenant's row and queue their batches; return how many.

    Idempotent: a row already sending or sent is left as it is and 0 is returned.
    """
    # Lock the row and read its state again. A concurrent send of this alert, or an Update or
    # Cancel that closes it, may have read the state before this one committed. Without the
    # lock a second send failed on the deliveries' unique key, and a send that raced a
    # Cancel set the cancelled alert back to sending.
    session.refresh(row, with_for_update=True)
    if row.state != m.APPROVED:
        return 0
    cap = load_cap(row)
    with TARGETING_SECONDS.time():
        count = _insert_deliveries(session, row, cap, settings)
    if row.references_alert_id:
        _close_reference(session, row)

    batches = (count + BATCH_SIZE - 1) // BATCH_SIZE
    for batch in range(batches):
        queue_batch(session, row, batch)
    row.state = m.SENDING if count else m.SENT
    row.send_started_at = utcnow()
    row.target_count = count
    if not count:
        row.finished_at = row.send_started_at
    audit_alert(session, row, actor, "alert.send", deliveries=count, batches=batches)
    log.info("alert_send_started", alert_id=row.id, deliveries=count, batches=batches)
    return count


def _subscriber_ids(row: m.Alert, cap: CapAlert, settings: TenantAlertSettings) -> Select[Any]:
    """Select the subscriber ids an alert row targets (see `select_recipients`)."""
    delivered = select(m.Delivery.subscriber_id).where(
        m.Delivery.tenant_id == row.tenant_id,
        m.Delivery.alert_id == (row.references_alert_id or ""),
    )
    if row.msg_type == "Cancel":
        return delivered.where(m.Delivery.state == m.DELIVERED)
    in_area = select(m.SubscriberCell.subscriber_id).where(
        m.SubscriberCell.tenant_id == row.tenant_id,
        area_condition(target_cells(cap, settings)),
    )
    if row.msg_type == "Update" and row.references_alert_id:
        return union(in_area, delivered)
    return in_area


def _insert_deliveries(
    session: Session, row: m.Alert, cap: CapAlert, settings: TenantAlertSettings
) -> int:
    """Create the delivery rows in one INSERT ... SELECT, numbered into batches in the
    database, so no subscriber id travels through Python. Languages are chosen at send time."""
    recipients_query = recipient_rows(
        row.tenant_id,
        _subscriber_ids(row, cap, settings),
        test_only=row.status in ("Exercise", "Test"),
    ).subquery()
    number = func.row_number().over(order_by=(recipients_query.c[0], recipients_query.c[1]))
    session.execute(_insert_pending(row, recipients_query, (number - 1) // BATCH_SIZE))
    # The driver's rowcount for INSERT ... SELECT is not reliable on every backend (psycopg
    # through SQLAlchemy returned -1), so count the rows.
    count = session.scalar(
        select(func.count()).select_from(m.Delivery).where(m.Delivery.alert_id == row.id)
    )
    return int(count or 0)


def _insert_pending(row: m.Alert, recipients_query: Any, batch: Any) -> Any:
    """Build the INSERT ... SELECT of pending deliveries of `row` for the (subscriber id,
    channel, channel row id) rows of `recipients_query`, in `batch` (an SQL expression)."""
    source = select(
        literal(row.tenant_id),
        literal(row.id),
        recipients_query.c[0],
        recipients_query.c[1],
        recipients_query.c[2],
        batch,
        literal(m.PENDING),
        literal(0),
    )
    columns = [
        "tenant_id",
        "alert_id",
        "subscriber_id",
        "channel",
        "channel_row_id",
        "batch",
        "state",
        "attempts",
    ]
    return insert(m.Delivery).from_select(columns, source)


def _close_reference(session: Session, row: m.Alert) -> None:
    """Drop the referenced alert's pending deliveries and mark it superseded or cancelled."""
    new_state = m.CANCELLED if row.msg_type == "Cancel" else m.SUPERSEDED
    dropped = session.execute(
        update(m.Delivery)
        .where(m.Delivery.alert_id == row.references_alert_id, m.Delivery.state == m.PENDING)
        .values(state=m.DROPPED, drop_reason=new_state)
    ).rowcount
    session.execute(
        update(m.Alert)
        .where(m.Alert.id == row.references_alert_id)
        .values(state=new_state, finished_at=utcnow())
    )
    log.info(
        "alert_reference_closed", alert_id=row.references_alert_id, state=new_state, dropped=dropped
    )


def add_cancel_recipients(session: Session, alert_id: str, subscriber_ids: set[str]) -> int:
    """Add residents an alert reached after its Cancel went out to that Cancel; return how
    many deliveries were added.

    A Cancel reaches the residents its reference had reached when the Cancel was sent. A
    chunk that was on the wire then is recorded as sent only afterwards, so its residents
    are added here, in a new batch of the Cancel. Does nothing when no Cancel of the alert
    has started sending.
    """
    cancel = session.scalar(
        select(m.Alert)
        .where(
            m.Alert.references_alert_id == alert_id,
            m.Alert.msg_type == "Cancel",
            m.Alert.state.in_((m.SENDING, *m.FINISHED_STATES)),
        )
        .order_by(m.Alert.send_started_at)
        .limit(1)
    )
    if cancel is None:
        return 0
    known = set(
        session.scalars(
            select(m.Delivery.subscriber_id).where(
                m.Delivery.alert_id == cancel.id,
                m.Delivery.subscriber_id.in_(sorted(subscriber_ids)),
            )
        )
    )
    missing = sorted(subscriber_ids - known)
    if not missing:
        return 0
    candidates = recipient_rows(
        cancel.tenant_id,
        select(m.Delivery.subscriber_id).where(
            m.Delivery.alert_id == alert_id, m.Delivery.subscriber_id.in_(missing)
        ),
        test_only=cancel.status in ("Exercise", "Test"),
    ).subquery()
    # An address that the Cancel already reaches through another subscriber gets no second
    # message (`recipient_rows` links one address's rows).
    row, reached = aliased(m.SubscriberChannel), aliased(m.SubscriberChannel)
    already = (
        select(m.Delivery.id)
        .join(reached, reached.id == m.Delivery.channel_row_id)
        .where(
            m.Delivery.alert_id == cancel.id,
            reached.channel == row.channel,
            address_of(reached) == address_of(row),
        )
    )
    new = (
        select(candidates)
        .join(row, row.id == candidates.c.channel_row_id)
        .where(~already.exists())
        .subquery()
    )
    batch = session.scalar(
        select(func.coalesce(func.max(m.Delivery.batch), -1) + 1).where(
            m.Delivery.alert_id == cancel.id
        )
    )
    added = session.execute(
        _insert_pending(cancel, new, literal(batch)).returning(m.Delivery.id)
    ).all()
    if not added:
        return 0
    queue_batch(session, cancel, batch)
    cancel.target_count = (cancel.target_count or 0) + len(added)
    if cancel.state != m.SENDING:
        cancel.state = m.SENDING
        cancel.finished_at = None
    log.warning(
        "alert_cancel_recipients_added",
        alert_id=alert_id,
        cancel_id=cancel.id,
        deliveries=len(added),
        batch=batch,
    )
    return len(added)


def _counts_by_channel(session: Session, alert_id: str, column: Any) -> dict[str, dict[str, int]]:
    """Count the alert's deliveries by channel and by the value of `column`, most frequent
    first; rows where `column` is NULL are left out."""
    rows = session.execute(
        select(m.Delivery.channel, column, func.count())
        .where(m.Delivery.alert_id == alert_id, column.is_not(None))
        .group_by(m.Delivery.channel, column)
        .order_by(func.count().desc(), column)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for channel, value, count in rows:
        counts.setdefault(channel, {})[value] = int(count)
    return counts


def status(session: Session, row: m.Alert) -> dict[str, Any]:
    """Live delivery state of one tenant's row: counts by channel and state, the error
    reasons of its deliveries not sent by channel, and why deliveries were dropped.

    A sent delivery has no error, so `errors` contains the last error of failed and retried
    deliveries and of dropped ones that had failed before the drop."""
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "group_id": row.group_id,
        "identifier": row.identifier,
        "sender": row.sender,
        "sent": aware(row.sent),
        "status": row.status,
        "msg_type": row.msg_type,
        "state": row.state,
        "hold_reason": row.hold_reason,
        "target_count": row.target_count,
        "expires_at": aware(row.expires_at),
        "finished_at": aware(row.finished_at),
        "deliveries": _counts_by_channel(session, row.id, m.Delivery.state),
        "errors": _counts_by_channel(session, row.id, m.Delivery.last_error),
        "drop_reasons": _counts_by_channel(session, row.id, m.Delivery.drop_reason),
        **review_fields(row),
    }


def aware(value: datetime | None) -> datetime | None:
    """Return a stored time with its UTC offset, which SQLite drops, so JSON shows it."""
    return as_utc(value) if value is not None else None


def reviewer_label(row: m.Alert) -> str | None:
    """Return the reviewer as approval messages name people (`_person_label`), or None."""
    if row.reviewed_by is None:
        return None
    return _person_label(row.reviewed_by, row.reviewed_by_person or row.reviewed_by)


def review_fields(row: m.Alert) -> dict[str, Any]:
    """Return the review state of a row. `reviewed_by` is the actor id, as `approvers` lists
    them, and `reviewer` the person as messages name them (`bob`, `alice (apikey:3)`)."""
    return {
        "review_due_at": aware(row.review_due_at),
        "awaiting_review": awaiting_review(row),
        "reviewed_at": aware(row.reviewed_at),
        "reviewed_by": row.reviewed_by,
        "reviewer": reviewer_label(row),
        "review_note": row.review_note,
    }
