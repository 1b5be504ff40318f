"""Convert the stored requests of a service that became location-sensitive.

A new request of a location-sensitive service stores its exact point only encrypted, and in
clear only the public point of its open-data rule (`records.sealed_request_columns`).
Requests stored before a manifest marked the service sensitive hold the exact point in clear
in `lat`/`lon` and `h3_cell`. `seal_service_locations` rewrites them to what a new request
stores, in committed batches, each with a `request.locations_sealed` audit entry.

A request needs the conversion while it exposes its point (`exposes_point`): it has an
`h3_cell`, or it has no `location_enc` and its `lat`/`lon` are not the centre of an H3 cell
at a resolution that a location-sensitive service may publish. The privacy report's
`sensitive_locations` control counts the same rows, so a finished conversion passes it, and
running the conversion again changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.orm import Session

from hub.core.db import is_postgres, unit_of_work
from hub.core.tenancy import TenantContext
from hub.requests import geo
from hub.requests.catalog import CatalogService, TenantSnapshot
from hub.requests.models import REQUEST_ENCRYPTED_COLUMNS, ServiceRequest
from hub.requests.records import REQUESTS_TABLE, public_location
from privacy.audit import audit
from privacy.fields import FieldCipher, database_of, reencrypt_values
from privacy.keys import Keyring
from privacy.models import KIND_DEK
from privacy.report import control
from tenants.manifest import SENSITIVE_MAX_H3_RESOLUTION
from tenants.models import Service, Tenant
from tenants.registry import get_tenant, invalidate_cache

log = structlog.get_logger(__name__)

ACTION_LOCATIONS_SEALED = "request.locations_sealed"
# Requests converted per transaction, so a large city's conversion holds its locks briefly.
SEAL_BATCH = 500
SEAL_ACTOR = "worker:location-sealing"

_COLUMNS = ServiceRequest.__table__.c
# The columns read for each candidate request: its location and its ciphertexts, which move
# to the primary DEK with the new `location_enc` when the row is under an older one.
_SELECTED = (
    _COLUMNS.id,
    _COLUMNS.lat,
    _COLUMNS.lon,
    _COLUMNS.h3_cell,
    _COLUMNS.dek_version,
    *(_COLUMNS[name] for name in REQUEST_ENCRYPTED_COLUMNS),
)


def _candidates() -> Any:
    """SQL condition of the requests that may expose their point; `exposes_point` decides."""
    return or_(
        _COLUMNS.h3_cell.is_not(None),
        and_(_COLUMNS.lat.is_not(None), _COLUMNS.location_enc.is_(None)),
    )


def _is_public_point(lat: float, lon: float) -> bool:
    """Return True when the point is the centre of an H3 cell, as `geo.public_point` stores
    it, at a resolution up to the finest that a location-sensitive service may publish."""
    return any(
        geo.public_point(lat, lon, "h3", resolution) == (lat, lon)
        for resolution in range(SENSITIVE_MAX_H3_RESOLUTION + 1)
    )


def exposes_point(row: Any) -> bool:
    """Return True when a stored request of a location-sensitive service exposes its point.

    `row` has the request's `lat`, `lon`, `h3_cell` and `location_enc`. The check does not
    depend on the service's current rule, so a later change of the rule does not turn the
    public points stored under the earlier one into exposed ones. A row with `location_enc`
    was stored sealed and counts as public. NOTE: it keeps its point even when the earlier
    rule was finer than resolution 8 (accepted before the manifest capped it), because
    recomputing it needs the exact point's decryption.
    """
    if row.h3_cell is not None:
        return True
    if row.lat is None or row.lon is None or row.location_enc is not None:
        return False
    return not _is_public_point(row.lat, row.lon)


@dataclass(frozen=True)
class SealingBatch:
    """The outcome of one batch: requests read, converted, and the last id read."""

    read: int
    sealed: int
    last_id: str | None


def _current_snapshot(session: Session, engine: Engine, tenant_id: str) -> TenantSnapshot:
    """Return the tenant's snapshot at the manifest version this transaction reads.

    The registry caches snapshots for a few seconds, and a task queued by onboarding may run
    before this process's cache expires.
    """
    version = session.scalar(select(Tenant.manifest_version).where(Tenant.id == tenant_id))
    snapshot = get_tenant(tenant_id, engine=engine)
    if snapshot is None or snapshot.manifest_version != version:
        invalidate_cache()
        snapshot = get_tenant(tenant_id, engine=engine)
    if snapshot is None:
        raise LookupError(f"tenant {tenant_id!r} not found")
    return snapshot


def _sensitive_service(session: Session, tenant_id: str, service_code: str) -> Service | None:
    """Return the service's catalog row, or None unless it is location-sensitive now."""
    row = session.scalars(
        select(Service).where(Service.tenant_id == tenant_id, Service.code == service_code)
    ).first()
    return row if row is not None and row.location_sensitive else None


