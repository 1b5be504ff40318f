"""Contacts: routing on arrival, claim, completion, abandonment, heartbeats and views.

Who may act on a contact:
- the owning tenant's agents and supervisors, on contacts that stayed home;
- a partner agent, whose credential names one center, on contacts routed to that center only.
Anything else raises NotFound, as for an unknown id, so a caller cannot probe other centers.

Partner agents work contacts of several tenants, so their sessions use a system scope and
every query here filters by the credential's center instead. The audit entries and decryptions
they cause are recorded on the owning tenant's chain with the partner agent as actor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from failover.board import LiveBoard
from failover.centers import sync_tenant_centers
from failover.eligibility import CHANNELS, ContactTraits, speaks
from failover.metrics import DECISION_LATENCY, DECISIONS, PARTNER_VIEWS
from failover.models import (
    CONTACTS_TABLE,
    OPEN_STATES,
    CenterHeartbeat,
    Contact,
    ContactCenter,
)
from failover.routing import PARTNER, Decision, decode_excluded, encode_excluded
from failover.store import (
    StoreResult,
    insert_contact,
    insert_contact_in_one_round_trip,
    release_slot,
)
from hub.core.clock import as_utc, isoformat, utcnow
from hub.core.db import is_postgres, unit_of_work
from hub.core.errors import Conflict, Forbidden, InvalidInput, NotFound, shown
from hub.core.ids import new_uuid
from hub.core.tenancy import (
    ROLE_AGENT,
    ROLE_PARTNER_AGENT,
    ROLE_SUPERVISOR,
    TenantContext,
)
from hub.requests.models import STATES, ServiceRequest
from hub.requests.service import post_status_update
from hub.requests.validation import check_text
from privacy.access import decrypt_fields
from privacy.audit import audit
from privacy.fields import FieldCipher
from privacy.purposes import declare_purpose
from tenants.languages import TAG_RULE, is_language_tag
from tenants.models import Tenant

log = structlog.get_logger(__name__)

# Personal fields a partner agent sees at each data-sharing level. A tenant's own agents and
# supervisors see every field. Fields not listed here carry no personal data.
PII_FIELDS = ("caller_name", "summary", "phone", "address")
FIELDS_BY_LEVEL: dict[str, tuple[str, ...]] = {
    "minimal": (),
    "standard": ("caller_name", "summary"),
    "full": PII_FIELDS,
}
_COLUMN = {
    "caller_name": "caller_name_enc",
    "summary": "summary_enc",
    "phone": "phone_enc",
    "address": "address_enc",
}
AGENT_VIEW_PURPOSE = declare_purpose(
    "overflow.agent_view",
    "Show an overflow contact's caller details to an agent of the tenant's own contact center.",
)
PARTNER_VIEW_PURPOSE = declare_purpose(
    "overflow.partner_view",
    "Show an overflow contact's caller details, up to the tenant's data-sharing level, to the "
    "partner contact center that answers it.",
)
_LIMITS = {"caller_name": 200, "summary": 2000, "phone": 40, "address": 300}
# Lengths of the `language` column and of contact and center ids.
LANGUAGE_CHARS = 16
CONTACT_ID_CHARS = 36
CENTER_ID_CHARS = 64
OUTCOMES = ("resolved", "request_filed", "request_updated", "transferred", "callback", "no_action")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its tenant context and, for partner agents, its center."""

    ctx: TenantContext
    center_id: str | None = None

    @property
    def is_partner(self) -> bool:
        return self.ctx.has_role(ROLE_PARTNER_AGENT) and self.center_id is not None

    @property
    def is_tenant_staff(self) -> bool:
        return self.ctx.has_role(ROLE_AGENT) or self.ctx.has_role(ROLE_SUPERVISOR)


