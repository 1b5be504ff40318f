"""Key rotation: DEK (new primary, then re-encryption), KEK and root (re-wrap only), listing.

A new DEK version becomes primary at once, so new writes use it while the re-encryption task
moves existing rows over in batches. Each batch commits on its own and selects only rows still
under an older version, so a killed run resumes where it stopped. A DEK version is retired only
when no registered row uses it.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import structlog
from sqlalchemy import Engine, bindparam, column, func, select, table, update
from sqlalchemy.orm import Session

from hub.core.clock import as_utc, utcnow
from hub.core.db import get_engine, unit_of_work
from hub.core.errors import ConfigurationError
from hub.core.settings import Settings, get_settings
from hub.core.tenancy import SystemContext, TenantContext
from privacy.audit import audit, chain_of, checkpoint_chain, public_key_hex
from privacy.fields import FieldCipher, database_of, reencrypt_values
from privacy.keys import (
    KEY_BYTES,
    Keyring,
    KeyUnwrapFailed,
    LocalKeyProvider,
    aes_wrap,
    clear_key_cache,
    data_key_associated_data,
    derivation_path,
    forget_key_provider,
    get_key_provider,
    kek_associated_data,
    lock_all_tenant_keys,
    lock_tenant_keys,
    new_data_key_row,
    new_kek_row,
    write_root_key,
)
from privacy.metrics import REENCRYPTED_ROWS, REENCRYPTION_SECONDS
from privacy.models import KIND_DEK, KIND_KEK, KeyUsage, TenantKey
from privacy.registry import EncryptedTable, encrypted_tables

log = structlog.get_logger(__name__)

REENCRYPT_BATCH_ROWS = 1000
Progress = Callable[[int], None]


def _sql_table(entry: EncryptedTable) -> Any:
    names = {entry.id_column, entry.version_column, entry.tenant_column, *entry.columns}
    names.update(entry.bound_columns)
    if entry.time_column:
        names.add(entry.time_column)
    return table(entry.table, *(column(name) for name in sorted(names)))


def rows_per_version(session: Session, tenant_id: str) -> dict[int, int]:
    """Count registered rows of the tenant per DEK version, over every registered table."""
    counts: dict[int, int] = {}
    for entry in encrypted_tables():
        sql = _sql_table(entry)
        version = sql.c[entry.version_column]
        result = session.execute(
            select(version, func.count())
            .where(sql.c[entry.tenant_column] == tenant_id, version.is_not(None))
            .group_by(version)
        )
        for dek_version, count in result:
            counts[int(dek_version)] = counts.get(int(dek_version), 0) + int(count)
    return counts


def rotate_dek(session: Session, tenant_id: str, *, actor: str) -> int:
    """Create a new DEK version, primary from now on, and return it.

    The caller enqueues the re-encryption task (`privacy.tasks.enqueue_reencryption`).
    """
    lock_tenant_keys(session, tenant_id)
    ring = Keyring.load(session, tenant_id)
    version = max(ring.versions(KIND_DEK), default=0) + 1
    session.add(new_data_key_row(ring, KIND_DEK, version))
    session.flush()
    audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="keys.rotate_dek",
        details={"dek_version": version},
    )
    log.info("dek_rotated", tenant_id=tenant_id, dek_version=version)
    return version


def _execute_many(session: Session, statement: Any, params: list[dict[str, Any]]) -> None:
    """Run `statement` once per parameter set through the driver's executemany.

    The statement is compiled once, and the parameter sets go to the driver as they are. That
    skips SQLAlchemy's per-row parameter processing, which is safe here because every value is
    a str, int or bytes that both drivers (sqlite3, psycopg) take without conversion.
    """
    connection = session.connection()
    compiled = statement.compile(dialect=connection.dialect)
    constants = compiled.params
    rows: list[Any] = [{**constants, **p} for p in params]
    if compiled.positional:
        in_order = itemgetter(*(compiled.positiontup or []))
        rows = [in_order(row) for row in rows]
    connection.exec_driver_sql(compiled.string, rows)


def reencrypt_batch(
    session: Session, tenant_id: str, entry: EncryptedTable, *, batch_size: int
) -> int:
    """Re-encrypt up to `batch_size` rows of `entry` still under an older DEK; return the count.

    The new ciphertexts are written with one executemany UPDATE keyed by primary key.
    """
    ring = Keyring.load(session, tenant_id)
    target = ring.primary_version(KIND_DEK)
    cipher = FieldCipher(
        tenant_id, target, ring.key(KIND_DEK, target), database=database_of(session)
    )
    sql = _sql_table(entry)
    id_col = sql.c[entry.id_column]
    version_col = sql.c[entry.version_column]
    selected = dict.fromkeys((entry.id_column, *entry.bound_columns, *entry.columns))
    query = (
        select(*(sql.c[name] for name in selected))
        .where(
            sql.c[entry.tenant_column] == tenant_id,
            version_col.is_not(None),
            version_col != target,
        )
        .order_by(id_col)
        .limit(batch_size)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Several workers may share the backlog; each skips rows another one holds.
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).mappings().all()
    if not rows:
        return 0

    started = time.perf_counter()
    bound_ids = [entry.bound_row_id(row) for row in rows]
    params: list[dict[str, Any]] = [
        {"row_key": row[entry.id_column], "new_version": target} for row in rows
    ]
    for name in entry.columns:
        stored = [(row_id, row[name]) for row_id, row in zip(bound_ids, rows, strict=True)]
        blobs = reencrypt_values(ring, cipher, entry.table, name, stored)
        for values, blob in zip(params, blobs, strict=True):
            values[f"new_{name}"] = blob
    statement = (
        update(sql)
        .where(id_col == bindparam("row_key"), sql.c[entry.tenant_column] == tenant_id)
        .values(
            {
                entry.version_column: bindparam("new_version"),
                **{name: bindparam(f"new_{name}") for name in entry.columns},
            }
        )
    )
    _execute_many(session, statement, params)
    REENCRYPTED_ROWS.labels(table=entry.table).inc(len(rows))
    REENCRYPTION_SECONDS.observe(time.perf_counter() - started)
    return len(rows)


def reencrypt_tenant(
    tenant_id: str,
    *,
    engine: Engine | None = None,
    batch_size: int = REENCRYPT_BATCH_ROWS,
    progress: Progress | None = None,
    actor: str = "system:reencrypt",
) -> dict[str, int]:
    """Move every registered row of the tenant to the primary DEK, one committed batch at a time.

    Returns rows re-encrypted per table. Running it again when nothing is left changes nothing.
    `progress` is called with the row count of each batch.
    """
    engine = engine or get_engine()
    ctx = TenantContext(tenant_id, actor=actor)
    done: dict[str, int] = {}
    for entry in encrypted_tables():
        done[entry.table] = 0
        while True:
            with unit_of_work(ctx, engine=engine) as session:
                count = reencrypt_batch(session, tenant_id, entry, batch_size=batch_size)
            if count == 0:
                break
            done[entry.table] += count
            if progress is not None:
                progress(count)
            log.info("reencrypt_batch_done", tenant_id=tenant_id, table=entry.table, rows=count)

    total = sum(done.values())
    with unit_of_work(ctx, engine=engine) as session:
        retired = retire_unused_deks(session, tenant_id, actor=actor)
        if total or retired:
            audit(
                session,
                tenant_id=tenant_id,
                actor=actor,
                action="keys.reencrypt",
                details={"rows": total, "retired_versions": retired},
            )
    return done


def remaining_rows(session: Session, tenant_id: str) -> int:
    """Count registered rows not yet under the tenant's primary DEK."""
    primary = Keyring.load(session, tenant_id).primary_version(KIND_DEK)
    return sum(
        count
        for version, count in rows_per_version(session, tenant_id).items()
        if version != primary
    )


