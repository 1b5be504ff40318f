"""Tenant exports built on the registry: the sealed full export and the anonymized open data.

Both read the registered tables with plain SQL, so they serve the CLI and offboarding (in
`tenants`) without importing the features that own the tables.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, column, select, table, text
from sqlalchemy.orm import Session

from hub.core.clock import isoformat, utcnow
from hub.core.errors import InvalidInput
from hub.core.tenancy import TenantContext
from privacy.access import decrypt_rows
from privacy.anonymize import AnonymizedExport, FreeText, IdMode, anonymize, district_lookup
from privacy.anonymize import policy_from_settings as build_policy
from privacy.audit import audit
from privacy.open_data import file_digests
from privacy.purposes import declare_purpose
from privacy.registry import EncryptedTable, encrypted_tables
from privacy.retention import tenant_privacy_settings
from privacy.shred import X25519PublicKey, seal

OPEN_DATA_TABLE = "service_requests"
EXPORT_BATCH_ROWS = 1000
PURPOSE_SEALED_EXPORT = declare_purpose(
    "export.sealed",
    "Write the export of all the tenant's data, sealed to the recipient key the tenant gives, "
    "when it offboards.",
)
PURPOSE_REDACTION = declare_purpose(
    "export.open_data_redaction",
    "Remove a record's own name, phone, e-mail and address from its redacted open-data text.",
)

Progress = Callable[[int], None]


def _entry(name: str) -> EncryptedTable:
    for entry in encrypted_tables():
        if entry.table == name:
            return entry
    raise InvalidInput(
        f"table {name} is not registered for encryption; import the feature that owns it",
        code="table_not_registered",
    )


def iter_row_batches(
    session: Session, entry: EncryptedTable, tenant_id: str, *, batch_size: int = EXPORT_BATCH_ROWS
) -> Iterator[list[dict[str, Any]]]:
    """Yield the tenant's rows of a registered table in batches, in id order (keyset paging)."""
    # Identifiers come from the registry, which accepts plain lower-case names only.
    base = f"SELECT * FROM {entry.table} WHERE {entry.tenant_column} = :tenant"  # noqa: S608
    order = f" ORDER BY {entry.id_column} LIMIT :limit"
    first_page = text(base + order)
    next_page = text(base + f" AND {entry.id_column} > :after" + order)
    after: Any = None
    while True:
        params = {"tenant": tenant_id, "limit": batch_size, "after": after}
        statement = first_page if after is None else next_page
        rows = session.execute(statement, params).all()
        if not rows:
            return
        batch = [dict(row._mapping) for row in rows]
        yield batch
        after = batch[-1][entry.id_column]


def decrypted_batches(
    session: Session,
    ctx: TenantContext,
    entry: EncryptedTable,
    *,
    purpose: str,
    progress: Progress | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the tenant's rows with each `*_enc` column replaced by its plaintext (audited)."""
    for batch in iter_row_batches(session, entry, ctx.tenant_id):
        pairs = [(entry.bound_row_id(row), {c: row[c] for c in entry.columns}) for row in batch]
        plain = decrypt_rows(session, ctx, entry.table, pairs, purpose=purpose)
        out = []
        for row, values in zip(batch, plain, strict=True):
            record = {k: v for k, v in row.items() if k not in entry.columns}
            for name, value in values.items():
                record[name.removesuffix("_enc")] = value
            out.append(record)
        if progress is not None:
            progress(len(out))
        yield out


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def write_sealed_export(
    session: Session,
    ctx: TenantContext,
    recipient: X25519PublicKey,
    path: Path,
    *,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Decrypt every registered table of the tenant that is `exported` and seal it to
    `recipient` at `path`.

    Returns rows per table. NOTE: the document is built in memory before sealing, so a tenant
    with millions of rows needs memory in proportion.
    """
    document: dict[str, Any] = {
        "format": "hub-tenant-export-v1",
        "tenant_id": ctx.tenant_id,
        "exported_at": isoformat(utcnow()),
        "tables": {},
    }
    counts = {}
    for entry in encrypted_tables():
        if not entry.exported:
            continue
        rows = []
        for batch in decrypted_batches(
            session, ctx, entry, purpose=PURPOSE_SEALED_EXPORT, progress=progress
        ):
            rows.extend({k: _json_value(v) for k, v in row.items()} for row in batch)
        document["tables"][entry.table] = rows
        counts[entry.table] = len(rows)
    payload = json.dumps(document, ensure_ascii=False).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(seal(recipient, payload))
    audit(
        session,
        tenant_id=ctx.tenant_id,
        actor=ctx.actor,
        action="export.sealed",
        details={"rows": sum(counts.values()), "tables": sorted(counts), **file_digests([path])},
    )
    return counts


def _services(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    services = table(
        "services",
        column("tenant_id"),
        column("code"),
        column("open_data_location"),
        column("h3_resolution"),
        column("location_sensitive"),
    )
    rows = session.execute(
        select(
            services.c.code,
            services.c.open_data_location,
            services.c.h3_resolution,
            services.c.location_sensitive,
        ).where(services.c.tenant_id == tenant_id)
    ).all()
    return [dict(row._mapping) for row in rows]


def _districts(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    tenants = table("tenants", column("id"), column("manifest", JSON))
    manifest = session.execute(select(tenants.c.manifest).where(tenants.c.id == tenant_id)).scalar()
    return list((manifest or {}).get("districts") or [])


def open_data_export(
    session: Session,
    ctx: TenantContext,
    *,
    free_text: FreeText = "withheld",
    ids: IdMode = "pseudonymous",
    progress: Progress | None = None,
) -> AnonymizedExport:
    """Build the tenant's anonymized open data from its service requests.

    With `free_text="withheld"` nothing is decrypted. With `redacted` the descriptions and the
    record's own personal data are decrypted (audited, purpose `export.open_data_redaction`)
    so the redaction can remove them. `ids` chooses between ids new to this export and the
    Open311 ids (see `AnonymizationPolicy`).
    """
    entry = _entry(OPEN_DATA_TABLE)
    settings = tenant_privacy_settings(session, ctx.tenant_id)
    districts = _districts(session, ctx.tenant_id)
    policy = build_policy(
        settings,
        _services(session, ctx.tenant_id),
        free_text=free_text,
        district_of=district_lookup(districts) if districts else None,
        district_names={str(d.get("code")): str(d.get("name") or d.get("code")) for d in districts},
        ids=ids,
    )
    if free_text == "redacted":
        batches = decrypted_batches(
            session, ctx, entry, purpose=PURPOSE_REDACTION, progress=progress
        )
    else:
        batches = _counted(iter_row_batches(session, entry, ctx.tenant_id), progress)
    return anonymize((row for batch in batches for row in batch), policy, tenant_id=ctx.tenant_id)


def _counted(
    batches: Iterator[list[dict[str, Any]]], progress: Progress | None
) -> Iterator[list[dict[str, Any]]]:
    for batch in batches:
        if progress is not None:
            progress(len(batch))
        yield batch