@dataclass(frozen=True)
class NewContact:
    channel: str
    language: str
    service_group: str
    external_id: str | None = None
    request_id: str | None = None
    caller_name: str | None = None
    phone: str | None = None
    address: str | None = None
    summary: str | None = None

    def validate(self) -> None:
        """Check each field on its own. `_check_served` then checks the language and the
        service group against the tenant, and `route_contact` the linked request."""
        _check_choice("channel", self.channel, CHANNELS)
        check_text("language", self.language, max_chars=LANGUAGE_CHARS)
        if not is_language_tag(self.language):
            raise InvalidInput(
                f"language {self.language!r} is not {TAG_RULE}",
                field="language",
            )
        if not self.service_group:
            raise InvalidInput("service_group must be 1 to 120 characters", field="service_group")
        check_text("service_group", self.service_group, max_chars=120)
        check_text("external_id", self.external_id, max_chars=120)
        check_text("request_id", self.request_id, max_chars=16)
        for name, limit in _LIMITS.items():
            check_text(name, getattr(self, name), max_chars=limit)


def _check_choice(field: str, value: str, allowed: Sequence[str]) -> None:
    """Reject `value` unless it is one of `allowed`. The message repeats the value only when
    it has the form of a code (`shown`), so it never echoes a large or binary input."""
    if value in allowed:
        return
    raise InvalidInput(
        f"{field}{shown(value)} is invalid; use one of {', '.join(allowed)}", field=field
    )


def _check_served(board: LiveBoard, tenant_id: str, data: NewContact) -> None:
    """Reject a language the tenant does not serve, or a service group that none of its own
    centers lists, using the board's copy of the tenant's manifest."""
    config = board.config_of(tenant_id)
    if config is None:
        raise NotFound(
            f"tenant {tenant_id!r} not found; it may have been offboarded since this key was "
            "issued, so ask the hub's operators"
        )
    if config.languages and not speaks(config.languages, data.language):
        raise InvalidInput(
            f"language {data.language!r} is not one of the tenant's languages; "
            f"use one of {', '.join(config.languages)}",
            field="language",
        )
    if config.service_groups and data.service_group not in config.service_groups:
        raise InvalidInput(
            f"service_group {data.service_group!r} is not a skill of the tenant's contact "
            f"centers; use one of {', '.join(config.service_groups)}",
            field="service_group",
        )


def require_staff(caller: Caller) -> None:
    if not caller.is_tenant_staff:
        raise Forbidden("this action needs the agent or supervisor role", code="role_required")


def require_supervisor(caller: Caller) -> None:
    if not caller.ctx.has_role(ROLE_SUPERVISOR):
        raise Forbidden("this action needs the supervisor role", code="role_required")


# --- arrival and routing -----------------------------------------------------------------


def route_new_contact(
    engine: Engine, caller: Caller, board: LiveBoard, data: NewContact
) -> tuple[dict[str, Any], bool]:
    """Store a new contact with its routing decision in a transaction of its own.

    Return the decision as `decision_view` shows it, and whether the contact is new (see
    `route_contact`).

    On PostgreSQL a contact without personal fields or a linked request is stored in a
    transaction of one round trip instead of four, which was most of the time a contact spent
    in the API. Personal fields need the tenant's keys read in the same transaction, and a
    linked request a query that finds it, so such a contact, and every contact on SQLite,
    takes a session.
    """
    if (
        not is_postgres(engine)
        or data.request_id is not None
        or any(getattr(data, name) for name in PII_FIELDS)
    ):
        with unit_of_work(caller.ctx, engine=engine) as session:
            contact, created = route_contact(session, caller, board, data)
            return decision_view(contact), created
    values = _new_contact_values(caller, board, data, utcnow())
    decision, result = _decide_and_store(
        board,
        values,
        lambda row, cap: insert_contact_in_one_round_trip(engine, caller.ctx, row, share_cap=cap),
    )
    if result.duplicate:
        with unit_of_work(caller.ctx, engine=engine, write=False) as session:
            earlier = _earlier_contact(session, caller.ctx.tenant_id, data.external_id)
            return decision_view(earlier), False
    # The view is built from the row's values, because an ORM instance of them cost more CPU
    # than the rest of the decision.
    _count_routed(board, values, decision)
    return decision_view(values), True


