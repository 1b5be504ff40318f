"""Imports stay inside their tenant, contact lookups too, and DST hours are stored as documented."""

from __future__ import annotations

from datetime import UTC, datetime

from import_support import city_manifest, onboard_data
from sqlalchemy import func, select

from hub.core.clock import as_utc
from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext
from hub.requests.importers import FORMATS
from hub.requests.importers.service import run_import
from hub.requests.models import ServiceRequest, StatusEvent
from hub.requests.queries import find_by_contact
from hub.requests.schemas import IntakeData
from hub.requests.service import submit_request

BOSTON_HEADER = (
    "case_enquiry_id,open_dt,closed_dt,case_status,closure_reason,case_title,type,location,"
    "latitude,longitude,source\n"
)


def boston_row(case_id: str, opened: str, closed: str = "", status: str = "Open") -> str:
    return (
        f"{case_id},{opened},{closed},{status}, ,Needles,Needle Pickup,1 Main St,42.35,-71.06,x\n"
    )


def tenant_counts(engine, tenant_id: str) -> tuple[int, int]:
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        requests = session.scalar(select(func.count()).select_from(ServiceRequest))
        events = session.scalar(select(func.count()).select_from(StatusEvent))
    return requests, events


def test_import_into_a_leaves_b_alone(engine, shared_data):
    a = onboard_data(engine, city_manifest("boston", "America/New_York"))
    b = onboard_data(engine, city_manifest("boston", "America/New_York"))
    path = shared_data / "311_records/boston/boston311-100.csv"
    run_import(TenantContext(b.id), b, FORMATS["boston-csv"], path, engine=engine, limit=10)
    before = tenant_counts(engine, b.id)

    report = run_import(TenantContext(a.id), a, FORMATS["boston-csv"], path, engine=engine)
    assert report.imported == 99
    # B already has ten of these source ids, and A imports them anyway as its own rows.
    assert report.skipped_existing == 0
    assert tenant_counts(engine, b.id) == before
    assert tenant_counts(engine, a.id)[0] == 99

    with unit_of_work(TenantContext(a.id), engine=engine, write=False) as session:
        visible = session.scalars(select(ServiceRequest.tenant_id).distinct()).all()
    assert visible == [a.id]


def test_find_by_phone_stays_in_tenant(engine):
    a = onboard_data(engine, city_manifest("boston", "America/New_York"))
    b = onboard_data(engine, city_manifest("boston", "America/New_York"))
    phone = "+1 617 555 0142"
    ids = {}
    for tenant in (a, b):
        ctx = TenantContext(tenant.id, actor="test")
        with unit_of_work(ctx, engine=engine) as session:
            data = IntakeData(service_code="needles", lat=42.35, lon=-71.06, phone=phone)
            ids[tenant.id] = submit_request(session, ctx, tenant, data).id

    ctx_a = TenantContext(a.id, actor="test")
    with unit_of_work(ctx_a, engine=engine, write=False) as session:
        found = find_by_contact(session, ctx_a, phone="(617) 555-0142")
    assert [r.id for r in found] == [ids[a.id]]
    assert all(r.tenant_id == a.id for r in found)


DST_ROWS = (
    # Clocks went back in Boston at 02:00 on 2021-11-07, so 01:30 happened twice.
    boston_row("dst-1", "2021-11-07 01:30:00")
    # Clocks went forward at 02:00 on 2021-03-14, so 02:30 never happened.
    + boston_row("dst-2", "2021-03-14 02:30:00", "2021-03-14 02:45:00", "Closed")
    + boston_row("dst-3", "2021-07-01 12:00:00")
)


