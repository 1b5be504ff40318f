"""Counts of active alert subscribers per tenant, by language and by channel.

The counts carry no personal data: no subscriber id, address or place, only how many
subscribers prefer each language tag and how many active channels of each kind they have.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from sqlalchemy import Engine, String, cast, func, select
from sqlalchemy.orm import Session

from hub.alerts import models as m
from hub.alerts.service import require_tenant
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from tenants.languages import canonical_tag
from tenants.models import Tenant

# Language key of subscribers who gave no language; they get the tenant's default language.
NO_LANGUAGE = "none"


def _first_language(stored: str | None) -> str:
    """Return the preferred language of a stored language list (JSON text), canonical case."""
    languages = json.loads(stored) if stored else []
    if not languages:
        return NO_LANGUAGE
    return canonical_tag(str(languages[0]))


def tenant_counts(session: Session, tenant_id: str) -> dict[str, Any]:
    """Count the tenant's active subscribers, by preferred language and by active channel."""
    active = (m.Subscriber.tenant_id == tenant_id, m.Subscriber.active.is_(True))
    # Grouping by the list's JSON text keeps the work in the database: a tenant has few
    # distinct language lists, however many subscribers share them.
    lists = session.execute(
        select(cast(m.Subscriber.languages, String), func.count())
        .where(*active)
        .group_by(cast(m.Subscriber.languages, String))
    ).all()
    by_language: Counter[str] = Counter()
    for stored, count in lists:
        by_language[_first_language(stored)] += int(count)
    channels = session.execute(
        select(m.SubscriberChannel.channel, func.count())
        .join(m.Subscriber, m.Subscriber.id == m.SubscriberChannel.subscriber_id)
        .where(*active, m.SubscriberChannel.active.is_(True))
        .group_by(m.SubscriberChannel.channel)
    ).all()
    test_opt_ins = session.scalar(
        select(func.count()).where(*active, m.Subscriber.test_opt_in.is_(True))
    )
    return {
        "tenant_id": tenant_id,
        "subscribers": sum(by_language.values()),
        "test_opt_in": int(test_opt_ins or 0),
        "by_language": dict(sorted(by_language.items(), key=lambda item: (-item[1], item[0]))),
        "by_channel": {channel: int(count) for channel, count in sorted(channels)},
    }


def subscriber_counts(engine: Engine | None, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Count active subscribers of one tenant, or of every active tenant when `tenant_id` is
    None. Raises NotFound for an unknown or inactive tenant."""
    with unit_of_work(SystemContext("subscriber counts"), engine=engine, write=False) as session:
        if tenant_id is not None:
            tenant_ids = [require_tenant(session, tenant_id).id]
        else:
            tenant_ids = list(
                session.scalars(
                    select(Tenant.id).where(Tenant.status == "active").order_by(Tenant.id)
                )
            )
    result = []
    for current in tenant_ids:
        with unit_of_work(TenantContext(current), engine=engine, write=False) as session:
            result.append(tenant_counts(session, current))
    return result