def route_contact(
    session: Session,
    caller: Caller,
    board: LiveBoard,
    data: NewContact,
    *,
    now: datetime | None = None,
) -> tuple[Contact, bool]:
    """Store a new contact with its routing decision; return it and whether it is new.

    A repeated `external_id` returns the first contact and its decision unchanged. The row is
    written with one Core statement (`failover.store`), and the returned contact is not
    attached to the session. A partner whose share cap another API process filled since the
    last board reload is passed over, and the decision is taken again without it. A
    `request_id` that names none of the tenant's service requests raises InvalidInput.
    """
    values = _new_contact_values(caller, board, data, as_utc(now) if now else utcnow())
    if data.request_id is not None and not _request_exists(
        session, values["tenant_id"], data.request_id
    ):
        raise InvalidInput(
            f"request_id {data.request_id!r} names no service request of this tenant; "
            "omit it or give the service_request_id of one of the tenant's requests",
            field="request_id",
        )
    values.update(_encrypted_fields(session, values["tenant_id"], values["id"], data))
    connection = session.connection()
    decision, result = _decide_and_store(
        board, values, lambda row, cap: insert_contact(connection, row, share_cap=cap)
    )
    if result.duplicate:
        return _earlier_contact(session, values["tenant_id"], data.external_id), False
    _count_routed(board, values, decision)
    return Contact(**values), True


def _new_contact_values(
    caller: Caller, board: LiveBoard, data: NewContact, now: datetime
) -> dict[str, Any]:
    """Check the caller and the contact; return the row's columns without a decision."""
    require_staff(caller)
    data.validate()
    tenant_id = caller.ctx.tenant_id
    _check_served(board, tenant_id, data)
    values: dict[str, Any] = {
        "id": new_uuid(),
        "tenant_id": tenant_id,
        "external_id": data.external_id,
        "channel": data.channel,
        "language": data.language,
        "service_group": data.service_group,
        "state": "waiting",
        "home_center_id": board.pick_home(tenant_id, now),
        "decision_id": new_uuid(),
        "decision_audited": False,
        "arrived_at": now,
        "request_id": data.request_id,
        "created_by": caller.ctx.actor,
        "dek_version": None,
    }
    values.update({column: None for column in _COLUMN.values()})
    return values


def _decide_and_store(
    board: LiveBoard,
    values: dict[str, Any],
    store: Callable[[dict[str, Any], int | None], StoreResult],
) -> tuple[Decision, StoreResult]:
    """Take the routing decision and store the row with `store`. When a partner's share is
    full in the database, mark it full on the board and decide again without it."""
    tenant_id, now = values["tenant_id"], values["arrived_at"]
    traits = ContactTraits(
        tenant_id, values["channel"], values["language"], values["service_group"]
    )
    for _attempt in range(len(board.agreements.get(tenant_id, ())) + 1):
        with DECISION_LATENCY.time():
            decision = board.decide(traits, now)
        values["center_id"] = decision.center_id
        values["decision_reason"] = decision.reason
        values["agreement_id"] = decision.agreement_id
        values["data_level"] = decision.data_level or "full"
        values["excluded_partners"] = encode_excluded(decision.excluded)
        cap = board.share_limit(decision.center_id, tenant_id, now)
        result = store(values, cap if decision.agreement_id else None)
        if not result.cap_reached:
            return decision, result
        board.mark_share_full(decision.center_id, tenant_id)
    # Every attempt found a partner full; the last decision left no partner to try.
    raise Conflict("every eligible partner is at its share cap; retry", code="share_cap")


def _request_exists(session: Session, tenant_id: str, request_id: str) -> bool:
    """Return whether the tenant has a service request with the Open311 id `request_id`."""
    found = session.scalar(
        select(ServiceRequest.id).where(
            ServiceRequest.tenant_id == tenant_id, ServiceRequest.id == request_id
        )
    )
    return found is not None


def _earlier_contact(session: Session, tenant_id: str, external_id: str | None) -> Contact:
    earlier = session.scalars(
        select(Contact).where(Contact.tenant_id == tenant_id, Contact.external_id == external_id)
    ).one_or_none()
    if earlier is None:
        raise Conflict(
            "a contact with this external_id is being stored; retry to read its decision",
            code="duplicate_contact",
        )
    return earlier


def _count_routed(board: LiveBoard, values: dict[str, Any], decision: Decision) -> None:
    """Count a stored contact on the board and in the metrics."""
    tenant_id = values["tenant_id"]
    board.record_routed(decision.center_id, tenant_id)
    DECISIONS.labels(tenant=tenant_id, target=decision.target, reason=decision.reason).inc()
    log.debug(
        "overflow_contact_routed",
        contact_id=values["id"],
        decision_id=values["decision_id"],
        target=decision.target,
        center_id=decision.center_id,
    )


