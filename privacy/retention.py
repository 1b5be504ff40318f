"""Retention: clear the ciphertexts of registered rows older than the tenant's retention period.

Purging sets a row's ciphertext columns and DEK version to NULL and keeps the row, so counts and
anonymized open data stay intact while the personal data is gone for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import JSON, column, func, select, table, update
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, utcnow
from privacy.audit import audit
from privacy.registry import EncryptedTable, encrypted_tables

log = structlog.get_logger(__name__)

# The defaults of the tenant manifest's `privacy` section, used when a tenant sets none.
DEFAULT_K = 5
DEFAULT_TIME_BUCKET = "day"
DEFAULT_RETENTION_DAYS = {"personal_data": 730, "requests": 2555, "audit": 2555}


def tenant_privacy_settings(session: Session, tenant_id: str) -> dict[str, Any]:
    """Read the `privacy` section of the tenant's stored manifest, with defaults filled in.

    The tenants package sits above this one, so the row is read by plain SQL on its table.
    """
    tenants = table("tenants", column("id"), column("manifest", JSON))
    manifest = session.execute(select(tenants.c.manifest).where(tenants.c.id == tenant_id)).scalar()
    section = dict((manifest or {}).get("privacy") or {})
    retention = dict(DEFAULT_RETENTION_DAYS)
    retention.update(section.get("retention_days") or {})
    return {
        "k": int(section.get("k") or DEFAULT_K),
        "time_bucket": section.get("time_bucket") or DEFAULT_TIME_BUCKET,
        "retention_days": retention,
    }


def _expired_selections(
    tenant_id: str, retention_days: dict[str, int], now: datetime
) -> Iterator[tuple[EncryptedTable, Any, list[Any]]]:
    """Yield (registered table, SQL table, WHERE conditions) for rows past retention."""
    for entry in encrypted_tables():
        days = retention_days.get(entry.retention_class)
        if entry.time_column is None or days is None:
            continue
        sql = table(
            entry.table,
            column(entry.tenant_column),
            column(entry.time_column),
            column(entry.version_column),
            *(column(name) for name in entry.columns),
        )
        where = [
            sql.c[entry.tenant_column] == tenant_id,
            sql.c[entry.time_column] < now - timedelta(days=days),
            sql.c[entry.version_column].is_not(None),
        ]
        yield entry, sql, where


def retention_cutoffs(
    session: Session, tenant_id: str, *, now: datetime | None = None
) -> dict[str, tuple[str, datetime]]:
    """Return {table: (time column, cutoff)} for the tenant's registered tables.

    A row whose time column is before the cutoff is past retention: the purge clears its
    ciphertexts. Importers use this to store such rows without them in the first place.
    """
    retention_days = tenant_privacy_settings(session, tenant_id)["retention_days"]
    now = now or utcnow()
    cutoffs = {}
    for entry in encrypted_tables():
        days = retention_days.get(entry.retention_class)
        if entry.time_column is not None and days is not None:
            cutoffs[entry.table] = (entry.time_column, now - timedelta(days=days))
    return cutoffs


def past_retention(
    cutoffs: dict[str, tuple[str, datetime]], table_name: str, row: dict[str, Any]
) -> bool:
    """True when `row`, column values about to be inserted, is already past retention."""
    cutoff = cutoffs.get(table_name)
    if cutoff is None:
        return False
    column_name, before = cutoff
    stamp = row.get(column_name)
    return stamp is not None and as_utc(stamp) < before


def cleared_columns(table_name: str) -> dict[str, None]:
    """The values `purge_expired` leaves in a purged row: no ciphertexts, no DEK version."""
    entry = next(entry for entry in encrypted_tables() if entry.table == table_name)
    return {name: None for name in (*entry.columns, entry.version_column)}


def expired_rows(
    session: Session, tenant_id: str, retention_days: dict[str, int], *, now: datetime | None = None
) -> dict[str, int]:
    """Count rows per registered table that are past retention and still hold ciphertexts."""
    counts = {}
    for entry, sql, where in _expired_selections(tenant_id, retention_days, now or utcnow()):
        counts[entry.table] = int(
            session.execute(select(func.count()).select_from(sql).where(*where)).scalar() or 0
        )
    return counts


def purge_expired(
    session: Session,
    tenant_id: str,
    retention_days: dict[str, int],
    *,
    actor: str,
    now: datetime | None = None,
) -> dict[str, int]:
    """Clear the ciphertexts of rows past retention; return rows purged per table.

    Idempotent: purged rows have no DEK version any more and are not selected again.
    """
    purged = {}
    for entry, sql, where in _expired_selections(tenant_id, retention_days, now or utcnow()):
        cleared = {name: None for name in entry.columns}
        cleared[entry.version_column] = None
        result = session.execute(update(sql).where(*where).values(cleared))
        purged[entry.table] = int(result.rowcount or 0)
    total = sum(purged.values())
    if total:
        audit(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="retention.purge",
            details={"rows": total, "tables": sorted(t for t, n in purged.items() if n)},
        )
        log.info("retention_purged", tenant_id=tenant_id, rows=total)
    return purged