def retire_unused_deks(session: Session, tenant_id: str, *, actor: str) -> list[int]:
    """Retire every non-primary DEK version that no registered row uses; return those versions."""
    ring = Keyring.load(session, tenant_id)
    primary = ring.primary_version(KIND_DEK)
    in_use = rows_per_version(session, tenant_id)
    retired = []
    for version in ring.versions(KIND_DEK):
        row = ring.rows[(KIND_DEK, version)]
        if version == primary or row.retired_at is not None or in_use.get(version, 0) > 0:
            continue
        row.retired_at = utcnow()
        retired.append(version)
    if retired:
        session.flush()
        audit(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="keys.retire_dek",
            details={"dek_versions": retired},
        )
    return retired


def rotate_kek(session: Session, tenant_id: str, *, actor: str) -> int:
    """Create a new KEK version, re-wrap every data key under it and delete the old KEKs."""
    lock_tenant_keys(session, tenant_id)
    ring = Keyring.load(session, tenant_id)
    provider = get_key_provider()
    old_versions = ring.versions(KIND_KEK)
    new_version = max(old_versions) + 1
    kek_row, new_kek = new_kek_row(provider, tenant_id, new_version)
    session.add(kek_row)

    now = utcnow()
    rewrapped = 0
    for (kind, version), row in ring.rows.items():
        if kind == KIND_KEK:
            continue
        key = ring.key(kind, version)
        row.wrapped = aes_wrap(
            new_kek, key, data_key_associated_data(kind, tenant_id, version, new_version)
        )
        row.wrapped_by = str(new_version)
        row.rewrapped_at = now
        rewrapped += 1

    for version in old_versions:
        session.delete(ring.rows[(KIND_KEK, version)])
    session.flush()
    clear_key_cache(tenant_id)
    audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="keys.rotate_kek",
        details={"kek_version": new_version, "rewrapped_keys": rewrapped},
    )
    log.info("kek_rotated", tenant_id=tenant_id, kek_version=new_version)
    return new_version