def _encrypted_fields(
    session: Session, tenant_id: str, contact_id: str, data: NewContact
) -> dict[str, Any]:
    """Return the ciphertext columns of the contact's personal fields (all None when none)."""
    columns: dict[str, Any] = {column: None for column in _COLUMN.values()}
    if not any(getattr(data, name) for name in PII_FIELDS):
        return columns
    cipher = FieldCipher.for_tenant(session, tenant_id)
    for name in PII_FIELDS:
        column = _COLUMN[name]
        columns[column] = cipher.encrypt(CONTACTS_TABLE, column, contact_id, getattr(data, name))
    columns["dek_version"] = cipher.dek_version
    return columns


def decision_view(contact: Contact | Mapping[str, Any]) -> dict[str, Any]:
    """Return the routing decision of a contact, given as a row or as its column values."""
    value = contact.get if isinstance(contact, Mapping) else partial(getattr, contact)
    return {
        "contact_id": value("id"),
        "decision_id": value("decision_id"),
        "target": "home" if value("agreement_id") is None else PARTNER,
        "center_id": value("center_id"),
        "reason": value("decision_reason"),
        "agreement_id": value("agreement_id"),
        "state": value("state"),
    }


# --- finding a contact for a caller --------------------------------------------------------


def require_partner_center(session: Session, caller: Caller, center_id: str) -> None:
    """Raise NotFound unless `center_id` is the partner center that the partner agent's key
    names. Keys created before `hub tenants keys create` checked the center may name one that
    does not exist or is a tenant's own center."""
    center = session.get(ContactCenter, center_id) if caller.center_id == center_id else None
    if center is None or center.owner_tenant_id is not None:
        raise NotFound(f"center {center_id} not found", code="not_found")


def own_center_ids(session: Session, tenant_id: str) -> set[str]:
    return set(
        session.scalars(select(ContactCenter.id).where(ContactCenter.owner_tenant_id == tenant_id))
    )


def load_contact(
    session: Session, caller: Caller, contact_id: str, *, for_update: bool = False
) -> Contact:
    """Return the contact if `caller` may work it, else NotFound as for an unknown id.

    With `for_update` the row stays locked until commit, so two requests that change the same
    contact's state run one after the other.
    """
    check_text("contact_id", contact_id, max_chars=CONTACT_ID_CHARS)
    contact = session.get(Contact, contact_id, with_for_update=for_update or None)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found", code="not_found")
    if caller.is_partner:
        # A partner agent's key comes from one city and opens only that city's contacts. A
        # center that takes calls for several cities has a key from each, so no city can grant
        # access to another city's residents.
        if (
            contact.center_id != caller.center_id
            or contact.agreement_id is None
            or contact.tenant_id != caller.ctx.tenant_id
        ):
            raise NotFound(f"contact {contact_id} not found", code="not_found")
        return contact
    if contact.tenant_id != caller.ctx.tenant_id or not caller.is_tenant_staff:
        raise NotFound(f"contact {contact_id} not found", code="not_found")
    if contact.agreement_id is not None and not caller.ctx.has_role(ROLE_SUPERVISOR):
        # In-progress work finishes where it is: a contact with a partner stays there.
        raise Conflict(
            f"contact {contact_id} was routed to partner center {contact.center_id}",
            code="routed_to_partner",
        )
    return contact


def _owner_context(caller: Caller, contact: Contact) -> TenantContext:
    """Return the context to act in on the owning tenant's data, keeping the caller as actor."""
    if contact.tenant_id == caller.ctx.tenant_id and not caller.is_partner:
        return caller.ctx
    return TenantContext(
        tenant_id=contact.tenant_id,
        actor=caller.ctx.actor,
        roles=caller.ctx.roles,
        request_id=caller.ctx.request_id,
    )


# --- claim, complete, abandon --------------------------------------------------------------


def claim_contact(
    session: Session, caller: Caller, contact_id: str, *, now: datetime | None = None
) -> Contact:
    contact = load_contact(session, caller, contact_id, for_update=True)
    if contact.state != "waiting":
        raise Conflict(f"contact {contact_id} is {contact.state}, not waiting", code="not_waiting")
    now = as_utc(now) if now else utcnow()
    contact.state = "claimed"
    contact.claimed_at = now
    contact.claimed_by = caller.ctx.actor
    contact.wait_seconds = max(0.0, (now - as_utc(contact.arrived_at)).total_seconds())
    _audit_contact(session, caller, contact, "overflow.claim")
    return contact


