"""Fixtures for the Open311 and request tests: two onboarded tenants, their keys, an API client.

Test modules import the fixtures they use from here (`from open311_support import ...`), which
pytest registers like fixtures defined in the module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from defusedxml.ElementTree import fromstring
from fastapi.testclient import TestClient

from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import ROLE_AGENCY, ROLE_AUDITOR, ROLE_STAFF, SystemContext, TenantContext
from tenants.keys import create_api_key, forget_cached_keys
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard
from tenants.registry import invalidate_cache

# A square service area around (40.0, -75.0), about 11 km on a side.
CENTRE = (40.0, -75.0)
INSIDE = (40.01, -75.01)
OUTSIDE = (41.0, -75.0)


def box_polygon(min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> dict:
    """Return a GeoJSON Polygon of the box between two corners, in longitude/latitude."""
    ring = [
        [min_lon, min_lat],
        [max_lon, min_lat],
        [max_lon, max_lat],
        [min_lon, max_lat],
        [min_lon, min_lat],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def manifest_data(tenant_id: str, jurisdiction: str, *, region: str | None = "test-region") -> dict:
    lat, lon = CENTRE
    return {
        "id": tenant_id,
        "jurisdiction_id": jurisdiction,
        "name": f"Test city {tenant_id}",
        "timezone": "America/New_York",
        "languages": ["en", "es"],
        "region": region,
        "service_area": box_polygon(lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05),
        "agencies": [
            {"code": "roads", "name": "Roads department"},
            {"code": "parks", "name": "Parks department"},
        ],
        "routing": {"default": "roads"},
        "services": [
            {
                "code": "pothole",
                "names": {"en": "Pothole", "es": "Bache"},
                "descriptions": {"en": "A hole in the road", "es": "Un hoyo en la calle"},
                "group": "streets",
                "keywords": ["pothole", "road"],
                "agency": "roads",
                "sla_hours": 8,
                "sla_clock": "continuous",
                "attributes": [
                    {
                        "code": "depth",
                        "datatype": "number",
                        "required": True,
                        "order": 1,
                        "descriptions": {"en": "Depth in cm", "es": "Profundidad en cm"},
                    },
                    {
                        "code": "surface",
                        "datatype": "singlevaluelist",
                        "order": 2,
                        "descriptions": {"en": "Surface", "es": "Superficie"},
                        "values": [
                            {"key": "asphalt", "names": {"en": "Asphalt", "es": "Asfalto"}},
                            {"key": "concrete", "names": {"en": "Concrete", "es": "Concreto"}},
                        ],
                    },
                    {
                        "code": "hazards",
                        "datatype": "multivaluelist",
                        "order": 3,
                        "descriptions": {"en": "Hazards", "es": "Peligros"},
                        "values": [
                            {"key": "water", "names": {"en": "Water", "es": "Agua"}},
                            {"key": "traffic", "names": {"en": "Traffic", "es": "Tráfico"}},
                        ],
                    },
                    {
                        "code": "seen_at",
                        "datatype": "datetime",
                        "order": 4,
                        "descriptions": {"en": "When seen", "es": "Cuándo"},
                    },
                    {
                        "code": "notes",
                        "datatype": "text",
                        "order": 5,
                        "descriptions": {"en": "Notes", "es": "Notas"},
                    },
                    {
                        "code": "info",
                        "datatype": "string",
                        "variable": False,
                        "order": 6,
                        "descriptions": {"en": "Call 911 for emergencies", "es": "Llame al 911"},
                    },
                ],
            },
            {
                "code": "graffiti",
                "names": {"en": "Graffiti", "es": "Grafiti"},
                "agency": "parks",
                "location_sensitive": True,
                "open_data": {"location": "h3", "h3_resolution": 7},
            },
            {
                "code": "encampment",
                "names": {"en": "Encampment", "es": "Campamento"},
                "location_sensitive": True,
                "open_data": {"location": "withheld"},
            },
        ],
        "profile": {"group_names": {"streets": {"en": "Streets", "es": "Calles"}}},
    }


def northeast_manifest(
    tenant_id: str, *, region: str | None = "northeast", alerts: dict | None = None
) -> dict:
    """Return a valid manifest whose service area covers New York, Boston and Philadelphia,
    for tests that store a tenant row themselves and place residents in those cities."""
    manifest = manifest_data(tenant_id, f"{tenant_id}.example.org", region=region)
    manifest["service_area"] = box_polygon(-76.0, 39.0, -70.0, 43.0)
    manifest["alerts"] = alerts or {}
    return manifest


@dataclass
class TenantKeys:
    id: str
    jurisdiction: str
    open311: str
    # Agency keys: `agency` acts for roads (potholes), `parks` for parks (graffiti).
    agency: str
    parks: str
    staff: str
    auditor: str


def onboard_tenant(engine, tenant_id: str, *, region: str | None = "test-region") -> TenantKeys:
    jurisdiction = f"{tenant_id}.example.org"
    manifest = parse_manifest(manifest_data(tenant_id, jurisdiction, region=region))
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        _, open311_key = onboard(session, manifest, actor="test")
        ctx = TenantContext(tenant_id, actor="test")
        keys = {
            role: create_api_key(session, ctx, roles=[role], label=f"test {role}")[1]
            for role in (ROLE_STAFF, ROLE_AUDITOR)
        }
        # Potholes go to roads and graffiti to parks, so each agency key updates one of them.
        for agency in ("roads", "parks"):
            keys[agency] = create_api_key(
                session, ctx, roles=[ROLE_AGENCY], label=f"test {agency}", agencies=[agency]
            )[1]
    return TenantKeys(
        id=tenant_id,
        jurisdiction=jurisdiction,
        open311=open311_key,
        agency=keys["roads"],
        parks=keys["parks"],
        staff=keys[ROLE_STAFF],
        auditor=keys[ROLE_AUDITOR],
    )


@pytest.fixture
def hub_db(db_url: str) -> Iterator[str]:
    """Point the hub's settings at the test database for the duration of one test."""
    saved = os.environ.get("HUB_DATABASE_URL")
    os.environ["HUB_DATABASE_URL"] = db_url
    reset_settings_cache()
    dispose_engines()
    invalidate_cache()
    forget_cached_keys()
    yield db_url
    if saved is None:
        os.environ.pop("HUB_DATABASE_URL", None)
    else:
        os.environ["HUB_DATABASE_URL"] = saved
    reset_settings_cache()
    dispose_engines()
    invalidate_cache()
    forget_cached_keys()


