"""Anonymization on plain records: location rules, time buckets, redaction and k-anonymity."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

import h3
import pytest

from privacy.anonymize import (
    AnonymizationPolicy,
    LocationRule,
    anonymize,
    bucket_time,
    district_lookup,
    public_record,
    redact_text,
    smallest_group,
)

BOSTON = (42.3601, -71.0589)


def record(n=0, service="pothole", lat=BOSTON[0], lon=BOSTON[1], **extra):
    return {
        "id": f"R{n}",
        "service_code": service,
        "requested_at": datetime(2024, 3, 5, 14, 30, tzinfo=UTC),
        "lat": lat,
        "lon": lon,
        **extra,
    }


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ("hour", datetime(2024, 3, 5, 14, tzinfo=UTC)),
        ("day", datetime(2024, 3, 5, tzinfo=UTC)),
        ("week", datetime(2024, 3, 4, tzinfo=UTC)),
        ("month", datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_time_buckets(bucket, expected):
    assert bucket_time(datetime(2024, 3, 5, 14, 30, 12, tzinfo=UTC), bucket) == expected


def test_bucket_accepts_offset_text():
    assert bucket_time("2024-03-05T23:30:00-05:00", "day") == datetime(2024, 3, 6, tzinfo=UTC)


def test_h3_rule_publishes_cell_center():
    policy = AnonymizationPolicy(default_rule=LocationRule("h3", 7))
    out = public_record(record(), policy)
    cell = h3.latlng_to_cell(*BOSTON, 7)
    assert out["location_cell"] == cell
    assert (out["lat"], out["lon"]) != BOSTON
    assert h3.latlng_to_cell(out["lat"], out["lon"], 7) == cell


def test_withheld_rule_publishes_no_point():
    policy = AnonymizationPolicy(rules={"shelter": LocationRule("withheld")})
    out = public_record(record(service="shelter"), policy)
    assert out["lat"] is None
    assert out["lon"] is None
    assert out["location_cell"] == "withheld"


def test_exact_rule_keeps_point():
    policy = AnonymizationPolicy(default_rule=LocationRule("exact"))
    out = public_record(record(), policy)
    assert (out["lat"], out["lon"]) == BOSTON


def test_district_rule_names_district():
    square = [[-71.1, 42.3], [-71.0, 42.3], [-71.0, 42.4], [-71.1, 42.4], [-71.1, 42.3]]
    districts = [
        {"code": "d1", "name": "Downtown", "geometry": {"type": "Polygon", "coordinates": [square]}}
    ]
    policy = AnonymizationPolicy(
        default_rule=LocationRule("district"), district_of=district_lookup(districts)
    )
    inside = public_record(record(), policy)
    outside = public_record(record(lat=40.0, lon=-74.0), policy)
    assert inside["district"] == "Downtown"
    assert inside["lat"] is None
    assert outside["location_cell"] == "withheld"


def test_district_rule_uses_stored_code():
    policy = AnonymizationPolicy(
        default_rule=LocationRule("district"), district_names={"d1": "Downtown"}
    )
    # A location-sensitive record keeps no public point under the district rule.
    out = public_record(record(lat=None, lon=None, district="d1"), policy)
    assert out["district"] == "Downtown"
    assert out["location_cell"] == "district:Downtown"
    assert out["lat"] is None
    assert out["lon"] is None


def test_stored_district_without_name_uses_code():
    policy = AnonymizationPolicy(default_rule=LocationRule("district"))
    out = public_record(record(lat=None, lon=None, district="d9"), policy)
    assert out["district"] == "d9"
    assert out["lat"] is None


def test_stored_district_wins_over_point():
    square = [[-71.1, 42.3], [-71.0, 42.3], [-71.0, 42.4], [-71.1, 42.4], [-71.1, 42.3]]
    districts = [
        {"code": "d1", "name": "Downtown", "geometry": {"type": "Polygon", "coordinates": [square]}}
    ]
    policy = AnonymizationPolicy(
        default_rule=LocationRule("district"),
        district_of=district_lookup(districts),
        district_names={"d1": "Downtown", "d2": "Harbor"},
    )
    out = public_record(record(district="d2"), policy)
    assert out["district"] == "Harbor"
    assert out["lat"] is None
    assert out["lon"] is None


def test_small_groups_suppressed():
    records = [record(n) for n in range(5)] + [record(10 + n, service="graffiti") for n in range(2)]
    export = anonymize(records, AnonymizationPolicy(k=3))
    assert len(export.records) == 5
    assert export.suppressed_records == 2
    assert export.suppressed_groups == 1
    assert export.published_groups == 1
    assert smallest_group(export.records) >= 3


def test_personal_fields_never_published():
    rec = record(email="a@example.org", phone="+12025550123", first_name="Ada", description="x")
    out = public_record(rec, AnonymizationPolicy())
    assert "email" not in out
    assert "phone" not in out
    assert "first_name" not in out
    assert out["description"] is None


def test_pseudonymous_ids_hide_open311_ids():
    records = [record(n) for n in range(6)]
    export = anonymize(records, AnonymizationPolicy(k=3))
    ids = [published["id"] for published in export.records]
    assert export.ids == "pseudonymous"
    assert export.metadata()["ids"] == "pseudonymous"
    assert len(set(ids)) == 6
    assert not set(ids) & {rec["id"] for rec in records}
    assert all(len(value) == 16 for value in ids)


def test_pseudonymous_ids_differ_between_exports():
    records = [record(n) for n in range(5)]
    first = {r["id"] for r in anonymize(records, AnonymizationPolicy()).records}
    second = {r["id"] for r in anonymize(records, AnonymizationPolicy()).records}
    assert len(first) == 5
    assert not first & second


def test_group_order_ignores_input_order():
    # Records of one group come out in pseudonym order, so their position does not say
    # which Open311 id each one has.
    records = [record(n) for n in range(8)]
    key = b"k" * 32
    forward = anonymize(records, AnonymizationPolicy(id_key=key)).records
    backward = anonymize(list(reversed(records)), AnonymizationPolicy(id_key=key)).records
    assert forward == backward
    assert [r["id"] for r in forward] == sorted(r["id"] for r in forward)


def test_open311_ids_on_request():
    records = [record(n) for n in range(5)]
    export = anonymize(records, AnonymizationPolicy(ids="open311"))
    assert [r["id"] for r in export.records] == [f"R{n}" for n in range(5)]
    assert export.metadata()["ids"] == "open311"


@pytest.mark.parametrize(
    "text",
    [
        "call me at (617) 555-0142 please",
        "reach me on +44 20 7946 0018",
        "email jane.doe+311@example.com for details",
        "broken light in front of 1234 North Main St.",
        "my name is Jane Doe and the bin is full",
        "Mr. Smith parks here every night",
        "me llamo María García y hay un bache",
    ],
)
def test_redaction_patterns(text):
    out = redact_text(text)
    assert "[redacted]" in out
    for secret in ("555-0142", "7946", "jane.doe", "1234 North", "Jane Doe", "Smith", "María"):
        assert secret not in out


def test_redaction_uses_record_values():
    out = redact_text("Zebulon says the hydrant at Elm corner leaks", ["Zebulon", "Elm corner"])
    assert "Zebulon" not in out
    assert "Elm corner" not in out
    assert "hydrant" in out


def test_redacted_mode_removes_own_name():
    rec = record(description="Quixote here, pothole is deep", first_name="Zed", last_name="Quixote")
    out = public_record(rec, AnonymizationPolicy(free_text="redacted"))
    assert "Quixote" not in out["description"]
    assert "pothole is deep" in out["description"]


def test_redacted_mode_removes_own_address_id():
    rec = record(description="Leak again at lot elmwood-lot-0007", address_id="elmwood-lot-0007")
    out = public_record(rec, AnonymizationPolicy(free_text="redacted"))
    assert "elmwood" not in out["description"]
    assert "address_id" not in out


CANARY_NAME = "Thaddeus Wobblesworth"
CANARY_PHONE = "+1 212 555 0199"
CANARY_EMAIL = "canary.q7x3@example.net"


def nyc_records(path):
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row["Latitude"] or not row["Created Date"]:
                continue
            yield {
                "id": row["Unique Key"],
                "service_code": row["Complaint Type"],
                "requested_at": datetime.strptime(row["Created Date"], "%m/%d/%Y %I:%M:%S %p"),
                "lat": float(row["Latitude"]),
                "lon": float(row["Longitude"]),
                "address": row["Incident Address"],
                "description": row["Resolution Description"],
            }


def sf_records(path):
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            point = row["Point"].strip("()")
            if not point or not row["Opened"]:
                continue
            lat, lon = (float(p) for p in point.split(","))
            yield {
                "id": row["CaseID"],
                "service_code": row["Category"],
                "requested_at": datetime.strptime(row["Opened"], "%m/%d/%Y %I:%M:%S %p"),
                "lat": lat,
                "lon": lon,
                "address": row["Address"],
                "description": f"{row['Request.Details']} at {row['Address']}",
            }


def plant_canaries(records):
    out = []
    for index, rec in enumerate(records):
        if index % 50 == 0:
            rec = dict(rec)
            rec["first_name"], rec["last_name"] = CANARY_NAME.split()
            rec["phone"] = CANARY_PHONE
            rec["email"] = CANARY_EMAIL
            rec["description"] = (
                f"{CANARY_NAME} called from {CANARY_PHONE}, write to {CANARY_EMAIL}; "
                f"{rec.get('description') or ''}"
            )
        out.append(rec)
    return out


@pytest.mark.parametrize(
    ("city", "reader", "relative"),
    [
        ("nyc", nyc_records, "311_records/nyc/311_Service_Requests.csv"),
        ("sf", sf_records, "311_records/sf/cases_sample_10000(no-geo).csv"),
    ],
)
def test_real_records_meet_k_without_canary(shared_data, city, reader, relative):
    records = plant_canaries(list(reader(shared_data / relative)))
    assert len(records) > 100
    policy = AnonymizationPolicy(
        k=5, time_bucket="month", default_rule=LocationRule("h3", 6), free_text="redacted"
    )
    export = anonymize(records, policy)
    assert export.records, f"{city}: everything was suppressed"
    assert smallest_group(export.records) >= 5
    assert export.total_records == len(records)
    assert export.suppressed_records + len(export.records) == len(records)
    published = repr(export.records)
    for canary in (*CANARY_NAME.split(), CANARY_PHONE, CANARY_EMAIL, "555 0199"):
        assert canary not in published, f"{city}: canary {canary!r} published"