def complete_contact(
    session: Session,
    caller: Caller,
    contact_id: str,
    *,
    outcome: str,
    request_status: str | None = None,
    resolution: str | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> Contact:
    """Finish a claimed contact; with `request_status`, update the linked service request.

    The update goes through the request lifecycle of the owning tenant, so the result of a
    partner's work lands in the tenant's own request record and status history. A repeated
    complete with the same outcome changes nothing, and one with another outcome raises
    Conflict.
    """
    _check_choice("outcome", outcome, OUTCOMES)
    if request_status is not None:
        _check_choice("request_status", request_status, STATES)
    else:
        for name, value in (("resolution", resolution), ("note", note)):
            if value is not None:
                raise InvalidInput(
                    f"{name} is stored with a status update of the linked service request; "
                    f"add request_status or omit {name}",
                    field=name,
                )
    contact = load_contact(session, caller, contact_id, for_update=True)
    if contact.state == "completed":
        if contact.outcome == outcome:
            return contact
        raise Conflict(
            f"contact {contact_id} was already completed with outcome {contact.outcome!r}; "
            f"a repeated complete cannot change it to {outcome!r}",
            code="already_completed",
        )
    if contact.state != "claimed":
        raise Conflict(f"contact {contact_id} is {contact.state}, not claimed", code="not_claimed")
    if request_status is not None:
        if contact.request_id is None:
            raise InvalidInput(
                "this contact has no linked service request to update; omit request_status",
                field="request_status",
            )
        if not _request_exists(session, contact.tenant_id, contact.request_id):
            # The request left the tenant after the contact was stored (a transfer to another
            # jurisdiction, or a retention purge).
            raise Conflict(
                f"contact {contact_id} has request_id {contact.request_id}, which names no "
                f"service request of tenant {contact.tenant_id}; complete it without "
                "request_status",
                code="request_not_found",
                field="request_status",
            )
        post_status_update(
            session,
            _owner_context(caller, contact),
            contact.request_id,
            request_status,
            note=note,
            resolution=resolution,
            channel="overflow",
            update_id=f"contact:{contact.id}",
        )
    _release_partner_slot(session, contact)
    contact.state = "completed"
    contact.outcome = outcome
    contact.finished_at = as_utc(now) if now else utcnow()
    _audit_contact(session, caller, contact, "overflow.complete", outcome=outcome)
    return contact


def abandon_contact(
    session: Session, caller: Caller, contact_id: str, *, now: datetime | None = None
) -> Contact:
    contact = load_contact(session, caller, contact_id, for_update=True)
    if contact.state == "abandoned":
        return contact
    if contact.state != "waiting":
        raise Conflict(f"contact {contact_id} is {contact.state}, not waiting", code="not_waiting")
    now = as_utc(now) if now else utcnow()
    _release_partner_slot(session, contact)
    contact.state = "abandoned"
    contact.finished_at = now
    contact.wait_seconds = max(0.0, (now - as_utc(contact.arrived_at)).total_seconds())
    _audit_contact(session, caller, contact, "overflow.abandon")
    return contact


def _release_partner_slot(session: Session, contact: Contact) -> None:
    if contact.agreement_id is not None:
        release_slot(session.connection(), contact.agreement_id, contact.tenant_id)


def _audit_contact(
    session: Session, caller: Caller, contact: Contact, action: str, **extra: str
) -> None:
    audit(
        session,
        tenant_id=contact.tenant_id,
        actor=caller.ctx.actor,
        action=action,
        details={"contact_id": contact.id, "center_id": contact.center_id, **extra},
    )


# --- heartbeats ----------------------------------------------------------------------------


def record_heartbeat(
    session: Session,
    caller: Caller,
    center_id: str,
    *,
    agents_staffed: int,
    agents_available: int,
    standby: bool = False,
    now: datetime | None = None,
) -> CenterHeartbeat:
    """Store a center's heartbeat. Partner agents report for their partner center, tenant
    staff for the tenant's own centers; any other center is NotFound."""
    check_text("center_id", center_id, max_chars=CENTER_ID_CHARS)
    center = session.get(ContactCenter, center_id)
    if center is None and caller.is_tenant_staff:
        # A tenant's own centers reach the table on the board's next reload; a heartbeat that
        # comes first copies them from the manifest now.
        tenant = session.get(Tenant, caller.ctx.tenant_id)
        if tenant is not None:
            sync_tenant_centers(session, tenant)
            session.flush()
            center = session.get(ContactCenter, center_id)
    allowed = center is not None and (
        # A partner key that names a tenant's own center must not drive that tenant's
        # switches, so partner agents report only for partner centers.
        (caller.is_partner and caller.center_id == center_id and center.owner_tenant_id is None)
        or (caller.is_tenant_staff and center.owner_tenant_id == caller.ctx.tenant_id)
    )
    if not allowed:
        raise NotFound(f"center {center_id} not found", code="not_found")
    if agents_staffed < 0 or agents_available < 0 or agents_available > agents_staffed:
        raise InvalidInput(
            "agents_available must be between 0 and agents_staffed, and both >= 0",
            field="agents_available",
        )
    heartbeat = session.get(CenterHeartbeat, center_id)
    if heartbeat is None:
        heartbeat = CenterHeartbeat(center_id=center_id)
        session.add(heartbeat)
    heartbeat.at = as_utc(now) if now else utcnow()
    heartbeat.agents_staffed = agents_staffed
    heartbeat.agents_available = agents_available
    heartbeat.standby = standby
    return heartbeat


# --- views ---------------------------------------------------------------------------------


def contact_view(session: Session, caller: Caller, contact: Contact) -> dict[str, Any]:
    """Return the contact with the personal fields the caller's level allows, decrypted.

    Each view that shows personal data writes one audit entry through `privacy.access`.
    """
    level = contact.data_level if caller.is_partner else "full"
    fields = FIELDS_BY_LEVEL.get(level, ())
    view: dict[str, Any] = {
        "contact_id": contact.id,
        "tenant_id": contact.tenant_id,
        "channel": contact.channel,
        "language": contact.language,
        "service_group": contact.service_group,
        "state": contact.state,
        "center_id": contact.center_id,
        "arrived_at": isoformat(contact.arrived_at),
        "claimed_at": isoformat(contact.claimed_at),
        "data_level": level,
    }
    if level != "minimal":
        view["request_id"] = contact.request_id
    if not caller.is_partner:
        view["excluded_partners"] = decode_excluded(contact.excluded_partners)
    blobs = {_COLUMN[name]: getattr(contact, _COLUMN[name]) for name in fields}
    if any(blob is not None for blob in blobs.values()):
        purpose = PARTNER_VIEW_PURPOSE if caller.is_partner else AGENT_VIEW_PURPOSE
        plain = decrypt_fields(
            session,
            _owner_context(caller, contact),
            CONTACTS_TABLE,
            contact.id,
            blobs,
            purpose=purpose,
        )
        for name in fields:
            view[name] = plain.get(_COLUMN[name])
    else:
        for name in fields:
            view[name] = None
    if caller.is_partner:
        PARTNER_VIEWS.labels(center=contact.center_id or "none", level=level).inc()
    return view


def center_contacts(
    session: Session, caller: Caller, center_id: str, *, limit: int = 100
) -> list[Contact]:
    """Return the open contacts at a center that the caller may see, oldest first."""
    check_text("center_id", center_id, max_chars=CENTER_ID_CHARS)
    if caller.is_partner:
        require_partner_center(session, caller, center_id)
        # Only the contacts of the city whose key it is (see `load_contact`).
        query = select(Contact).where(
            Contact.tenant_id == caller.ctx.tenant_id,
            Contact.center_id == center_id,
            Contact.agreement_id.is_not(None),
        )
    else:
        require_staff(caller)
        if center_id not in own_center_ids(session, caller.ctx.tenant_id):
            raise NotFound(f"center {center_id} not found", code="not_found")
        query = select(Contact).where(
            Contact.tenant_id == caller.ctx.tenant_id, Contact.center_id == center_id
        )
    query = query.where(Contact.state.in_(OPEN_STATES)).order_by(Contact.arrived_at).limit(limit)
    return list(session.scalars(query))
