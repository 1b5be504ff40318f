"""The request services on the embedded database: intake, updates, queries, degradation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from open311_support import INSIDE, onboard_tenant

from hub.core.db import get_engine, unit_of_work
from hub.core.errors import Conflict, InvalidInput, InvalidInputGroup, NotFound
from hub.core.tenancy import TenantContext
from hub.requests import queries, service
from hub.requests.duplicates import find_regional_duplicate
from hub.requests.health import IntakeDegradedCheck
from hub.requests.schemas import IntakeData, RequestQuery
from hub.requests.validation import check_intake
from tenants.registry import get_tenant


@pytest.fixture
def alpha(sqlite_url):
    engine = get_engine(sqlite_url)
    onboard_tenant(engine, "alpha")
    return engine, get_tenant("alpha", engine=engine), TenantContext("alpha", actor="test")


def _data(**overrides) -> IntakeData:
    lat, lon = INSIDE
    values = {"service_code": "pothole", "lat": lat, "lon": lon, "attributes": {"depth": "4"}}
    values.update(overrides)
    return IntakeData(**values)


def _submit(engine, tenant, ctx, **overrides) -> str:
    with unit_of_work(ctx, engine=engine) as session:
        return service.submit_request(session, ctx, tenant, _data(**overrides)).id


def test_submit_rejects_other_tenant_context(alpha):
    engine, tenant, _ = alpha
    other = TenantContext("beta", actor="test")
    with pytest.raises(NotFound), unit_of_work(other, engine=engine) as session:
        service.submit_request(session, other, tenant, _data())


def test_submit_reports_every_problem(alpha):
    engine, tenant, ctx = alpha
    data = _data(
        description="PRIVATE-DESCRIPTION " + "x" * 4000,
        first_name="<b>PRIVATE-NAME</b>",
        attributes={},
    )
    with pytest.raises(InvalidInputGroup) as caught, unit_of_work(ctx, engine=engine) as session:
        service.submit_request(session, ctx, tenant, data)

    assert caught.value.messages == (
        "description is 4020 characters long; the maximum is 4000",
        "first_name must be plain text without HTML markup",
        "attribute[depth] is required for service pothole",
    )
    assert [error.field for error in caught.value.errors] == [
        "description",
        "first_name",
        "attribute[depth]",
    ]


def test_intake_checks_contacts_with_other_fields(alpha):
    _, tenant, _ = alpha
    data = _data(
        last_name="Love\x00lace", email="PRIVATE-EMAIL", phone="PRIVATE-PHONE", media_url="ftp://x"
    )
    with pytest.raises(InvalidInputGroup) as caught:
        check_intake(tenant, tenant.services["pothole"], data)

    assert [error.field for error in caught.value.errors] == [
        "last_name",
        "email",
        "phone",
        "media_url",
    ]
    assert [error.code for error in caught.value.errors][1:3] == ["invalid_email", "invalid_phone"]
    assert "PRIVATE" not in caught.value.message


def test_intake_returns_normalized_contacts(alpha):
    _, tenant, _ = alpha
    data = _data(email=" Resident@Example.com ", phone="(215) 555-0100")

    attributes, email, phone = check_intake(tenant, tenant.services["pothole"], data)

    assert attributes == {"depth": "4"}
    assert email == "resident@example.com"
    assert phone == "+12155550100"


def test_form_location_error_not_repeated(alpha):
    _, tenant, _ = alpha
    form_error = InvalidInput("lat must be a decimal number", code="invalid_location")
    data = _data(lat=None, description="<i>hole</i>", form_errors=[form_error])

    with pytest.raises(InvalidInputGroup) as caught:
        check_intake(tenant, tenant.services["pothole"], data)

    # Without the form error, long without lat would add "lat and long must be given together".
    assert caught.value.messages == (
        "lat must be a decimal number",
        "description must be plain text without HTML markup",
    )


def test_importer_fields_kept(alpha):
    engine, tenant, ctx = alpha
    filed = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    request_id = _submit(
        engine, tenant, ctx, source="nyc", source_id="123", requested_at=filed, channel="import"
    )
    with unit_of_work(ctx, engine=engine) as session:
        row = service.get_request(session, ctx, request_id)
        assert row.source_id == "123"
        assert row.requested_at.replace(tzinfo=UTC) == filed
        assert row.expected_at.replace(tzinfo=UTC) == filed + timedelta(hours=8)


def test_status_update_twice_changes_nothing(alpha):
    engine, tenant, ctx = alpha
    request_id = _submit(engine, tenant, ctx)
    for expected_new in (True, False):
        with unit_of_work(ctx, engine=engine) as session:
            _, created = service.post_status_update(
                session, ctx, request_id, "closed", resolution="fixed", update_id="same"
            )
            assert created is expected_new
    with unit_of_work(ctx, engine=engine) as session:
        events = queries.events_by_request(session, ctx, [request_id])[request_id]
        row = service.get_request(session, ctx, request_id)
        assert [e.status for e in events] == ["submitted", "closed"]
        assert row.closed_at is not None


@pytest.mark.parametrize(
    "steps,error",
    [
        ([("closed", None)], InvalidInput),
        ([("in_progress", "fixed")], InvalidInput),
        ([("closed", "fixed"), ("on_hold", None)], Conflict),
        ([("in_progress", None), ("acknowledged", None)], Conflict),
        ([("deleted", None)], InvalidInput),
    ],
)
def test_invalid_transitions(alpha, steps, error):
    engine, tenant, ctx = alpha
    request_id = _submit(engine, tenant, ctx)
    *allowed, last = steps
    for status, resolution in allowed:
        with unit_of_work(ctx, engine=engine) as session:
            service.post_status_update(session, ctx, request_id, status, resolution=resolution)
    with pytest.raises(error), unit_of_work(ctx, engine=engine) as session:
        service.post_status_update(session, ctx, request_id, last[0], resolution=last[1])


def test_query_window_default_and_limit(alpha):
    engine, tenant, ctx = alpha
    old = _submit(engine, tenant, ctx, requested_at=datetime.now(UTC) - timedelta(days=91))
    new = _submit(engine, tenant, ctx, lat=INSIDE[0] + 0.01)
    with unit_of_work(ctx, engine=engine, write=False) as session:
        default = [r.id for r in queries.query_requests(session, ctx, RequestQuery())]
        by_id = [r.id for r in queries.query_requests(session, ctx, RequestQuery([old]))]
    assert default == [new]
    assert by_id == [old]


def test_date_window_rules():
    now = datetime(2024, 6, 1, tzinfo=UTC)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert queries.date_window(None, None, now) == (now - timedelta(days=90), now)
    assert queries.date_window(start, None, now) == (start, start + timedelta(days=90))
    with pytest.raises(InvalidInput):
        queries.date_window(start, start + timedelta(days=91), now)


def test_regional_duplicate_across_tenants(sqlite_url):
    engine = get_engine(sqlite_url)
    onboard_tenant(engine, "west")
    onboard_tenant(engine, "east")
    west, east = get_tenant("west", engine=engine), get_tenant("east", engine=engine)
    west_ctx = TenantContext("west", actor="test")
    original = _submit(engine, west, west_ctx)
    lat, lon = INSIDE
    found = find_regional_duplicate(
        engine, east, ["west", "east"], "pothole", lat + 0.0001, lon, exclude="NEWID"
    )
    far = find_regional_duplicate(
        engine, east, ["west", "east"], "pothole", lat + 0.01, lon, exclude="NEWID"
    )
    assert found == original
    assert far is None


def test_degraded_check_follows_relay_and_backlog():
    healthy = {"relay": True}
    counts = iter([10, 9000])
    check = IntakeDegradedCheck(
        lambda: healthy["relay"],
        backlog_threshold=100,
        cache_seconds=0,
        count_backlog=lambda: next(counts),
        run_count=lambda job: job(),
    )
    assert check() is False
    assert check() is True
    healthy["relay"] = False
    assert check() is True


def test_degraded_check_never_waits_for_the_count():
    """A slow backlog count (a database under strain) runs beside the caller, which goes on
    with the last count instead of waiting."""
    import threading
    import time

    release = threading.Event()

    def slow_count() -> int:
        release.wait(10)
        return 9000

    check = IntakeDegradedCheck(
        lambda: True, backlog_threshold=100, cache_seconds=0, count_backlog=slow_count
    )
    started = time.monotonic()
    assert check() is False
    assert time.monotonic() - started < 1
    release.set()
    deadline = time.monotonic() + 5
    while check() is False and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check() is True
