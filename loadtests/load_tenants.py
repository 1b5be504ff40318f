"""The tenants a load run creates, and the check that keeps a run away from real tenants.

A load run onboards its own copies of the example manifests: ids, jurisdictions and contact
center ids get the `loadtest-` prefix, and the agencies' webhook URLs point at a reserved
`.invalid` host until the harness points them at its receiver. The run creates keys and
requests for those tenants only and revokes its keys at the end, so the real tenants of a
database are never onboarded, re-keyed or re-pointed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

PREFIX = "loadtest-"
# Agencies' webhook URLs before the harness points them at its receiver. The .invalid domain
# never resolves, so a delivery that escapes the run fails instead of reaching a real agency.
PLACEHOLDER_WEBHOOK = "https://agency-webhooks.example.invalid/loadtest"
# Option that lets a run add its tenants to a database that contains other tenants.
ALLOW_OPTION = "--allow-real-tenants"
# Real tenant ids named in the refusal message; the message gives the total as well.
LISTED_TENANTS = 5


def is_load_tenant(tenant_id: str) -> bool:
    return tenant_id.startswith(PREFIX)


def load_manifest_for(example: Path) -> Any:
    """Return the load-test copy of an example manifest, with prefixed ids and placeholder
    agency webhooks."""
    from tenants.manifest import load_manifest, parse_manifest

    data = load_manifest(example).model_dump(mode="json")
    data["id"] = PREFIX + data["id"]
    data["jurisdiction_id"] = PREFIX + data["jurisdiction_id"]
    for agency in data["agencies"]:
        agency["webhook_url"] = f"{PLACEHOLDER_WEBHOOK}/{data['id']}/{agency['code']}"
    for center in data["overflow"]["centers"]:
        center["id"] = PREFIX + center["id"]
    return parse_manifest(data, source=f"load-test copy of {example}")


def base_tenant_id(tenant_id: str) -> str:
    """Return the example tenant id a load tenant was copied from."""
    return tenant_id.removeprefix(PREFIX)


def other_tenants(engine: Engine) -> list[str]:
    """Return the ids of the database's tenants that a load run did not create, sorted."""
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from tenants.models import Tenant

    with unit_of_work(SystemContext("load test check"), engine=engine, write=False) as session:
        ids = session.scalars(select(Tenant.id).order_by(Tenant.id)).all()
    return [tenant_id for tenant_id in ids if not is_load_tenant(tenant_id)]


def check_database(engine: Engine, *, allow_real_tenants: bool) -> None:
    """Raise RuntimeError when the database contains tenants that a load run did not create,
    unless `allow_real_tenants` is set."""
    others = other_tenants(engine)
    if not others or allow_real_tenants:
        return
    listed = ", ".join(others[:LISTED_TENANTS])
    more = f" and {len(others) - LISTED_TENANTS} more" if len(others) > LISTED_TENANTS else ""
    where = engine.url.render_as_string(hide_password=True)
    raise RuntimeError(
        f"the database {where} contains {len(others)} tenant(s) that are not load-test tenants "
        f"({listed}{more}); a load run adds tenants, keys and thousands of requests to the "
        "database it uses. Run it against a staging database or without HUB_DATABASE_URL "
        f"(an embedded stack in the report directory), or pass {ALLOW_OPTION} to run beside "
        "those tenants, whose data the run does not change"
    )


def revoke_keys(engine: Engine, tenant_ids: list[str]) -> int:
    """Revoke every active API key of the given load tenants; return how many were revoked."""
    from hub.core.db import unit_of_work
    from hub.core.tenancy import TenantContext
    from tenants.keys import list_api_keys, revoke_api_key

    revoked = 0
    for tenant_id in tenant_ids:
        if not is_load_tenant(tenant_id):
            raise ValueError(f"{tenant_id!r} is not a load-test tenant; its keys stay as they are")
        context = TenantContext(tenant_id=tenant_id, actor="cli:loadtest")
        with unit_of_work(context, engine=engine) as session:
            for key in list_api_keys(session, context):
                if key.revoked_at is None:
                    revoke_api_key(session, context, key.id)
                    revoked += 1
    return revoked
