"""POST requests in batches: several calls in one transaction, on both databases."""

from __future__ import annotations

import threading
import uuid

import h3
import psycopg
import pytest
from open311_support import INSIDE, OUTSIDE, onboard_tenant
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from hub.core.db import get_engine, unit_of_work
from hub.core.errors import InvalidInput
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import TenantContext
from hub.open311.intake import write_batch
from hub.requests import geo, routing, service
from hub.requests.duplicates import DEFAULT_RADIUS_M
from hub.requests.models import Delivery, ServiceRequest, StatusEvent
from hub.requests.schemas import IntakeData, IntakeJob, IntakeResult
from tenants.registry import get_tenant

# About 200 m north of INSIDE: outside the 50 m duplicate radius.
FAR = (INSIDE[0] + 0.0018, INSIDE[1])


@pytest.fixture
def city(hub_db):
    # The PostgreSQL database serves the whole session, so each test onboards a new city.
    engine = get_engine(hub_db)
    tenant_id = f"batch-{uuid.uuid4().hex[:8]}"
    onboard_tenant(engine, tenant_id)
    return engine, get_tenant(tenant_id, engine=engine), TenantContext(tenant_id, actor="test")


def _job(ctx, point=INSIDE, **overrides) -> IntakeJob:
    values = {"service_code": "pothole", "lat": point[0], "lon": point[1]}
    values["attributes"] = {"depth": "4"}
    values.update(overrides)
    return IntakeJob(ctx=ctx, data=IntakeData(**values), language="es")


def _stored(engine, ctx, request_id: str) -> ServiceRequest:
    with unit_of_work(ctx, engine=engine) as session:
        return service.get_request(session, ctx, request_id)


def test_batch_stores_every_valid_call(city):
    engine, tenant, ctx = city
    jobs = [_job(ctx), _job(ctx, point=OUTSIDE), _job(ctx, point=FAR)]
    first, rejected, third = write_batch(tenant, jobs)

    assert isinstance(first, IntakeResult)
    assert isinstance(third, IntakeResult)
    assert isinstance(rejected, InvalidInput)
    assert rejected.code == "outside_service_area"
    assert first.service_notice == third.service_notice
    for result in (first, third):
        with unit_of_work(ctx, engine=engine) as session:
            request_id = result.service_request_id
            assert session.get(ServiceRequest, request_id) is not None
            events = session.scalars(
                select(StatusEvent).where(StatusEvent.request_id == request_id)
            )
            assert [event.status for event in events] == ["submitted"]
            deliveries = session.scalars(select(Delivery).where(Delivery.request_id == request_id))
            assert len(list(deliveries)) == 1
    with unit_of_work(ctx, engine=engine) as session:
        messages = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.tenant_id == tenant.id)
            .order_by(OutboxMessage.id)
        )
        routed = [(message.task, message.kwargs) for message in messages]
    # One routing message for the batch, naming the stored requests only.
    assert routed == [
        (
            routing.ROUTE_BATCH_TASK,
            {
                "request_ids": [first.service_request_id, third.service_request_id],
                "tenant_id": tenant.id,
            },
        )
    ]


def test_batch_links_duplicates_in_order(city):
    """The first call of a spot links to nothing, the next ones to it, and a call elsewhere
    stays alone, as when the calls come one after the other."""
    engine, tenant, ctx = city
    first, second, elsewhere, third = write_batch(
        tenant, [_job(ctx), _job(ctx), _job(ctx, point=FAR), _job(ctx)]
    )
    original = first.service_request_id

    assert _stored(engine, ctx, original).duplicate_of is None
    assert _stored(engine, ctx, second.service_request_id).duplicate_of == original
    assert _stored(engine, ctx, third.service_request_id).duplicate_of == original
    assert _stored(engine, ctx, elsewhere.service_request_id).duplicate_of is None


