"""Every real 311 export imports into a tenant, on SQLite and PostgreSQL, and again is a no-op."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from import_support import city_manifest, onboard_data, onboard_example
from sqlalchemy import func, select, text

from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_STAFF, TenantContext
from hub.requests.importers import FORMATS
from hub.requests.importers.service import run_import
from hub.requests.models import ServiceRequest, StatusEvent
from privacy.access import decrypt_fields

# (city, zone, format, file, read, imported, rejected by reason, imported under `other`)
REAL_FILES = [
    ("nyc", "America/New_York", "nyc-csv", "311_records/nyc/NYC311-5.csv", 5, 5, {}, 2),
    (
        "nyc",
        "America/New_York",
        "nyc-csv",
        "311_records/nyc/nyc311-100.csv",
        100,
        97,
        {"missing_location": 3},
        52,
    ),
    (
        "nyc",
        "America/New_York",
        "nyc-csv",
        "311_records/nyc/311_Service_Requests.csv",
        1000,
        942,
        {"missing_location": 58},
        427,
    ),
    ("nyc", "America/New_York", "nyc-json", "311_records/nyc/NYC311-5.json", 5, 5, {}, 2),
    ("nyc", "America/New_York", "nyc-json", "311_records/nyc/fhrw-4uyv.json", 1000, 1000, {}, 571),
    (
        "sf",
        "America/Los_Angeles",
        "sf-csv",
        "311_records/sf/cases_sample_10000(no-geo).csv",
        10000,
        9977,
        {"missing_location": 23},
        3009,
    ),
    (
        "boston",
        "America/New_York",
        "boston-csv",
        "311_records/boston/boston311-100.csv",
        100,
        99,
        {"missing_location": 1},
        37,
    ),
    (
        "boston",
        "America/New_York",
        "boston-jsonl",
        "311_records/boston/boston311-10.jsonl",
        10,
        9,
        {"missing_location": 1},
        4,
    ),
    (
        "chicago",
        "America/Chicago",
        "open311-json",
        "open311/open311status/service_requests.json",
        2,
        2,
        {},
        2,
    ),
]


def count_rows(engine, tenant_id: str, model) -> int:
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(
    ("city", "zone", "name", "relative", "read", "imported", "rejected", "unmapped"),
    REAL_FILES,
    ids=[f"{case[2]}:{Path(case[3]).name}" for case in REAL_FILES],
)
def test_real_file_imports_once(
    engine, shared_data, city, zone, name, relative, read, imported, rejected, unmapped
):
    tenant = onboard_data(engine, city_manifest(city, zone))
    ctx = TenantContext(tenant.id, actor="test")
    path = shared_data / relative

    report = run_import(ctx, tenant, FORMATS[name], path, engine=engine)
    assert report.read == read
    assert report.imported == imported
    assert dict(report.rejected_by_reason) == rejected
    assert report.rejected == sum(rejected.values())
    assert sum(report.unmapped_categories.values()) == unmapped
    assert report.skipped_existing == 0
    assert report.warnings() == []
    assert all(r.reason in rejected for r in report.rejections)
    assert count_rows(engine, tenant.id, ServiceRequest) == imported

    events = count_rows(engine, tenant.id, StatusEvent)
    again = run_import(ctx, tenant, FORMATS[name], path, engine=engine)
    assert again.imported == 0
    assert again.skipped_existing == imported
    assert again.rejected == report.rejected
    # Rows skipped as stored are not listed again under their unmapped category.
    assert sum(again.unmapped_categories.values()) == again.rejected_by_reason.get(
        "unmapped_category", 0
    )
    assert count_rows(engine, tenant.id, ServiceRequest) == imported
    assert count_rows(engine, tenant.id, StatusEvent) == events


def test_example_manifest_reports_unmapped(engine, shared_data):
    # The shipped NYC example lists a few complaint types as aliases; the rest are reported.
    tenant = onboard_example(engine, "new-york-city")
    ctx = TenantContext(tenant.id, actor="test")
    path = shared_data / "311_records/nyc/nyc311-100.csv"

    report = run_import(ctx, tenant, FORMATS["nyc-csv"], path, engine=engine)
    assert report.read == 100
    assert report.imported > 0
    assert report.rejected_by_reason["unmapped_category"] > 0
    assert report.imported + report.rejected == 100
    assert (
        sum(report.unmapped_categories.values()) == report.rejected_by_reason["unmapped_category"]
    )
    assert all(
        "--fallback" in r.message for r in report.rejections if r.reason == "unmapped_category"
    )


def test_fallback_option_imports_unmapped(engine, shared_data):
    tenant = onboard_data(engine, city_manifest("nyc", "America/New_York", with_other=False))
    ctx = TenantContext(tenant.id, actor="test")
    path = shared_data / "311_records/nyc/nyc311-100.csv"

    without = run_import(ctx, tenant, FORMATS["nyc-csv"], path, engine=engine)
    # The three rows without a location also have unmapped categories, and count under both.
    assert without.rejected_by_reason == {"unmapped_category": 55, "missing_location": 3}
    assert without.rejected == 55
    assert without.imported == 45

    with_fallback = run_import(
        ctx, tenant, FORMATS["nyc-csv"], path, engine=engine, fallback="noise"
    )
    assert with_fallback.imported == 52
    assert with_fallback.skipped_existing == 45
    assert with_fallback.rejected_by_reason == {"missing_location": 3}


def test_other_city_file_warned(engine, shared_data):
    tenant = onboard_data(engine, city_manifest("boston", "America/New_York"))
    ctx = TenantContext(tenant.id, actor="test")
    path = shared_data / "311_records/nyc/nyc311-100.csv"

    report = run_import(ctx, tenant, FORMATS["nyc-csv"], path, engine=engine)

    assert report.located == 82
    assert report.outside_service_area == 82
    assert report.warnings() == [
        f"82 of the 82 rows with coordinates are outside tenant {tenant.id}'s service area, so "
        "the file may be another city's export; check --tenant, or the manifest's "
        "service_area (GeoJSON positions are [lon, lat])"
    ]
    assert report.as_dict()["warnings"] == report.warnings()


def test_nyc_csv_then_json_stores_once(engine, shared_data):
    tenant = onboard_data(engine, city_manifest("nyc", "America/New_York"))
    ctx = TenantContext(tenant.id, actor="test")

    first = run_import(
        ctx, tenant, FORMATS["nyc-csv"], shared_data / "311_records/nyc/NYC311-5.csv", engine=engine
    )
    second = run_import(
        ctx,
        tenant,
        FORMATS["nyc-json"],
        shared_data / "311_records/nyc/NYC311-5.json",
        engine=engine,
    )
    assert first.imported == 5
    assert second.imported == 0
    assert second.skipped_existing == 5
    assert count_rows(engine, tenant.id, ServiceRequest) == 5


def test_row_with_two_problems_lists_both(engine, shared_data, tmp_path):
    source = shared_data / "311_records/boston/boston311-100.csv"
    with source.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [next(reader), next(reader)]
    # The second row of the export is a valid Needle Pickup; two of its values are broken.
    broken = {**rows[1], "open_dt": "01/19/2022 11:18", "case_status": "Reopened"}
    path = tmp_path / "two-problems.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([rows[1], broken])
    tenant = onboard_data(engine, city_manifest("boston", "America/New_York"))
    ctx = TenantContext(tenant.id, actor="test")

    report = run_import(ctx, tenant, FORMATS["boston-csv"], path, engine=engine)

    assert report.imported == 1
    assert report.rejected == 1
    assert dict(report.rejected_by_reason) == {"unknown_status": 1, "invalid_time": 1}
    [rejection] = report.as_dict()["rejections"]
    assert rejection["line"] == 3
    assert rejection["column"] == "case_status; open_dt"
    assert rejection["reason"] == "unknown_status; invalid_time"
    assert rejection["message"] == (
        "case_status 'Reopened' is not one of: closed, open; "
        "open_dt '01/19/2022 11:18' does not match "
        "%Y-%m-%d %H:%M:%S or %Y-%m-%dT%H:%M:%S or %Y-%m-%d %H:%M:%S.%f"
    )


def test_limit_stops_reading(engine, shared_data):
    tenant = onboard_data(engine, city_manifest("sf", "America/Los_Angeles"))
    ctx = TenantContext(tenant.id, actor="test")
    path = shared_data / "311_records/sf/cases_sample_10000(no-geo).csv"

    report = run_import(
        ctx, tenant, FORMATS["sf-csv"], path, engine=engine, limit=250, batch_size=100
    )
    assert report.read == 250
    assert count_rows(engine, tenant.id, ServiceRequest) == report.imported
    assert report.imported + report.rejected == 250


def test_imported_fields_encrypted_and_mapped(engine, shared_data):
    manifest = city_manifest("nyc", "America/New_York")
    # The sample's requests closed years ago; a long retention keeps their personal fields.
    manifest["privacy"] = {"retention_days": {"personal_data": 36500}}
    tenant = onboard_data(engine, manifest)
    ctx = TenantContext(tenant.id, actor="test", roles=frozenset({ROLE_STAFF}))
    run_import(
        ctx, tenant, FORMATS["nyc-csv"], shared_data / "311_records/nyc/NYC311-5.csv", engine=engine
    )

    with unit_of_work(ctx, engine=engine) as session:
        request = session.scalars(
            select(ServiceRequest).where(ServiceRequest.source_id == "34675190")
        ).one()
        assert request.service_code == "noise"
        assert request.status == "closed"
        assert request.resolution == "no_action"
        assert request.source == "nyc311"
        assert request.channel == "mobile"
        assert request.dek_version is not None
        assert b"EAST 118" not in request.address_enc
        plain = decrypt_fields(
            session,
            ctx,
            "service_requests",
            request.id,
            {"address_enc": request.address_enc, "description_enc": request.description_enc},
            purpose="staff.request_view",
        )
        assert plain["address_enc"] == "117 EAST 118 STREET, NEW YORK"
        assert plain["description_enc"] == "Banging/Pounding"

        events = session.scalars(
            select(StatusEvent).where(StatusEvent.request_id == request.id).order_by(StatusEvent.at)
        ).all()
        assert [e.status for e in events] == ["submitted", "closed"]
        assert events[0].note_enc is None
        assert events[1].note_enc is not None
        note = decrypt_fields(
            session,
            ctx,
            "status_events",
            str(events[1].id),
            {"note_enc": events[1].note_enc},
            purpose="staff.request_view",
        )
        assert "police action was not necessary" in note["note_enc"]


def test_no_plaintext_in_raw_rows(engine, shared_data):
    tenant = onboard_data(engine, city_manifest("boston", "America/New_York"))
    ctx = TenantContext(tenant.id, actor="test")
    run_import(
        ctx,
        tenant,
        FORMATS["boston-csv"],
        shared_data / "311_records/boston/boston311-100.csv",
        engine=engine,
    )
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            dump = conn.execute(
                text(
                    "SELECT string_agg(t::text, ' ') FROM service_requests t WHERE tenant_id = :t"
                ),
                {"t": tenant.id},
            ).scalar()
        else:
            rows = conn.execute(
                text("SELECT * FROM service_requests WHERE tenant_id = :t"), {"t": tenant.id}
            ).all()
            dump = " ".join(repr(tuple(row)) for row in rows)
    # An address and a case title from the file, stored only as ciphertext.
    assert "42 Cross St" not in dump
    assert "Needle Pickup" not in dump
