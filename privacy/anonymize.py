"""Anonymized open data from plain dicts: location rules, time buckets, redaction, k-anonymity.

Input records are dicts with `service_code`, `requested_at` (datetime or ISO 8601 text), `lat`
and `lon`. They may also carry `id`, `status`, `district`, `description` and the record's own
personal data (`first_name`, `last_name`, `email`, `phone`, `address`, `address_id`).
`district` is the code of the manifest district that intake found for the exact point, because
a location-sensitive record's `lat` and `lon` are empty under the `district` rule. The personal
data is used for redaction only and never copied to the output.

k-anonymity is enforced over the quasi-identifiers (service, location cell, time bucket): a
group with fewer than k records is suppressed whole, and the export reports how many groups and
records it suppressed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import h3

from hub.core.clock import as_utc, utcnow
from privacy.redaction import own_values, redact_text

LocationMode = Literal["exact", "h3", "district", "withheld"]
TimeBucket = Literal["hour", "day", "week", "month"]
FreeText = Literal["withheld", "redacted"]
IdMode = Literal["pseudonymous", "open311"]

WITHHELD = "withheld"
# Hex digits of a pseudonymous id (64 bits). By the birthday bound, the chance that two of a
# million records share an id is about 3 in 100 million.
PSEUDONYM_HEX_DIGITS = 16


@dataclass(frozen=True)
class LocationRule:
    """The publication rule for one service's location; `h3_resolution` applies to `h3`."""

    mode: LocationMode = "h3"
    h3_resolution: int = 8

    def describe(self) -> dict[str, Any]:
        """Return the rule as the export's metadata states it."""
        if self.mode == "h3":
            return {"location": self.mode, "h3_resolution": self.h3_resolution}
        return {"location": self.mode}


@dataclass
class AnonymizationPolicy:
    """A tenant's open-data policy.

    Mode `district` publishes `district_names[code]` for a record's stored district code, or
    the code itself when the name is not known. A record without a stored code gets
    `district_of(lat, lon)`, the district name of its public point. A record with neither is
    published without a location.

    `ids` is `pseudonymous` unless the operator asks for `open311`: Open311 ids let anyone
    join a published record to the live API's exact time and location. Pseudonymous ids are
    HMACs under `id_key`, which is random for each policy and never stored, so the ids of one
    request differ between exports and cannot be computed from its Open311 id.
    """

    k: int = 5
    time_bucket: TimeBucket = "day"
    rules: dict[str, LocationRule] = field(default_factory=dict)
    default_rule: LocationRule = field(default_factory=LocationRule)
    free_text: FreeText = "withheld"
    district_of: Callable[[float, float], str | None] | None = None
    district_names: dict[str, str] = field(default_factory=dict)
    ids: IdMode = "pseudonymous"
    id_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def rule_for(self, service_code: str) -> LocationRule:
        return self.rules.get(service_code, self.default_rule)


@dataclass
class AnonymizedExport:
    """Published records and the figures the export states about itself.

    `first_time_bucket` and `last_time_bucket` are the earliest and latest time buckets of the
    published records, or None when nothing is published.
    """

    records: list[dict[str, Any]]
    k: int
    time_bucket: str
    total_records: int
    suppressed_records: int
    suppressed_groups: int
    published_groups: int
    ids: IdMode = "pseudonymous"
    free_text: FreeText = "withheld"
    first_time_bucket: str | None = None
    last_time_bucket: str | None = None
    rules: dict[str, LocationRule] = field(default_factory=dict)
    default_rule: LocationRule = field(default_factory=LocationRule)
    tenant_id: str | None = None
    generated_at: datetime = field(default_factory=utcnow)

    def metadata(self) -> dict[str, Any]:
        """Return the export's settings and counts, as the audit entry records them."""
        return {
            "k": self.k,
            "ids": self.ids,
            "free_text": self.free_text,
            "quasi_identifiers": ["service_code", "location_cell", "time_bucket"],
            "time_bucket": self.time_bucket,
            "total_records": self.total_records,
            "published_records": len(self.records),
            "suppressed_records": self.suppressed_records,
            "suppressed_groups": self.suppressed_groups,
            "published_groups": self.published_groups,
        }

    def location_rules(self) -> dict[str, Any]:
        """Return each service's location rule, and the rule of services not in the catalog."""
        return {
            "services": {code: rule.describe() for code, rule in sorted(self.rules.items())},
            "other_services": self.default_rule.describe(),
        }


