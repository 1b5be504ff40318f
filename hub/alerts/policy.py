"""Per-tenant alert settings from the manifest, and the approval rule they imply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from hub.alerts.cap.model import Point
from hub.core.errors import NotFound
from tenants.geometry import Geometry
from tenants.manifest import AlertsSection
from tenants.models import Tenant

# Channels that send through a provider set in the manifest (`alerts.providers.<block>`): the
# name errors use, the block and the keys it must set. Webhook and Web Push need none, because
# the hub derives their keys.
PROVIDERS = {"email": ("SMTP", "smtp", ("host", "sender")), "sms": ("SMS", "sms", ("url",))}


def provider_missing(channel: str, config: dict[str, Any]) -> str | None:
    """Return why `channel` cannot send with the provider block `config`, or None when it can.

    The reason is stored on each delivery that fails for it, so it fits `last_error`.
    """
    spec = PROVIDERS.get(channel)
    if spec is None:
        return None
    label, block, keys = spec
    if all(config.get(key) for key in keys):
        return None
    return f"{label} provider not configured (alerts.providers.{block})"


@dataclass
class TenantAlertSettings:
    tenant_id: str
    region: str | None
    default_language: str
    # The tenant's IANA time zone, for times shown to its emergency managers.
    timezone: str
    alerts: AlertsSection
    # Geocode zones as (valueName, value) -> rings of CAP (lat, lon) points.
    zones: dict[tuple[str, str], list[list[Point]]]
    # Outer rings of the tenant's service area as CAP (lat, lon) points.
    service_area: list[list[Point]]
    languages: list[str]

    def provider(self, name: str) -> dict[str, Any]:
        """Return the `alerts.providers.<name>` manifest block (an extension key), or {}."""
        providers = getattr(self.alerts, "model_extra", None) or {}
        return dict((providers.get("providers") or {}).get(name) or {})

    def provider_missing(self, channel: str) -> str | None:
        """Return why this tenant cannot send on `channel` (no provider configured), or None."""
        spec = PROVIDERS.get(channel)
        return provider_missing(channel, self.provider(spec[1])) if spec else None

    @property
    def public_base_url(self) -> str | None:
        """Return the hub's public address for links in messages (`alerts.public_base_url`)."""
        extra = getattr(self.alerts, "model_extra", None) or {}
        value = extra.get("public_base_url")
        return str(value) if value else None

    def rate(self, channel: str) -> float:
        return float(self.alerts.rate_limits.get(channel, 50.0))


def load_settings(session: Session, tenant_id: str) -> TenantAlertSettings:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.status != "active":
        raise NotFound(f"tenant {tenant_id} not found; check the id with `hub tenants list`")
    alerts = AlertsSection.model_validate((tenant.manifest or {}).get("alerts") or {})
    zones = {
        (zone.value_name, zone.value): _cap_rings(zone.geometry)
        for zone in alerts.geocode_zones
        if zone.geometry is not None
    }
    area = (tenant.manifest or {}).get("service_area")
    return TenantAlertSettings(
        tenant_id=tenant.id,
        region=tenant.region,
        default_language=tenant.default_language,
        timezone=tenant.timezone,
        alerts=alerts,
        zones=zones,
        service_area=_cap_rings(Geometry.model_validate(area)) if area else [],
        languages=list(tenant.languages or []),
    )


def _cap_rings(geometry: Geometry) -> list[list[Point]]:
    """Return the outer rings of a GeoJSON geometry as CAP (lat, lon) points."""
    return [
        [(float(lat), float(lon)) for lon, lat, *_ in polygon[0]] for polygon in geometry.polygons()
    ]


def approvals_needed(
    settings: TenantAlertSettings, *, status: str, urgency: str | None, severity: str | None
) -> tuple[bool, bool]:
    """Return (needs a second person, review afterwards) for an alert under this policy.

    Actual alerts need an approver other than the composer unless the policy allows a single
    approver for Immediate and Extreme alerts, which are then reviewed afterwards. Exercise,
    Test and System alerts need one approval, which the composer may give.
    """
    policy = settings.alerts.approval
    if status != "Actual" or not policy.second_approver_for_actual:
        return False, False
    urgent = urgency == "Immediate" and severity == "Extreme"
    if urgent and policy.single_approver_for_immediate_extreme:
        return False, True
    return True, False