def _converted_values(
    tenant: TenantSnapshot, service: CatalogService, cipher: FieldCipher, row: Any
) -> dict[str, Any]:
    """Return the columns that make `row` what a new request of the service stores.

    Only a row that still has personal data (a DEK version) gets `location_enc`, because
    the retention purge cleared the others and keeps no ciphertext for them.
    """
    values: dict[str, Any] = {"h3_cell": None}
    if row.location_enc is not None or row.lat is None or row.lon is None:
        return values
    values["lat"], values["lon"], values["district"] = public_location(
        tenant, service, row.lat, row.lon
    )
    if row.dek_version is not None:
        values["location_enc"] = cipher.encrypt(
            REQUESTS_TABLE, "location_enc", row.id, json.dumps([row.lat, row.lon])
        )
    return values


def _changes(row: Any, values: dict[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in values.items())


def _move_to_primary(
    ring: Keyring, cipher: FieldCipher, rows: list[Any], values: dict[str, dict[str, Any]]
) -> None:
    """Re-encrypt the ciphertexts of `rows` under `cipher`'s DEK into `values`, by row id.

    Each row's ciphertexts are all under its `dek_version`, so a row that gets a new
    `location_enc` under the primary DEK moves its other ciphertexts there too.
    """
    if not rows:
        return
    for name in REQUEST_ENCRYPTED_COLUMNS:
        if name == "location_enc":
            continue
        blobs = reencrypt_values(
            ring, cipher, REQUESTS_TABLE, name, [(row.id, getattr(row, name)) for row in rows]
        )
        for row, blob in zip(rows, blobs, strict=True):
            values[row.id][name] = blob
    for row in rows:
        values[row.id]["dek_version"] = cipher.dek_version


def _seal_rows(
    session: Session,
    tenant: TenantSnapshot,
    service: CatalogService,
    exposing: list[Any],
    *,
    actor: str,
) -> int:
    """Write the converted columns of `exposing` and the batch's audit entry, and return the
    number of requests changed."""
    ring = Keyring.load(session, tenant.id)
    primary = ring.primary_version(KIND_DEK)
    cipher = FieldCipher(
        tenant.id, primary, ring.key(KIND_DEK, primary), database=database_of(session)
    )
    values = {row.id: _converted_values(tenant, service, cipher, row) for row in exposing}
    # A service whose stored manifest predates the resolution cap can publish a finer point
    # than `exposes_point` accepts, and converting such a row again would change nothing.
    exposed = [row for row in exposing if _changes(row, values[row.id])]
    if not exposed:
        return 0

    behind = [
        row for row in exposed if "location_enc" in values[row.id] and row.dek_version != primary
    ]
    _move_to_primary(ring, cipher, behind, values)
    for row in exposed:
        session.execute(
            update(ServiceRequest.__table__)
            .where(_COLUMNS.tenant_id == tenant.id, _COLUMNS.id == row.id)
            .values(values[row.id])
        )
    encrypted = sum(1 for row in exposed if "location_enc" in values[row.id])
    audit(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action=ACTION_LOCATIONS_SEALED,
        subject=f"services:{service.code}",
        details={
            "service_code": service.code,
            "rows": len(exposed),
            "encrypted": encrypted,
            "public_only": len(exposed) - encrypted,
        },
    )
    return len(exposed)


def seal_batch(
    session: Session,
    tenant: TenantSnapshot,
    service: CatalogService,
    *,
    after_id: str,
    actor: str,
    batch: int = SEAL_BATCH,
) -> SealingBatch:
    """Convert the service's requests among the next `batch` candidates after `after_id`.

    Candidates are read in id order, so a caller that passes each batch's `last_id` to the
    next call reads every request once even though some candidates need nothing. Writes one
    `request.locations_sealed` audit entry when the batch converted any request.
    """
    query = (
        select(*_SELECTED)
        .where(
            _COLUMNS.tenant_id == tenant.id,
            _COLUMNS.service_code == service.code,
            _COLUMNS.id > after_id,
            _candidates(),
        )
        .order_by(_COLUMNS.id)
        .limit(batch)
    )
    if is_postgres(session):
        # Waits for a row that another transaction has locked (a status update, a
        # re-encryption batch, a second conversion) instead of skipping it. The run reads each
        # id once, so a skipped row would keep its exact point. PostgreSQL re-checks the
        # condition on the row it waited for, so one that a second conversion sealed meanwhile
        # drops out.
        query = query.with_for_update()
    rows = session.execute(query).all()
    if not rows:
        return SealingBatch(0, 0, None)

    exposing = [row for row in rows if exposes_point(row)]
    sealed = _seal_rows(session, tenant, service, exposing, actor=actor) if exposing else 0
    return SealingBatch(len(rows), sealed, rows[-1].id)


def seal_service_locations(
    tenant_id: str,
    service_code: str,
    *,
    engine: Engine,
    actor: str = SEAL_ACTOR,
    progress: Callable[[int], None] | None = None,
    batch: int = SEAL_BATCH,
) -> int:
    """Convert every stored request of a location-sensitive service, and return the count.

    Each batch commits on its own with its audit entry, so an interrupted run keeps what it
    converted, and the next run converts the rest. A batch that finds the service not
    location-sensitive (any more) stops the run. `progress` gets each batch's count.
    """
    ctx = TenantContext(tenant_id, actor=actor)
    after_id = ""
    total = 0
    while True:
        with unit_of_work(ctx, engine=engine) as session:
            service = _sensitive_service(session, tenant_id, service_code)
            if service is None:
                log.info("location_sealing_skipped", tenant_id=tenant_id, service_code=service_code)
                return total
            tenant = _current_snapshot(session, engine, tenant_id)
            outcome = seal_batch(
                session, tenant, service, after_id=after_id, actor=actor, batch=batch
            )
        total += outcome.sealed
        if progress is not None and outcome.sealed:
            progress(outcome.sealed)
        if outcome.last_id is None:
            break
        after_id = outcome.last_id
    log.info("locations_sealed", tenant_id=tenant_id, service_code=service_code, rows=total)
    return total


def _sensitive_services(session: Session, tenant_id: str) -> list[Service]:
    return list(
        session.scalars(
            select(Service)
            .where(Service.tenant_id == tenant_id, Service.location_sensitive.is_(True))
            .order_by(Service.code)
        )
    )


def _exposing_rows(session: Session, tenant_id: str, service: Service) -> Iterator[Any]:
    query = (
        select(_COLUMNS.lat, _COLUMNS.lon, _COLUMNS.h3_cell, _COLUMNS.location_enc)
        .where(
            _COLUMNS.tenant_id == tenant_id,
            _COLUMNS.service_code == service.code,
            _candidates(),
        )
        .execution_options(yield_per=SEAL_BATCH)
    )
    for row in session.execute(query):
        if exposes_point(row):
            yield row


def exposed_points(session: Session, tenant_id: str) -> dict[str, int]:
    """Count, per location-sensitive service of the tenant, the requests that expose their
    point (see `exposes_point`). Services with none are listed with 0."""
    return {
        service.code: sum(1 for _row in _exposing_rows(session, tenant_id, service))
        for service in _sensitive_services(session, tenant_id)
    }


def sensitive_locations_control(session: Session, tenant_id: str) -> dict[str, Any]:
    """Return the privacy report's control that no request of a location-sensitive service
    stores its exact point in clear (see `exposes_point`)."""
    counts = exposed_points(session, tenant_id)
    return control(
        "sensitive_locations",
        "No request of a location-sensitive service stores its exact point in clear",
        not any(counts.values()),
        {
            "services": sorted(counts),
            "requests_exposing_point": counts,
            "check": "a request exposes its point when it has an h3_cell, or has no "
            "location_enc and lat/lon that are not an H3 cell centre at resolution "
            f"{SENSITIVE_MAX_H3_RESOLUTION} or coarser",
            "fix": "run hub privacy seal-locations --tenant TENANT, after onboarding a "
            f"manifest with h3_resolution {SENSITIVE_MAX_H3_RESOLUTION} or lower for a "
            "service that has a finer one",
        },
    )
