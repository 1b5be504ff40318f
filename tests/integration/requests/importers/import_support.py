"""Helpers for the importer tests: tenants onboarded from manifests under fresh ids."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from open311_support import box_polygon
from sqlalchemy import Engine

from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard_manifest
from tenants.registry import get_tenant

EXAMPLES = Path(__file__).resolve().parents[4] / "tenants" / "examples"


def onboard_example(engine: Engine, example: str, **changes: Any):
    """Onboard `tenants/examples/<example>.yaml` under a unique id and domain."""
    data = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text(encoding="utf-8"))
    tenant_id = f"{example[:12]}-{uuid.uuid4().hex[:8]}"
    data["id"] = tenant_id
    data["jurisdiction_id"] = f"{tenant_id}.example.org"
    data.update(changes)
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        onboard_manifest(session, parse_manifest(data))
    tenant = get_tenant(tenant_id, engine=engine)
    assert tenant is not None
    return tenant


# Bounding boxes (min lon, min lat, max lon, max lat) of the test tenants' service areas.
BOXES = {
    "America/New_York:nyc": (-74.27, 40.49, -73.68, 40.92),
    "America/Los_Angeles:sf": (-122.52, 37.70, -122.35, 37.84),
    "America/New_York:boston": (-71.20, 42.22, -70.98, 42.41),
    "America/Chicago:chicago": (-87.95, 41.64, -87.52, 42.03),
}

# A small catalog under the hub's conventional codes, so the formats' built-in category tables
# apply, plus an alias and the `other` fallback.
SERVICES = [
    ("noise", "Noise", "Ruido", []),
    ("parking", "Illegal parking", "Estacionamiento ilegal", []),
    ("streetlight", "Street light out", "Farola apagada", []),
    ("pothole", "Pothole", "Bache", []),
    ("sanitation", "Dirty street", "Calle sucia", []),
    ("graffiti", "Graffiti", "Grafiti", []),
    ("abandoned_vehicle", "Abandoned vehicle", "Vehículo abandonado", []),
    ("needles", "Needle pickup", "Recogida de agujas", ["Needle Pickup"]),
    ("other", "Other", "Otro", []),
]


def city_manifest(city: str, zone: str, *, with_other: bool = True) -> dict[str, Any]:
    """Return a manifest for a test tenant in `city` (a key of BOXES without the zone)."""
    services: list[dict[str, Any]] = [
        {"code": code, "names": {"en": en, "es": es}, "aliases": aliases}
        for code, en, es, aliases in SERVICES
        if with_other or code != "other"
    ]
    services.append(
        {
            "code": "heat",
            "names": {"en": "No heat", "es": "Sin calefacción"},
            "location_sensitive": True,
        }
    )
    tenant_id = f"{city}-{uuid.uuid4().hex[:8]}"
    return {
        "id": tenant_id,
        "jurisdiction_id": f"{tenant_id}.example.org",
        "name": f"Test {city}",
        "timezone": zone,
        "languages": ["en", "es"],
        "service_area": box_polygon(*BOXES[f"{zone}:{city}"]),
        "services": services,
    }


def onboard_data(engine: Engine, data: dict[str, Any]):
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        onboard_manifest(session, parse_manifest(data))
    tenant = get_tenant(data["id"], engine=engine)
    assert tenant is not None
    return tenant
