"""Generated service requests for the demo: a day's mix of services, hours, places and languages.

The mix is made up but shaped like real 311 traffic. Street, trash and parking reports dominate,
and arrivals peak in the late morning and fall off overnight. Points fall inside the tenant's
service area, many around a few hot spots, and about a third of the descriptions are in Spanish
where the tenant offers it.
Contact details are fictional (555-01xx numbers, example.org addresses).
"""

from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from tenants.manifest import Attribute, Manifest, ServiceSpec

# Relative arrivals per local hour, 00 to 23: quiet overnight, a peak from 09 to 12.
HOURLY_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 7, 9, 10, 10, 9, 8, 8, 7, 7, 6, 5, 4, 3, 3, 2, 1)
# Relative frequency of a service by a word in its group or keywords; unmatched services get 1.
_GROUP_WEIGHTS = {
    "street": 5,
    "sidewalk": 4,
    "trash": 5,
    "sanitation": 5,
    "parking": 4,
    "vehicle": 3,
    "noise": 4,
    "graffiti": 2,
    "tree": 2,
    "light": 3,
    "snow": 2,
    "health": 1,
    "housing": 2,
}
SPANISH_SHARE = 0.35
# Share of requests reported around a few hot spots, each with one dominant problem (a broken
# street light, a block with missed pickups), as real 311 maps show. Without them a small day
# spreads so thinly that the open-data export suppresses every group below k.
HOT_SPOTS = 3
HOT_SPOT_SHARE = 0.6
# A bigger day gets more hot spots, one per this many requests, not bigger ones.
REQUESTS_PER_HOT_SPOT = 15

_DETAILS = {
    "en": [
        "near the corner, it has been there since yesterday",
        "in front of the school entrance",
        "it is getting worse every day",
        "next to the bus stop, people have to walk around it",
        "reported before but nothing has changed",
        "across from the library",
        "at the end of the block by the park",
    ],
    "es": [
        "cerca de la esquina, está así desde ayer",
        "frente a la entrada de la escuela",
        "cada día está peor",
        "junto a la parada del autobús, la gente tiene que rodearlo",
        "ya lo reporté antes y nada ha cambiado",
        "enfrente de la biblioteca",
        "al final de la cuadra, junto al parque",
    ],
}
_FIRST_NAMES = ["Ana", "Luis", "Mei", "James", "Rosa", "Kwame", "Priya", "Tom", "Lucía", "Omar"]
_LAST_NAMES = ["García", "Nguyen", "Smith", "Okafor", "Chen", "Rivera", "Kowalski", "Haddad"]


@dataclass(frozen=True)
class GeneratedRequest:
    service_code: str
    lat: float
    lon: float
    description: str
    language: str
    # Local time of day the request would have arrived, in minutes after midnight.
    minute_of_day: int
    first_name: str
    last_name: str
    email: str
    phone: str
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def form(self, jurisdiction_id: str, api_key: str) -> list[tuple[str, str]]:
        """Return the Open311 `POST requests` form fields."""
        return [
            ("jurisdiction_id", jurisdiction_id),
            ("api_key", api_key),
            ("service_code", self.service_code),
            ("lat", f"{self.lat:.6f}"),
            ("long", f"{self.lon:.6f}"),
            ("description", self.description),
            ("first_name", self.first_name),
            ("last_name", self.last_name),
            ("email", self.email),
            ("phone", self.phone),
            *self.attributes,
        ]


def _ascii(name: str) -> str:
    """Return `name` lower-cased without accents, for an email local part (Lucía -> lucia)."""
    decomposed = unicodedata.normalize("NFKD", name.lower())
    return decomposed.encode("ascii", "ignore").decode("ascii")


def service_weight(service: ServiceSpec) -> int:
    text = " ".join([service.group, *service.keywords]).lower()
    weights = [weight for word, weight in _GROUP_WEIGHTS.items() if word in text]
    return max(weights, default=1)


def random_point(manifest: Manifest, rng: random.Random) -> tuple[float, float]:
    """Return (lat, lon) drawn uniformly from the service area by rejection sampling."""
    min_lon, min_lat, max_lon, max_lat = manifest.service_area.bounds()
    for _ in range(10_000):
        lon = rng.uniform(min_lon, max_lon)
        lat = rng.uniform(min_lat, max_lat)
        if manifest.service_area.contains(lon, lat):
            return lat, lon
    raise ValueError(f"could not draw a point inside the service area of {manifest.id}")


def near(manifest: Manifest, lat: float, lon: float, rng: random.Random) -> tuple[float, float]:
    """Return a point within about 150 m of (lat, lon) and inside the service area."""
    for _ in range(100):
        # 0.00135 degrees of latitude is about 150 m.
        north = rng.uniform(-1, 1) * 0.00135
        east = rng.uniform(-1, 1) * 0.00135 / max(math.cos(math.radians(lat)), 0.1)
        if manifest.service_area.contains(lon + east, lat + north):
            return lat + north, lon + east
    return lat, lon


def attribute_fields(attribute: Attribute, rng: random.Random) -> list[tuple[str, str]]:
    name = f"attribute[{attribute.code}]"
    if attribute.datatype == "singlevaluelist":
        return [(name, rng.choice(attribute.values).key)]
    if attribute.datatype == "multivaluelist":
        return [(f"{name}[]", rng.choice(attribute.values).key)]
    if attribute.datatype == "number":
        return [(name, str(rng.randint(1, 20)))]
    if attribute.datatype == "datetime":
        return [(name, datetime.now().astimezone().isoformat(timespec="seconds"))]
    return [(name, "A12")]


def generate_day(manifest: Manifest, count: int, seed: int) -> list[GeneratedRequest]:
    """Return `count` requests for one tenant, in order of their arrival time of day."""
    rng = random.Random(f"{seed}:{manifest.id}")
    services = [service for service in manifest.services if service.active]
    weights = [service_weight(service) for service in services]
    spanish = "es" in manifest.languages

    hot_spots = [
        (random_point(manifest, rng), rng.choices(services, weights)[0])
        for _ in range(max(HOT_SPOTS, count // REQUESTS_PER_HOT_SPOT))
    ]

    requests = []
    for _ in range(count):
        if rng.random() < HOT_SPOT_SHARE:
            (lat, lon), service = rng.choice(hot_spots)
            lat, lon = near(manifest, lat, lon, rng)
        else:
            service = rng.choices(services, weights)[0]
            lat, lon = random_point(manifest, rng)
        language = "es" if spanish and rng.random() < SPANISH_SHARE else "en"
        name = service.names.get(language) or next(iter(service.names.values()))
        hour = rng.choices(range(24), HOURLY_WEIGHTS)[0]
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        attributes = [
            pair
            for attribute in service.attributes
            if attribute.variable and (attribute.required or rng.random() < 0.5)
            for pair in attribute_fields(attribute, rng)
        ]
        requests.append(
            GeneratedRequest(
                service_code=service.code,
                lat=lat,
                lon=lon,
                description=f"{name}: {rng.choice(_DETAILS[language])}",
                language=language,
                minute_of_day=hour * 60 + rng.randrange(60),
                first_name=first,
                last_name=last,
                email=f"{_ascii(first)}.{rng.randrange(10_000)}@example.org",
                phone=f"+1617555{rng.randrange(100, 200):04d}",
                attributes=attributes,
            )
        )
    requests.sort(key=lambda item: item.minute_of_day)
    return requests