def test_dst_hours_stored_and_counted(engine, tmp_path):
    tenant = onboard_data(engine, city_manifest("boston", "America/New_York"))
    ctx = TenantContext(tenant.id, actor="test")
    path = tmp_path / "dst.csv"
    path.write_text(BOSTON_HEADER + DST_ROWS, encoding="utf-8")

    report = run_import(ctx, tenant, FORMATS["boston-csv"], path, engine=engine)
    assert report.imported == 3
    assert report.dst_adjustments == {"ambiguous": 1, "nonexistent": 2}
    assert report.dst_examples["ambiguous"] == ["2021-11-07 01:30:00"]

    with unit_of_work(ctx, engine=engine, write=False) as session:
        rows = session.execute(
            select(ServiceRequest.source_id, ServiceRequest.requested_at, ServiceRequest.closed_at)
        ).all()
    stored = {source_id: (as_utc(opened), closed) for source_id, opened, closed in rows}
    # First occurrence: 01:30 EDT is 05:30 UTC.
    assert stored["dst-1"][0] == datetime(2021, 11, 7, 5, 30, tzinfo=UTC)
    # Shifted forward: 02:30 is read as 03:30 EDT, 07:30 UTC.
    assert stored["dst-2"][0] == datetime(2021, 3, 14, 7, 30, tzinfo=UTC)
    assert as_utc(stored["dst-2"][1]) == datetime(2021, 3, 14, 7, 45, tzinfo=UTC)
    assert stored["dst-3"][0] == datetime(2021, 7, 1, 16, 0, tzinfo=UTC)


def test_rejections_name_line_and_column(engine, tmp_path):
    tenant = onboard_data(engine, city_manifest("boston", "America/New_York"))
    ctx = TenantContext(tenant.id, actor="test")
    rows = (
        boston_row("ok-1", "2022-01-01 10:00:00")
        + boston_row("bad-date", "01/02/2022")
        + "bad-place,2022-01-01 10:00:00,,Open, ,T,Needle Pickup,,40.0,-75.0,x\n"
        + "no-place,2022-01-01 10:00:00,,Open, ,T,Needle Pickup, , , ,x\n"
        + boston_row("bad-status", "2022-01-01 10:00:00", status="Reopened")
    )
    path = tmp_path / "mixed.csv"
    path.write_text(BOSTON_HEADER + rows, encoding="utf-8")

    report = run_import(ctx, tenant, FORMATS["boston-csv"], path, engine=engine)
    assert report.imported == 1
    assert dict(report.rejected_by_reason) == {
        "invalid_time": 1,
        "outside_service_area": 1,
        "missing_location": 1,
        "unknown_status": 1,
    }
    listed = [(r.position, r.column, r.reason) for r in report.rejections]
    assert listed == [
        (3, "open_dt", "invalid_time"),
        (4, "coordinates", "outside_service_area"),
        (5, "coordinates", "missing_location"),
        (6, "case_status", "unknown_status"),
    ]
    assert "'01/02/2022'" in report.rejections[0].message


def test_requests_closed_before_retention_keep_no_personal_data(engine, tmp_path):
    tenant = onboard_data(engine, city_manifest("boston", "America/New_York"))
    path = tmp_path / "old-and-new.csv"
    this_year = datetime.now(UTC).year
    path.write_text(
        BOSTON_HEADER
        + boston_row("101", "2015-03-02 09:00:00", "2015-03-04 10:00:00", "Closed")
        + boston_row("102", f"{this_year}-01-02 09:00:00", f"{this_year}-01-03 10:00:00", "Closed")
        + boston_row("103", "2015-03-02 09:00:00"),
        encoding="utf-8",
    )

    report = run_import(
        TenantContext(tenant.id), tenant, FORMATS["boston-csv"], path, engine=engine
    )

    assert report.imported == 3
    assert report.past_retention == 1
    assert report.as_dict()["past_retention"] == 1
    with unit_of_work(TenantContext(tenant.id), engine=engine, write=False) as session:
        rows = {
            row.source_id: row
            for row in session.scalars(select(ServiceRequest).order_by(ServiceRequest.source_id))
        }
    old, recent, still_open = rows["101"], rows["102"], rows["103"]
    assert old.description_enc is None
    assert old.address_enc is None
    assert old.dek_version is None
    # The cell is finer than open data publishes; the purge would clear it too.
    assert old.h3_cell is None
    assert old.status == "closed"
    assert (old.lat, old.lon) != (None, None)
    # Closed recently, or never closed: the retention clock has not run out.
    assert recent.description_enc is not None and recent.address_enc is not None
    assert still_open.description_enc is not None