def test_batch_links_to_older_stored_request(city):
    engine, tenant, ctx = city
    [stored] = write_batch(tenant, [_job(ctx, point=FAR)])
    other_service = _job(ctx, point=FAR, service_code="graffiti", attributes={})
    first, second, unrelated = write_batch(
        tenant, [_job(ctx, point=FAR), _job(ctx, point=FAR), other_service]
    )

    assert _stored(engine, ctx, first.service_request_id).duplicate_of == (
        stored.service_request_id
    )
    assert _stored(engine, ctx, second.service_request_id).duplicate_of == (
        stored.service_request_id
    )
    assert _stored(engine, ctx, unrelated.service_request_id).duplicate_of is None


def _north(metres: float) -> tuple[float, float]:
    """A point `metres` north of INSIDE, in a storage cell that the search around INSIDE reads."""
    return (INSIDE[0] + metres / 111_195.0, INSIDE[1])


def test_link_skips_older_request_beyond_radius(city):
    """An older open request in a searched cell but beyond the radius is passed over for a
    newer one within it (PostgreSQL checks the distance in its query)."""
    engine, tenant, ctx = city
    [beyond] = write_batch(tenant, [_job(ctx, point=_north(-60))])
    [within] = write_batch(tenant, [_job(ctx, point=_north(30))])
    [new] = write_batch(tenant, [_job(ctx)])
    [alone] = write_batch(tenant, [_job(ctx, point=_north(85))])

    assert _stored(engine, ctx, within.service_request_id).duplicate_of is None
    assert _stored(engine, ctx, new.service_request_id).duplicate_of == within.service_request_id
    assert _stored(engine, ctx, alone.service_request_id).duplicate_of is None
    assert _stored(engine, ctx, beyond.service_request_id).duplicate_of is None


def test_link_searches_on_past_request_without_point(city):
    """An older request stored without a point (its service's location rule published none
    then) whose cell centre is beyond the radius does not hide a match behind it."""
    engine, tenant, ctx = city
    [pointless] = write_batch(tenant, [_job(ctx)])
    with unit_of_work(ctx, engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == pointless.service_request_id)
            .values(lat=None, lon=None)
        )
        cell = session.get(ServiceRequest, pointless.service_request_id).h3_cell
    assert geo.distance_m(*INSIDE, *h3.cell_to_latlng(cell)) > DEFAULT_RADIUS_M
    [within] = write_batch(tenant, [_job(ctx, point=_north(22))])
    [new] = write_batch(tenant, [_job(ctx)])

    assert _stored(engine, ctx, new.service_request_id).duplicate_of == within.service_request_id


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_reports_of_one_spot_link(hub_db):
    """Two API processes file one spot at the same moment: the second transaction's search
    waits for the first one's commit and links to its request (PostgreSQL)."""
    engine = get_engine(hub_db)
    tenant_id = f"race-{uuid.uuid4().hex[:8]}"
    onboard_tenant(engine, tenant_id)
    tenant = get_tenant(tenant_id, engine=engine)
    ctx = TenantContext(tenant_id, actor="test")
    second: list = []

    with unit_of_work(ctx, engine=engine) as session:
        [first] = service.intake_batch(session, tenant, [_job(ctx)])
        # The first transaction keeps its search areas locked until it commits.
        other = threading.Thread(target=lambda: second.extend(write_batch(tenant, [_job(ctx)])))
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive()
    other.join(timeout=30)

    assert isinstance(first, IntakeResult)
    [result] = second
    assert _stored(engine, ctx, result.service_request_id).duplicate_of == (
        first.service_request_id
    )


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (psycopg.errors.DeadlockDetected("deadlock"), True),
        (psycopg.OperationalError("gone"), False),
    ],
)
def test_batch_failure_retry_rule(city, monkeypatch, error, retried):
    """A deadlock fails the shared transaction only, and each call then runs alone. A lost
    database fails every call at once instead of once per call."""
    _engine, tenant, ctx = city
    run_batch = service.intake_batch

    def failing(session, tenant, jobs):
        if len(jobs) > 1:
            raise OperationalError(None, None, error)
        return run_batch(session, tenant, jobs)

    monkeypatch.setattr(service, "intake_batch", failing)
    outcomes = write_batch(tenant, [_job(ctx), _job(ctx, point=FAR)])

    expected = IntakeResult if retried else OperationalError
    assert [type(outcome) for outcome in outcomes] == [expected, expected]
