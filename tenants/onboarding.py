"""Onboarding: create or update a tenant, its catalog and agencies from a manifest.

Onboarding is idempotent. The first run creates the tenant, its keys (through
`privacy.keys.create_tenant_keys`) and an Open311 API key. A later run with the same manifest
changes nothing. A changed manifest updates the catalog and agencies in place, increments
`manifest_version` and stores a `ManifestRevision`. Services and agencies dropped from the
manifest are marked inactive, never deleted, because stored requests and deliveries name them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import structlog
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.core.clock import utcnow
from hub.core.errors import Conflict
from hub.core.outbox import enqueue
from hub.core.tasks import QUEUE_MAINTENANCE
from hub.core.tenancy import ROLE_OPEN311, TenantContext
from privacy.audit import audit
from privacy.keys import create_tenant_keys, get_key_provider
from tenants.agencies import apply_manifest_secret, manifest_secret_replaced
from tenants.keys import create_api_key
from tenants.manifest import Manifest, ServiceSpec
from tenants.manifest_changes import ManifestChanges, manifest_changes
from tenants.metrics import ONBOARDINGS
from tenants.models import Agency, ManifestRevision, Service, Tenant
from tenants.registry import CACHE_TTL_SECONDS, STATUS_ACTIVE, invalidate_cache

log = structlog.get_logger(__name__)

OPEN311_KEY_LABEL = "Open311 key created at onboarding"
# `KeyProvider.derive` purpose of the key behind `manifest_hash`.
MANIFEST_HASH_PURPOSE = "tenants.manifest-hash"
# The task that converts the stored requests of a service that became location-sensitive
# (`hub.requests.location_sealing`). It is named here because onboarding queues it and the
# tenants package cannot import `hub.requests`.
SEAL_LOCATIONS_TASK = "hub.requests.seal_locations"
# Delay of the second conversion that onboarding queues. Other processes serve their cached
# tenant, with the service not yet sensitive, for up to `CACHE_TTL_SECONDS`, and store the
# exact point of a request they accept meanwhile, maybe after the first conversion finished.
# The delay adds room for an intake transaction still in flight. NOTE: a request stored later
# than that still keeps its point; the privacy report's sensitive_locations control counts it.
SEAL_AGAIN_AFTER_SECONDS = 6 * CACHE_TTL_SECONDS


@dataclass(frozen=True)
class OnboardingResult:
    """The result of one onboarding run; `outcome` is created, updated or unchanged."""

    tenant: Tenant
    outcome: str
    version: int
    open311_key: str | None
    # Codes of the agencies whose manifest `webhook_secret` a rotation has replaced since
    # onboarding applied it. Onboarding kept their rotated secrets, and the operator should
    # remove those lines from the manifest.
    replaced_manifest_secrets: tuple[str, ...] = ()
    # The changes of an update; None unless the outcome is `updated`.
    changes: ManifestChanges | None = None
    # Codes of the existing services that this run made location-sensitive. Onboarding
    # queued the conversion of their stored requests (SEAL_LOCATIONS_TASK) for each.
    sealing_services: tuple[str, ...] = ()


@dataclass(frozen=True)
class OnboardingPreview:
    """The planned result of onboarding a manifest, from `preview_onboarding`: the outcome,
    the manifest version it would store, and the changes of an update (None otherwise)."""

    tenant_id: str
    outcome: str
    version: int
    changes: ManifestChanges | None
    replaced_manifest_secrets: tuple[str, ...] = ()


def manifest_hash(manifest: Manifest) -> str:
    """Return the HMAC-SHA256 of the manifest's canonical JSON, used to detect changes.

    The JSON includes the webhook secrets, and the tenants table stores every other field. A
    plain hash would let anyone with a database dump test guesses of a secret, so the key is a
    hub-wide secret derived from the root key. `hub privacy rotate-root --new-derived-keys`
    changes it, after which the next onboarding of each manifest counts as a change once.
    """
    data = manifest.model_dump(mode="json")
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = get_key_provider().derive(MANIFEST_HASH_PURPOSE)
    return hmac.new(key, encoded.encode("utf-8"), hashlib.sha256).hexdigest()


def _check_ownership(session: Session, manifest: Manifest) -> Tenant | None:
    """Return the existing tenant for this manifest, or None; raise Conflict when the id or
    the jurisdiction belongs to a different registration."""
    claimed = session.scalars(
        select(Tenant).where(Tenant.jurisdiction_id == manifest.jurisdiction_id)
    ).first()
    if claimed is not None and claimed.id != manifest.id:
        raise Conflict(
            f"jurisdiction_id {manifest.jurisdiction_id!r} already belongs to tenant "
            f"{claimed.id!r}; a jurisdiction can have only one tenant"
        )
    tenant = session.get(Tenant, manifest.id)
    if tenant is None:
        return None
    if tenant.jurisdiction_id != manifest.jurisdiction_id:
        raise Conflict(
            f"tenant {tenant.id!r} is registered for jurisdiction_id {tenant.jurisdiction_id!r}, "
            f"not {manifest.jurisdiction_id!r}; the jurisdiction of a tenant cannot change"
        )
    if tenant.status != STATUS_ACTIVE:
        raise Conflict(f"tenant {tenant.id!r} is {tenant.status}; it cannot be onboarded again")
    return tenant


def _apply_tenant_fields(tenant: Tenant, manifest: Manifest, digest: str) -> None:
    tenant.name = manifest.name
    tenant.timezone = manifest.timezone
    tenant.languages = list(manifest.languages)
    tenant.default_language = manifest.default_language
    tenant.region = manifest.region
    tenant.manifest = manifest.stored_form()
    tenant.manifest_hash = digest
    tenant.updated_at = utcnow()


def _service_columns(manifest: Manifest, spec: ServiceSpec) -> dict[str, object]:
    return {
        "names": dict(spec.names),
        "descriptions": dict(spec.descriptions),
        "type": spec.type,
        "keywords": list(spec.keywords),
        "group": spec.group,
        "attributes": [a.model_dump(mode="json") for a in spec.attributes],
        "agency_code": manifest.agency_for(spec.code),
        "sla_hours": spec.sla_hours,
        "location_sensitive": spec.location_sensitive,
        "open_data_location": spec.open_data.location,
        "h3_resolution": spec.open_data.h3_resolution,
        "active": spec.active,
    }


def _sync_services(session: Session, tenant_id: str, manifest: Manifest) -> list[str]:
    """Create or update the tenant's services from the manifest, and return the codes of the
    existing ones that became location-sensitive."""
    existing = {
        row.code: row
        for row in session.scalars(select(Service).where(Service.tenant_id == tenant_id))
    }
    became_sensitive = []
    for spec in manifest.services:
        columns = _service_columns(manifest, spec)
        row = existing.pop(spec.code, None)
        if row is None:
            session.add(Service(tenant_id=tenant_id, code=spec.code, **columns))
            continue
        if spec.location_sensitive and not row.location_sensitive:
            became_sensitive.append(spec.code)
        for name, value in columns.items():
            if getattr(row, name) != value:
                setattr(row, name, value)
    for row in existing.values():
        row.active = False
    return became_sensitive


def _queue_location_sealing(session: Session, tenant_id: str, codes: list[str]) -> None:
    """Queue the conversion of the stored requests of each service in `codes`.

    The task runs after the commit, so it reads the new catalog. Requests stored before the
    service became location-sensitive hold their exact point in clear, and the task encrypts
    it and keeps only the public point, as for a new request. A second run follows after
    `SEAL_AGAIN_AFTER_SECONDS` for the requests that other processes stored meanwhile.
    """
    for code in codes:
        for delay in (0, SEAL_AGAIN_AFTER_SECONDS):
            enqueue(
                session,
                SEAL_LOCATIONS_TASK,
                queue=QUEUE_MAINTENANCE,
                tenant_id=tenant_id,
                delay_seconds=delay,
                service_code=code,
            )
        log.info("location_sealing_queued", tenant_id=tenant_id, service_code=code)


def _tenant_agencies(session: Session, tenant_id: str) -> dict[str, Agency]:
    rows = session.scalars(select(Agency).where(Agency.tenant_id == tenant_id))
    return {row.code: row for row in rows}


def _sync_agencies(session: Session, tenant_id: str, manifest: Manifest) -> list[str]:
    """Create or update the tenant's agencies from the manifest; return the codes of those
    whose manifest secret was left out because a rotation replaced it."""
    existing = _tenant_agencies(session, tenant_id)
    replaced = []
    for spec in manifest.agencies:
        row = existing.pop(spec.code, None)
        if row is None:
            row = Agency(tenant_id=tenant_id, code=spec.code)
            session.add(row)
        row.name = spec.name
        row.webhook_url = spec.webhook_url
        row.max_deliveries_per_minute = spec.max_deliveries_per_minute
        row.active = True
        if not apply_manifest_secret(session, row, spec.webhook_secret):
            replaced.append(spec.code)
    for row in existing.values():
        row.active = False
    return replaced


def _replaced_manifest_secrets(session: Session, tenant_id: str, manifest: Manifest) -> list[str]:
    """Return the codes of the agencies whose manifest secret a rotation has replaced since
    onboarding applied it, changing nothing."""
    existing = _tenant_agencies(session, tenant_id)
    return [
        spec.code
        for spec in manifest.agencies
        if spec.webhook_secret is not None
        and spec.code in existing
        and manifest_secret_replaced(session, existing[spec.code], spec.webhook_secret)
    ]


def _warn_replaced_secrets(tenant_id: str, codes: list[str]) -> None:
    for code in codes:
        log.warning(
            "manifest_webhook_secret_replaced",
            tenant_id=tenant_id,
            agency=code,
            fix="onboarding kept the rotated secret, so remove the agency's webhook_secret line "
            "from the manifest",
        )


def _record_revision(session: Session, tenant: Tenant, actor: str) -> None:
    session.add(
        ManifestRevision(
            tenant_id=tenant.id,
            version=tenant.manifest_version,
            manifest_hash=tenant.manifest_hash,
            manifest=tenant.manifest,
            actor=actor,
        )
    )


def preview_onboarding(session: Session, manifest: Manifest) -> OnboardingPreview:
    """Return what `onboard_manifest` would do with `manifest`, changing nothing.

    Raises Conflict in the same cases as `onboard_manifest`.
    """
    tenant = _check_ownership(session, manifest)
    if tenant is None:
        return OnboardingPreview(manifest.id, "created", 1, None)
    replaced = tuple(_replaced_manifest_secrets(session, tenant.id, manifest))
    if tenant.manifest_hash == manifest_hash(manifest):
        return OnboardingPreview(tenant.id, "unchanged", tenant.manifest_version, None, replaced)
    changes = manifest_changes(tenant.manifest, manifest)
    return OnboardingPreview(tenant.id, "updated", tenant.manifest_version + 1, changes, replaced)


def onboard_manifest(
    session: Session, manifest: Manifest, *, actor: str = "cli:operator"
) -> OnboardingResult:
    """Create or update the tenant described by `manifest` inside the caller's transaction.

    The session must be a system session (`SystemContext`), because the tenant does not exist
    yet when it is created. Raises Conflict when another tenant has the jurisdiction.
    """
    digest = manifest_hash(manifest)
    tenant = _check_ownership(session, manifest)

    if tenant is not None and tenant.manifest_hash == digest:
        replaced = _replaced_manifest_secrets(session, tenant.id, manifest)
        _warn_replaced_secrets(tenant.id, replaced)
        ONBOARDINGS.labels(outcome="unchanged").inc()
        log.info("tenant_onboard_unchanged", tenant_id=tenant.id, version=tenant.manifest_version)
        return OnboardingResult(tenant, "unchanged", tenant.manifest_version, None, tuple(replaced))

    created = tenant is None
    changes = None
    if tenant is None:
        tenant = Tenant(
            id=manifest.id,
            jurisdiction_id=manifest.jurisdiction_id,
            status=STATUS_ACTIVE,
            manifest_version=1,
            created_at=utcnow(),
        )
        _apply_tenant_fields(tenant, manifest, digest)
        session.add(tenant)
        try:
            session.flush()
        except IntegrityError:
            # Another onboarding created the same id or jurisdiction since the check above.
            raise Conflict(
                f"tenant {manifest.id!r} or jurisdiction_id {manifest.jurisdiction_id!r} was "
                "registered by a concurrent onboarding; run the onboarding again"
            ) from None
        create_tenant_keys(session, tenant.id)
    else:
        changes = manifest_changes(tenant.manifest, manifest)
        tenant.manifest_version += 1
        _apply_tenant_fields(tenant, manifest, digest)

    replaced = _sync_agencies(session, tenant.id, manifest)
    _warn_replaced_secrets(tenant.id, replaced)
    sealing = _sync_services(session, tenant.id, manifest)
    _queue_location_sealing(session, tenant.id, sealing)
    _record_revision(session, tenant, actor)
    session.flush()

    raw_key = None
    ctx = TenantContext(tenant.id, actor=actor)
    if created:
        _, raw_key = create_api_key(session, ctx, roles=[ROLE_OPEN311], label=OPEN311_KEY_LABEL)

    outcome = "created" if created else "updated"
    audit(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action=f"tenant.onboard.{outcome}",
        subject=f"tenants:{tenant.id}",
        details={
            "version": tenant.manifest_version,
            "manifest_hash": digest,
            "services": len(manifest.services),
            "agencies": len(manifest.agencies),
            "sealing_services": sealing,
        },
    )
    # A lookup between now and the commit could cache the old state, so clear again after it.
    invalidate_cache()
    event.listen(session, "after_commit", lambda _session: invalidate_cache(), once=True)
    ONBOARDINGS.labels(outcome=outcome).inc()
    log.info(
        "tenant_onboarded", tenant_id=tenant.id, outcome=outcome, version=tenant.manifest_version
    )
    return OnboardingResult(
        tenant,
        outcome,
        tenant.manifest_version,
        raw_key,
        tuple(replaced),
        changes,
        sealing_services=tuple(sealing),
    )


def onboard(
    session: Session, manifest: Manifest, *, actor: str = "cli:operator"
) -> tuple[Tenant, str | None]:
    """Onboard `manifest` and return the tenant with its new Open311 key.

    The key is None unless this run created the tenant, because only its hash is stored.
    """
    result = onboard_manifest(session, manifest, actor=actor)
    return result.tenant, result.open311_key