def rotate_root(
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
    actor: str,
    new_derived_keys: bool = False,
) -> dict[str, Any]:
    """Replace the local root key file and re-wrap every tenant's KEK under the new key.

    The old key is kept as `<file>.<key id>.previous`, so a crash part-way leaves every KEK
    readable and a repeated run finishes the job. The file is not deleted here: another
    database configured with the same key file (a staging copy, a restored backup) may still
    need it. The result names it and any tenant whose KEK failed to unwrap, and the
    operator deletes the file once nothing needs it.

    The derivation key moves to the new root key unchanged, so the secrets derived from it
    stay the same. With `new_derived_keys` it is replaced by a random one, for a root key that
    may have leaked: every derived secret changes (see docs/privacy.md).
    """
    settings = settings or get_settings()
    path = settings.effective_root_key_file
    old = _local_provider(settings)
    # Read now: the provider follows the key file, so its key id changes with the file.
    old_key_id = old.key_id
    old_public_key = public_key_hex()
    derivation = secrets.token_bytes(KEY_BYTES) if new_derived_keys else old.derivation_key
    # Stored under the old key first: after a crash before the new key file exists, the
    # derivation key stays readable with the old key, which the next run keeps as previous.
    old.store_derivation_key(derivation)
    previous = path.with_name(f"{path.name}.{old_key_id}.previous")
    os.replace(path, previous)
    write_root_key(path, secrets.token_bytes(KEY_BYTES))
    forget_key_provider()
    provider = _local_provider(settings)
    provider.store_derivation_key(derivation)

    engine = engine or get_engine(settings=settings)
    with unit_of_work(SystemContext("root key rotation", actor=actor), engine=engine) as session:
        lock_all_tenant_keys(session)
        rows = session.scalars(select(TenantKey).where(TenantKey.kind == KIND_KEK)).all()
        now = utcnow()
        failed = []
        for row in rows:
            if row.wrapped_by == provider.key_id:
                continue
            associated = kek_associated_data(row.tenant_id, row.version)
            try:
                kek = provider.unwrap(row.wrapped, associated, key_id=row.wrapped_by)
            except KeyUnwrapFailed as exc:
                # One damaged KEK must not stop the others; it stays under its old root key.
                log.error("kek_rewrap_failed", tenant_id=row.tenant_id, error=exc.message)
                failed.append(row.tenant_id)
                continue
            row.wrapped_by, row.wrapped = provider.wrap(kek, associated)
            row.rewrapped_at = now
        session.flush()
        audit(
            session,
            tenant_id=None,
            actor=actor,
            action="keys.rotate_root",
            details={
                "old_root_key_id": old_key_id,
                "new_root_key_id": provider.key_id,
                "keks": len(rows),
                "failed_tenants": failed,
                "new_derived_keys": new_derived_keys,
                # The checkpoint signing key follows the derived keys. Both public keys go
                # on record, so the privacy report trusts checkpoints signed before this.
                "audit_public_key": public_key_hex(),
                "previous_audit_public_key": old_public_key,
            },
        )
        # `hub_signing_keys` trusts the keys named above only under a signature by the
        # current key that covers this entry.
        checkpoint_chain(session, chain_of(None))
    log.info("root_key_rotated", old=old_key_id, new=provider.key_id, keks=len(rows))
    return {
        "old_root_key_id": old_key_id,
        "new_root_key_id": provider.key_id,
        "keks": len(rows),
        "failed_tenants": failed,
        "previous_key_file": str(previous),
        "derivation_key_file": str(derivation_path(path)),
        "new_derived_keys": new_derived_keys,
        "audit_public_key": public_key_hex(),
        "previous_audit_public_key": old_public_key,
    }


def _local_provider(settings: Settings) -> LocalKeyProvider:
    provider = get_key_provider(settings)
    if not isinstance(provider, LocalKeyProvider):
        raise ConfigurationError("rotate-root replaces a local root key file; this hub has none")
    return provider


def _age_days(created: datetime, now: datetime) -> float:
    return round((now - as_utc(created)).total_seconds() / 86400, 2)


def list_keys(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """Describe every key version of the tenant: age, wrapping, encryptions and rows (DEKs)."""
    ring = Keyring.load(session, tenant_id)
    now = datetime.now(UTC)
    rows_by_version = rows_per_version(session, tenant_id)
    encryptions = dict(
        session.execute(
            select(KeyUsage.dek_version, func.sum(KeyUsage.encryptions))
            .where(KeyUsage.tenant_id == tenant_id)
            .group_by(KeyUsage.dek_version)
        ).all()
    )
    primaries = {}
    listing = []
    for (kind, version), row in sorted(ring.rows.items()):
        if kind not in primaries:
            primaries[kind] = ring.primary_version(kind)
        item: dict[str, Any] = {
            "kind": kind,
            "version": version,
            "primary": version == primaries[kind],
            "created_at": as_utc(row.created_at),
            "age_days": _age_days(row.created_at, now),
            "wrapped_by": row.wrapped_by,
            "rewrapped_at": as_utc(row.rewrapped_at) if row.rewrapped_at else None,
            "retired_at": as_utc(row.retired_at) if row.retired_at else None,
        }
        if kind == KIND_DEK:
            item["encryptions"] = int(encryptions.get(version) or 0)
            item["rows"] = rows_by_version.get(version, 0)
        listing.append(item)
    return listing
