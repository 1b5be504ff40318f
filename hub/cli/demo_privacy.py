"""The privacy step of `hub demo`: encryption coverage, an anonymized export and an audit
verification for each example tenant."""

from __future__ import annotations

from typing import Any

from hub.cli.demo.context import DemoContext
from hub.cli.output import console
from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_ADMIN, SystemContext, TenantContext
from privacy.audit import checkpoint_chain
from privacy.audit_verify import export_audit, verify
from privacy.export import open_data_export
from privacy.open_data import record_export, write_export
from privacy.report import encryption_coverage

ACTOR = "cli:demo"


def privacy_step(ctx: DemoContext) -> dict[str, Any]:
    """Scan each tenant's ciphertexts, write its open data, then export and verify its audit
    chain offline."""
    out_dir = ctx.settings.var_dir / "demo"
    tenants: dict[str, Any] = {}
    for tenant in ctx.tenants:
        operator = TenantContext(tenant.tenant_id, actor=ACTOR, roles=frozenset({ROLE_ADMIN}))
        with unit_of_work(operator, engine=ctx.engine) as session:
            coverage = encryption_coverage(session, tenant.tenant_id)["evidence"]
            export = open_data_export(session, operator)
            path = out_dir / f"{tenant.tenant_id}-open-data.csv"
            files = write_export(export, path, "csv")
            record_export(
                session, tenant.tenant_id, actor=ACTOR, export=export, fmt="csv", files=files
            )

        audit_file = out_dir / f"{tenant.tenant_id}-audit.jsonl"
        with unit_of_work(SystemContext("demo audit export"), engine=ctx.engine) as session:
            checkpoint_chain(session, tenant.tenant_id)
            export_audit(session, audit_file, tenant_id=tenant.tenant_id)
        verification = verify(audit_file)

        tenants[tenant.tenant_id] = {
            "encrypted_values": coverage["encrypted_values"],
            "stored_values": coverage["stored_values"],
            "encryption_share": coverage["share"],
            "open_data_file": str(path),
            "open_data": export.metadata(),
            "audit_file": str(audit_file),
            "audit_entries": verification.entries,
            "audit_verified": verification.ok,
        }
    return {"tenants": tenants}


def render_privacy(section: dict[str, Any]) -> None:
    console.print("privacy:", markup=False)
    for tenant_id, data in section["tenants"].items():
        meta = data["open_data"]
        verified = "verified" if data["audit_verified"] else "FAILED verification"
        console.print(
            f"  {tenant_id}: {data['encrypted_values']}/{data['stored_values']} personal values "
            f"encrypted; open data {meta['published_records']} of {meta['total_records']} "
            f"records (k={meta['k']}, {meta['suppressed_records']} suppressed) in "
            f"{data['open_data_file']}; audit chain of {data['audit_entries']} entries {verified}",
            markup=False,
        )
