"""Tenant context and the mixin that marks a model as tenant-owned.

Every service and repository call on tenant data takes a `TenantContext`. The database layer
(`hub.core.db`) also enforces the scope centrally, so a forgotten filter cannot leak rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

# Roles a credential can carry. A role grants a capability; the tenant scope is separate.
ROLE_OPEN311 = "open311"  # a city app or web form filing and reading requests
ROLE_AGENT = "agent"  # a call-center agent working contacts and requests
ROLE_AGENCY = "agency"  # an agency back office posting status updates
ROLE_STAFF = "staff"  # city staff who may see decrypted personal data for a purpose
ROLE_ADMIN = "tenant_admin"
ROLE_EMERGENCY_MANAGER = "emergency_manager"
ROLE_SUPERVISOR = "supervisor"
ROLE_PARTNER_AGENT = "partner_agent"
ROLE_AUDITOR = "auditor"  # reads the audit log and the privacy report; never decrypts

ALL_ROLES = frozenset(
    {
        ROLE_OPEN311,
        ROLE_AGENT,
        ROLE_AGENCY,
        ROLE_STAFF,
        ROLE_ADMIN,
        ROLE_EMERGENCY_MANAGER,
        ROLE_SUPERVISOR,
        ROLE_PARTNER_AGENT,
        ROLE_AUDITOR,
    }
)


@dataclass(frozen=True)
class TenantContext:
    """The acting credential and the tenant it acts for.

    `actor` is an opaque, non-personal identifier such as `apikey:12` or `cli:operator`. It
    appears in status events and audit entries.
    """

    tenant_id: str
    actor: str = "system"
    roles: frozenset[str] = field(default_factory=frozenset)
    request_id: str | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class SystemContext:
    """A cross-tenant actor (outbox relay, regional alert fan-out, migrations, admin CLI).

    Sessions opened with it see every tenant's rows; `reason` is logged when the session opens.
    """

    reason: str
    actor: str = "system"


class TenantOwned:
    """Mixin for models whose rows belong to one tenant.

    Queries through an ORM session are filtered to the session's tenant by loader criteria,
    and on PostgreSQL the table also has a row-level security policy on `tenant_id`.
    """

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:  # noqa: N805 - SQLAlchemy declared_attr convention
        return mapped_column(
            String(64), ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False
        )
