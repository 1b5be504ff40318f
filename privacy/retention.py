"""Retention: purge registered rows older than the tenant's retention periods.

Past the `personal_data` period, the purge sets a row's ciphertext columns, DEK version and
linking columns (blind indexes, fine location cell) to NULL and keeps the row, so counts and
anonymized open data stay intact while nothing links the row to a person any more. Past a
table's delete period (`requests` for service requests), the purge deletes the row with the
rows that hang on it. Past the `audit` period, it deletes the oldest entries of the tenant's
audit chain up to a signed anchor (see `purge_audit_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import JSON, column, delete, func, or_, select, table, update
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, utcnow
from privacy.audit import anchor_cutoff_text, audit, chain_of, lock_chains, sign_anchor
from privacy.models import AuditCheckpoint, AuditEntry
from privacy.registry import EncryptedTable, dependent_rows, encrypted_tables

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


# Rows handled per statement, so a large purge holds its locks briefly. `run_retention_purge`
# commits after every batch.
PURGE_BATCH = 500


def _sql_table(entry: EncryptedTable) -> Any:
    return table(
        entry.table,
        column(entry.id_column),
        column(entry.tenant_column),
        column(entry.time_column),
        column(entry.version_column),
        *(column(name) for name in (*entry.columns, *entry.linking_columns)),
    )


def _expired_selections(
    tenant_id: str, retention_days: dict[str, int], now: datetime
) -> Iterator[tuple[EncryptedTable, Any, list[Any]]]:
    """Yield (registered table, SQL table, WHERE conditions) for rows past retention.

    A row is past retention while its time column is older than the period and it still has
    a DEK version (so ciphertexts) or a linking column set.
    """
    for entry in encrypted_tables():
        days = retention_days.get(entry.retention_class)
        if entry.time_column is None or days is None:
            continue
        sql = _sql_table(entry)
        still_set = [
            sql.c[name].is_not(None) for name in (entry.version_column, *entry.linking_columns)
        ]
        where = [
            sql.c[entry.tenant_column] == tenant_id,
            sql.c[entry.time_column] < now - timedelta(days=days),
            or_(*still_set),
        ]
        yield entry, sql, where


def _deletable_selections(
    tenant_id: str, retention_days: dict[str, int], now: datetime
) -> Iterator[tuple[EncryptedTable, Any, list[Any]]]:
    """Yield (registered table, SQL table, WHERE conditions) for rows past their delete period."""
    for entry in encrypted_tables():
        days = retention_days.get(entry.delete_class) if entry.delete_class else None
        if entry.time_column is None or days is None:
            continue
        sql = _sql_table(entry)
        where = [
            sql.c[entry.tenant_column] == tenant_id,
            sql.c[entry.time_column] < now - timedelta(days=days),
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
    """The values the purge leaves in a purged row: no ciphertexts, DEK version or linking
    columns."""
    entry = next(entry for entry in encrypted_tables() if entry.table == table_name)
    names = (*entry.columns, entry.version_column, *entry.linking_columns)
    return {name: None for name in names}


def _count(session: Session, sql: Any, where: list[Any]) -> int:
    return int(session.execute(select(func.count()).select_from(sql).where(*where)).scalar() or 0)


def expired_rows(
    session: Session, tenant_id: str, retention_days: dict[str, int], *, now: datetime | None = None
) -> dict[str, int]:
    """Count rows per registered table that are past retention and still hold personal data
    (ciphertexts or linking columns)."""
    now = now or utcnow()
    return {
        entry.table: _count(session, sql, where)
        for entry, sql, where in _expired_selections(tenant_id, retention_days, now)
    }


def rows_to_delete(
    session: Session, tenant_id: str, retention_days: dict[str, int], *, now: datetime | None = None
) -> dict[str, int]:
    """Count rows per registered table that are older than their delete period (`requests`)."""
    now = now or utcnow()
    return {
        entry.table: _count(session, sql, where)
        for entry, sql, where in _deletable_selections(tenant_id, retention_days, now)
    }


def _act_on_dependents(
    session: Session, tenant_id: str, parent: str, ids: list[Any], action_of: str
) -> dict[str, int]:
    """Delete or unlink the rows that hang on the parent rows `ids`, and return the rows
    deleted per table."""
    done: dict[str, int] = {}
    for dependent in dependent_rows(parent):
        action = getattr(dependent, action_of)
        if action == "keep":
            continue
        sql = table(dependent.table, column("tenant_id"), column(dependent.column))
        where = [sql.c.tenant_id == tenant_id, sql.c[dependent.column].in_(ids)]
        if action == "unlink":
            session.execute(update(sql).where(*where).values({dependent.column: None}))
            continue
        result = session.execute(delete(sql).where(*where))
        done[dependent.table] = done.get(dependent.table, 0) + int(result.rowcount or 0)
    return done


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for name, count in counts.items():
        total[name] = total.get(name, 0) + count


def purge_batch(
    session: Session,
    tenant_id: str,
    retention_days: dict[str, int],
    *,
    now: datetime,
    batch: int | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Purge up to `batch` rows per registered table, and return (cleared, deleted) per table.

    Rows past their delete period go first, with their dependent rows. When none is left, the
    personal data of rows past the personal-data period is cleared. Both counts are zero when
    nothing is left, so callers repeat until then, committing in between.
    """
    batch = batch or PURGE_BATCH
    deleted: dict[str, int] = {}
    for entry, sql, where in _deletable_selections(tenant_id, retention_days, now):
        ids = list(session.scalars(select(sql.c[entry.id_column]).where(*where).limit(batch)))
        if not ids:
            continue
        _add(deleted, _act_on_dependents(session, tenant_id, entry.table, ids, "on_delete"))
        result = session.execute(
            delete(sql).where(
                sql.c[entry.tenant_column] == tenant_id, sql.c[entry.id_column].in_(ids)
            )
        )
        _add(deleted, {entry.table: int(result.rowcount or 0)})
    cleared: dict[str, int] = {}
    if deleted:
        return cleared, deleted
    for entry, sql, where in _expired_selections(tenant_id, retention_days, now):
        ids = list(session.scalars(select(sql.c[entry.id_column]).where(*where).limit(batch)))
        if not ids:
            continue
        _act_on_dependents(session, tenant_id, entry.table, ids, "on_purge")
        result = session.execute(
            update(sql)
            .where(sql.c[entry.tenant_column] == tenant_id, sql.c[entry.id_column].in_(ids))
            .values(cleared_columns(entry.table))
        )
        _add(cleared, {entry.table: int(result.rowcount or 0)})
    return cleared, deleted