def bucket_time(value: datetime | str, bucket: TimeBucket) -> datetime:
    """Return the start (UTC) of the hour, day, ISO week or month that contains `value`."""
    moment = as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown time bucket {bucket!r}; use hour, day, week or month")


class _Memo:
    """Per-export caches: bucket text per UTC hour and H3 cell centers.

    Every bucket boundary (hour, day, ISO week, month) falls on a UTC hour boundary, so all
    records in one UTC hour share a bucket.
    """

    def __init__(self, bucket: TimeBucket) -> None:
        self.bucket = bucket
        self.buckets: dict[int, str] = {}
        self.centers: dict[str, tuple[float, float]] = {}

    def time_bucket(self, value: datetime | str) -> str:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            moment = as_utc(moment)
        hour = int(moment.timestamp() // 3600)
        text = self.buckets.get(hour)
        if text is None:
            text = bucket_time(moment, self.bucket).isoformat()
            self.buckets[hour] = text
        return text

    def center(self, cell: str) -> tuple[float, float]:
        point = self.centers.get(cell)
        if point is None:
            lat, lon = h3.cell_to_latlng(cell)
            point = (round(lat, 6), round(lon, 6))
            self.centers[cell] = point
        return point


def published_id(request_id: str | None, policy: AnonymizationPolicy) -> str | None:
    """Return the id that a record is published under: its pseudonym under the policy's key,
    or its Open311 id when the policy's `ids` is `open311`."""
    if request_id is None or policy.ids == "open311":
        return request_id
    digest = hmac.new(policy.id_key, str(request_id).encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:PSEUDONYM_HEX_DIGITS]


def locate(
    lat: float | None,
    lon: float | None,
    rule: LocationRule,
    policy: AnonymizationPolicy,
    memo: _Memo | None = None,
    district: str | None = None,
) -> tuple[str, float | None, float | None, str | None]:
    """Return (location cell, published lat, published lon, district name) under `rule`.

    `district` is the record's stored district code. Only `exact` and `h3` publish coordinates.
    """
    if rule.mode == "withheld":
        return WITHHELD, None, None, None
    if rule.mode in ("exact", "h3"):
        if lat is None or lon is None:
            return WITHHELD, None, None, None
        if rule.mode == "exact":
            return f"{lat:.6f},{lon:.6f}", lat, lon, None
        cell = h3.latlng_to_cell(lat, lon, rule.h3_resolution)
        center = memo.center(cell) if memo is not None else _Memo(policy.time_bucket).center(cell)
        return cell, center[0], center[1], None
    name = _district_name(district, lat, lon, policy)
    if name is None:
        return WITHHELD, None, None, None
    return f"district:{name}", None, None, name


def _district_name(
    code: str | None, lat: float | None, lon: float | None, policy: AnonymizationPolicy
) -> str | None:
    if code is not None:
        return policy.district_names.get(code, code)
    if lat is None or lon is None or policy.district_of is None:
        return None
    return policy.district_of(lat, lon)


def public_record(
    record: dict[str, Any], policy: AnonymizationPolicy, memo: _Memo | None = None
) -> dict[str, Any]:
    """Return the open-data form of one record, before k-anonymity (which needs the whole set)."""
    memo = memo or _Memo(policy.time_bucket)
    service = str(record["service_code"])
    # Inline form of `policy.rule_for`, because this runs once per exported record.
    rule = policy.rules.get(service, policy.default_rule)
    cell, lat, lon, district = locate(
        record.get("lat"), record.get("lon"), rule, policy, memo, record.get("district")
    )
    out: dict[str, Any] = {
        "id": published_id(record.get("id"), policy),
        "service_code": service,
        "status": record.get("status"),
        "time_bucket": memo.time_bucket(record["requested_at"]),
        "location_cell": cell,
        "lat": lat,
        "lon": lon,
        "district": district,
    }
    if policy.free_text == "redacted":
        out["description"] = redact_text(record.get("description"), own_values(record))
    else:
        out["description"] = None
    return out


def anonymize(
    records: Iterable[dict[str, Any]],
    policy: AnonymizationPolicy,
    *,
    tenant_id: str | None = None,
) -> AnonymizedExport:
    """Publish `records` under `policy`, suppressing every group smaller than k."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    memo = _Memo(policy.time_bucket)
    total = 0
    for record in records:
        total += 1
        public = public_record(record, policy, memo)
        key = (public["service_code"], public["location_cell"], public["time_bucket"])
        groups[key].append(public)

    published: list[dict[str, Any]] = []
    published_buckets: list[str] = []
    suppressed_records = 0
    suppressed_groups = 0
    # Records come out ordered by (time bucket, service, cell). Within a group, input order is
    # the Open311 id order of a database export, so pseudonymous records are sorted by their
    # pseudonym instead, and their order does not reveal their Open311 ids.
    for key in sorted(groups, key=lambda group: (group[2], group[0], group[1])):
        members = groups[key]
        if len(members) < policy.k:
            suppressed_records += len(members)
            suppressed_groups += 1
            continue
        if policy.ids == "pseudonymous":
            members.sort(key=lambda member: member["id"] or "")
        published.extend(members)
        published_buckets.append(key[2])
    return AnonymizedExport(
        records=published,
        k=policy.k,
        time_bucket=policy.time_bucket,
        total_records=total,
        suppressed_records=suppressed_records,
        suppressed_groups=suppressed_groups,
        published_groups=len(groups) - suppressed_groups,
        ids=policy.ids,
        free_text=policy.free_text,
        # Bucket texts are ISO 8601 in UTC with one format, so they sort by time.
        first_time_bucket=min(published_buckets, default=None),
        last_time_bucket=max(published_buckets, default=None),
        rules=dict(policy.rules),
        default_rule=policy.default_rule,
        tenant_id=tenant_id,
    )


def smallest_group(records: Iterable[dict[str, Any]]) -> int:
    """Return the size of the smallest (service, cell, time bucket) group in published records."""
    sizes: dict[tuple[Any, Any, Any], int] = defaultdict(int)
    for record in records:
        sizes[(record["service_code"], record["location_cell"], record["time_bucket"])] += 1
    return min(sizes.values(), default=0)


def policy_from_settings(
    privacy_settings: dict[str, Any],
    services: Iterable[dict[str, Any]],
    *,
    free_text: FreeText = "withheld",
    district_of: Callable[[float, float], str | None] | None = None,
    district_names: dict[str, str] | None = None,
    ids: IdMode = "pseudonymous",
) -> AnonymizationPolicy:
    """Build a policy from a tenant's privacy settings and its services' open-data rules.

    Each service dict has `code`, `open_data_location`, `h3_resolution` and optionally
    `location_sensitive`. A location-sensitive service never publishes its exact point, so its
    `exact` rule becomes `h3`, as in the live Open311 API.
    """
    rules = {}
    for service in services:
        mode = service.get("open_data_location") or "h3"
        if service.get("location_sensitive") and mode == "exact":
            mode = "h3"
        rules[str(service["code"])] = LocationRule(
            mode=mode, h3_resolution=int(service.get("h3_resolution") or 8)
        )
    return AnonymizationPolicy(
        k=int(privacy_settings.get("k", 5)),
        time_bucket=privacy_settings.get("time_bucket", "day"),
        rules=rules,
        free_text=free_text,
        district_of=district_of,
        district_names=dict(district_names or {}),
        ids=ids,
    )


def _in_ring(lon: float, lat: float, ring: list[list[float]]) -> bool:
    """Ray casting: whether the point lies inside a closed linear ring of [lon, lat] pairs."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:], strict=False):
        if (y1 > lat) != (y2 > lat):
            crossing = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < crossing:
                inside = not inside
    return inside


def _in_polygon(lon: float, lat: float, polygon: list[list[list[float]]]) -> bool:
    """Return whether the point is inside the outer ring and outside every hole."""
    if not polygon or not _in_ring(lon, lat, polygon[0]):
        return False
    return not any(_in_ring(lon, lat, hole) for hole in polygon[1:])


def district_lookup(districts: list[dict[str, Any]]) -> Callable[[float, float], str | None]:
    """Build `district_of(lat, lon)` from GeoJSON districts (`name` and `geometry` keys)."""

    def district_of(lat: float, lon: float) -> str | None:
        for district in districts:
            geometry = district.get("geometry") or {}
            coordinates = geometry.get("coordinates") or []
            polygons = coordinates if geometry.get("type") == "MultiPolygon" else [coordinates]
            if any(_in_polygon(lon, lat, polygon) for polygon in polygons):
                return str(district.get("name") or district.get("code"))
        return None

    return district_of