@pytest.fixture
def tenants_ab(hub_db: str) -> tuple[TenantKeys, TenantKeys]:
    """Two tenants in one region, with unique ids so tests can share a PostgreSQL database."""
    suffix = uuid.uuid4().hex[:8]
    engine = get_engine(hub_db)
    # A region of their own keeps other tests' requests out of the regional duplicate search.
    region = f"region-{suffix}"
    return (
        onboard_tenant(engine, f"alpha-{suffix}", region=region),
        onboard_tenant(engine, f"beta-{suffix}", region=region),
    )


@pytest.fixture
def client(hub_db: str) -> Iterator[TestClient]:
    from hub.api.app import create_app

    with TestClient(create_app(start_relay=False)) as test_client:
        yield test_client


def pothole_form(tenant: TenantKeys, **overrides: str) -> dict[str, str]:
    lat, lon = INSIDE
    form = {
        "jurisdiction_id": tenant.jurisdiction,
        "api_key": tenant.open311,
        "service_code": "pothole",
        "lat": str(lat),
        "long": str(lon),
        "description": "Deep pothole in the right lane",
        "email": "resident@example.com",
        "phone": "+1 215 555 0100",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "attribute[depth]": "12",
    }
    form.update(overrides)
    return {key: value for key, value in form.items() if value is not None}


def error_entries(response, fmt: str) -> list[tuple[int, str]]:
    """Return the (code, description) of each entry of an Open311 error list."""
    if fmt == "json":
        return [(error["code"], error["description"]) for error in response.json()]
    root = fromstring(response.content)
    assert root.tag == "errors"
    return [
        (int(error.findtext("code")), error.findtext("description"))
        for error in root.findall("error")
    ]