def purge_result(cleared: dict[str, int], deleted: dict[str, int]) -> dict[str, int]:
    """Return rows per table as the purge reports them: a table maps to the rows whose
    personal data was cleared, and `deleted:TABLE` to the rows deleted."""
    result = dict(cleared)
    result.update({f"deleted:{name}": count for name, count in deleted.items()})
    return result


def record_purge(
    session: Session,
    tenant_id: str,
    cleared: dict[str, int],
    deleted: dict[str, int],
    *,
    actor: str,
) -> dict[str, int]:
    """Write a `retention.purge` audit entry for the rows cleared and deleted in the session's
    transaction, when it changed anything, and return them as `purge_result` does."""
    cleared_total, deleted_total = sum(cleared.values()), sum(deleted.values())
    if cleared_total or deleted_total:
        audit(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="retention.purge",
            details={
                "rows": cleared_total,
                "tables": sorted(t for t, n in cleared.items() if n),
                "rows_deleted": deleted_total,
                "deleted": [f"{t}:{n}" for t, n in sorted(deleted.items()) if n],
            },
        )
        log.info("retention_purged", tenant_id=tenant_id, rows=cleared_total, deleted=deleted_total)
    return purge_result(cleared, deleted)


ACTION_AUDIT_PURGE = "retention.audit_purge"


def audit_cutoff(retention_days: dict[str, int], now: datetime) -> datetime | None:
    """Return the time before which audit entries are past the `audit` period, or None when
    the tenant sets none."""
    days = retention_days.get("audit")
    return None if days is None else now - timedelta(days=days)


def audit_entries_past_period(session: Session, tenant_id: str, cutoff: datetime) -> int:
    """Count the entries of the tenant's audit chain written before `cutoff`."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.chain == chain_of(tenant_id), AuditEntry.at < cutoff)
        )
        or 0
    )


def purge_audit_batch(
    session: Session, tenant_id: str, cutoff: datetime, *, actor: str, batch: int | None = None
) -> int:
    """Delete up to `batch` of the oldest entries of the tenant's audit chain that are older
    than `cutoff`, and return how many were deleted.

    The cut is at the last entry of the longest run of entries from the chain's start that
    are all older than `cutoff`, so an entry newer than the cutoff is never deleted, even when
    the clock stepped back. That entry is signed as the chain's anchor before it goes, and a
    `retention.audit_purge` entry appended to the same chain records the range deleted and the
    anchor. The chain verifies after every batch: its first kept entry links to the anchor.
    Checkpoints at or below the anchor are deleted with their entries, because they name
    entries that are gone and the anchor's signature replaces them.
    """
    batch = batch or PURGE_BATCH
    chain = chain_of(tenant_id)
    # Serializes with appends and with another purge of the same chain.
    lock_chains(session, tenant_id)
    oldest = session.execute(
        select(AuditEntry.seq, AuditEntry.hash, AuditEntry.at)
        .where(AuditEntry.chain == chain)
        .order_by(AuditEntry.seq)
        .limit(batch)
    ).all()
    expired = []
    for seq, digest, at in oldest:
        if as_utc(at) >= cutoff:
            break
        expired.append((int(seq), digest))
    if not expired:
        return 0

    first_seq = expired[0][0]
    anchor_seq, anchor_hash = expired[-1]
    sign_anchor(session, chain, anchor_seq, anchor_hash, cutoff)
    audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=ACTION_AUDIT_PURGE,
        details={
            "from_seq": first_seq,
            "to_seq": anchor_seq,
            "entries_deleted": len(expired),
            "anchor_seq": anchor_seq,
            "anchor_hash": anchor_hash,
            "cutoff": anchor_cutoff_text(cutoff),
        },
    )
    deleted = session.execute(
        delete(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.seq <= anchor_seq)
    )
    session.execute(
        delete(AuditCheckpoint).where(
            AuditCheckpoint.chain == chain, AuditCheckpoint.seq <= anchor_seq
        )
    )
    log.info("audit_entries_purged", tenant_id=tenant_id, to_seq=anchor_seq, entries=len(expired))
    return int(deleted.rowcount or 0)


def purge_in_batches(
    transaction: Callable[[], AbstractContextManager[Session]],
    tenant_id: str,
    retention_days: dict[str, int],
    *,
    actor: str,
    now: datetime | None = None,
) -> dict[str, int]:
    """Purge everything past retention, one `purge_batch` per `transaction()`, and return the
    rows of all batches as `purge_result` does.

    `transaction()` returns a context manager that yields a session and commits on exit. Each
    batch that changes anything writes its own audit entry in its own transaction, so rows
    cleared or deleted are never committed without their evidence, even when a later batch
    fails. The last transaction finds nothing left and writes nothing.
    Then the audit chain's entries past the `audit` period go the same way, one
    `purge_audit_batch` per transaction, counted as `deleted:audit_log`.
    Idempotent: purged rows hold nothing any more and deleted ones are gone, so neither is
    selected again.
    """
    now = now or utcnow()
    cleared = {
        entry.table: 0
        for entry in encrypted_tables()
        if entry.time_column is not None and entry.retention_class in retention_days
    }
    deleted: dict[str, int] = {}
    while True:
        with transaction() as session:
            batch_cleared, batch_deleted = purge_batch(session, tenant_id, retention_days, now=now)
            if not any(batch_cleared.values()) and not any(batch_deleted.values()):
                break
            record_purge(session, tenant_id, batch_cleared, batch_deleted, actor=actor)
        _add(cleared, batch_cleared)
        _add(deleted, batch_deleted)

    cutoff = audit_cutoff(retention_days, now)
    while cutoff is not None:
        with transaction() as session:
            entries = purge_audit_batch(session, tenant_id, cutoff, actor=actor)
        if not entries:
            break
        _add(deleted, {AuditEntry.__tablename__: entries})
    return purge_result(cleared, deleted)


def purge_expired(
    session: Session,
    tenant_id: str,
    retention_days: dict[str, int],
    *,
    actor: str,
    now: datetime | None = None,
) -> dict[str, int]:
    """Purge everything past retention in the caller's transaction (see `purge_in_batches`)."""
    return purge_in_batches(
        lambda: nullcontext(session), tenant_id, retention_days, actor=actor, now=now
    )
