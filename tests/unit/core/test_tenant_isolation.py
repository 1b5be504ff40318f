"""Central tenant enforcement: loader criteria everywhere, row-level security on PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, aliased

from hub.core.db import execute_in_one_round_trip, get_engine, readable_tenant, unit_of_work
from hub.core.errors import Forbidden
from hub.core.ids import tracking_code
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests.duplicates import link_duplicates
from hub.requests.geo import storage_cell
from hub.requests.models import ServiceRequest, StatusEvent
from tenants.models import Tenant


def _seed(engine) -> tuple[str, str]:
    a, b = f"a{tracking_code(6).lower()}", f"b{tracking_code(6).lower()}"
    with unit_of_work(SystemContext("test seed"), engine=engine) as s:
        for tid in (a, b):
            s.add(
                Tenant(
                    id=tid,
                    jurisdiction_id=f"{tid}.example.org",
                    name=tid,
                    timezone="UTC",
                    languages=["en"],
                    default_language="en",
                    manifest={},
                )
            )
        s.flush()
        for tid in (a, b):
            rid = tracking_code()
            s.add(ServiceRequest(id=rid, tenant_id=tid, service_code="pothole"))
            s.flush()
            s.add(
                StatusEvent(
                    tenant_id=tid, request_id=rid, status="submitted", actor="t", channel="api"
                )
            )
    return a, b


@pytest.fixture
def seeded(db_url):
    engine = get_engine(db_url)
    a, b = _seed(engine)
    return engine, a, b


def test_select_sees_own_tenant_only(seeded):
    engine, a, b = seeded
    with unit_of_work(TenantContext(a), engine=engine) as s:
        tenants = set(s.scalars(select(ServiceRequest.tenant_id)).all())
    assert tenants == {a}


def test_explicit_join_and_alias_filtered(seeded):
    engine, a, _ = seeded
    other = aliased(StatusEvent)
    with unit_of_work(TenantContext(a), engine=engine) as s:
        rows = s.execute(
            select(ServiceRequest.tenant_id, other.tenant_id).join(
                other, other.request_id == ServiceRequest.id
            )
        ).all()
    assert rows
    assert all(r == (a, a) for r in rows)


def test_subquery_aggregate_filtered(seeded):
    engine, a, _ = seeded
    with unit_of_work(TenantContext(a), engine=engine) as s:
        count = s.scalar(select(func.count()).select_from(ServiceRequest))
        in_subquery = s.scalars(
            select(StatusEvent.tenant_id).where(
                StatusEvent.request_id.in_(select(ServiceRequest.id))
            )
        ).all()
    assert count == 1
    assert set(in_subquery) == {a}


def test_bulk_update_and_delete_scoped(seeded):
    engine, a, b = seeded
    with unit_of_work(TenantContext(a), engine=engine) as s:
        s.execute(update(ServiceRequest).values(status="closed"))
        s.execute(delete(StatusEvent))
    with unit_of_work(SystemContext("check"), engine=engine) as s:
        b_status = s.scalars(
            select(ServiceRequest.status).where(ServiceRequest.tenant_id == b)
        ).all()
        b_events = s.scalar(
            select(func.count()).select_from(StatusEvent).where(StatusEvent.tenant_id == b)
        )
    assert b_status == ["submitted"]
    assert b_events == 1


def test_write_for_other_tenant_rejected(seeded):
    engine, a, b = seeded
    with pytest.raises(Forbidden), unit_of_work(TenantContext(a), engine=engine) as s:
        s.add(ServiceRequest(id=tracking_code(), tenant_id=b, service_code="x"))
        s.flush()


def test_session_without_scope_rejected(seeded):
    engine, _, _ = seeded
    from hub.core.db import _factory

    session = _factory(engine)()
    with pytest.raises(Forbidden):
        session.scalars(select(ServiceRequest)).all()
    session.close()


def test_row_level_security_on_raw_sql(pg_url):
    """Hand-written SQL bypasses loader criteria; the PostgreSQL policy still filters it."""
    engine = get_engine(pg_url)
    a, b = _seed(engine)
    with unit_of_work(TenantContext(a), engine=engine) as s:
        raw = s.execute(text("SELECT DISTINCT tenant_id FROM service_requests")).scalars().all()
        inserted_elsewhere = None
        try:
            with s.begin_nested():
                s.execute(
                    text(
                        "INSERT INTO service_requests (id, tenant_id, service_code, status, "
                        "requested_at, updated_at, channel, source) VALUES "
                        "(:id, :t, 'x', 'submitted', now(), now(), 'api', 'open311')"
                    ),
                    {"id": tracking_code(), "t": b},
                )
            inserted_elsewhere = True
        except Exception:  # noqa: BLE001 - the policy's WITH CHECK raises
            inserted_elsewhere = False
    assert raw == [a]
    assert inserted_elsewhere is False


def test_tenant_setting_does_not_leak_between_transactions(pg_url):
    engine = get_engine(pg_url)
    a, _ = _seed(engine)
    with unit_of_work(TenantContext(a), engine=engine) as s:
        s.execute(text("SELECT 1"))
    with engine.connect() as conn:
        value = conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar()
        role = conn.execute(text("SELECT current_user")).scalar()
    assert value in (None, "")
    assert role != "hub_app"


def _count_requests(engine, tenant_id: str) -> int:
    with unit_of_work(SystemContext("test read"), engine=engine) as s:
        return s.scalar(
            select(func.count())
            .select_from(ServiceRequest)
            .where(ServiceRequest.tenant_id == tenant_id)
        )


_INSERT_REQUEST = (
    "INSERT INTO service_requests (id, tenant_id, service_code, status, requested_at, "
    "updated_at, channel, source) VALUES {rows}"
)
_ROW = "(%({n})s, %({t})s, 'x', 'submitted', now(), now(), 'api', 'open311')"


def insert_requests(*tenants: str) -> tuple[str, dict[str, str]]:
    """Return one INSERT of a request per tenant in `tenants`, and its parameters."""
    rows = ", ".join(_ROW.format(n=f"id{i}", t=f"t{i}") for i in range(len(tenants)))
    params = {}
    for i, tenant in enumerate(tenants):
        params[f"id{i}"] = tracking_code()
        params[f"t{i}"] = tenant
    return _INSERT_REQUEST.format(rows=rows), params


def test_one_round_trip_scoped_to_tenant(pg_url):
    """The one-round-trip path sets the same scope as a session: reads see one tenant, and a
    write for another fails as SQLAlchemy's error with nothing of it stored."""
    engine = get_engine(pg_url)
    a, b = _seed(engine)
    seen = execute_in_one_round_trip(
        TenantContext(a), "SELECT tenant_id FROM service_requests", {}, engine=engine
    )
    assert {row[0] for row in seen} == {a}

    execute_in_one_round_trip(TenantContext(a), *insert_requests(a), engine=engine)
    assert _count_requests(engine, a) == 2

    with pytest.raises(DBAPIError):
        execute_in_one_round_trip(TenantContext(a), *insert_requests(a, b), engine=engine)
    assert _count_requests(engine, a) == 2
    assert _count_requests(engine, b) == 1


def test_one_round_trip_failure_leaves_clean_connection(pg_url):
    engine = get_engine(pg_url)
    a, b = _seed(engine)
    with pytest.raises(DBAPIError):
        execute_in_one_round_trip(TenantContext(a), *insert_requests(b), engine=engine)
    # The pool hands the connection on outside any transaction, back in the driver's usual
    # mode, and without the tenant setting or the role.
    pooled = engine.raw_connection()
    try:
        assert pooled.driver_connection.autocommit is False
        assert pooled.driver_connection.info.transaction_status == 0
    finally:
        pooled.close()
    with engine.connect() as conn:
        value = conn.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar()
        role = conn.execute(text("SELECT current_user")).scalar()
    assert value in (None, "")
    assert role != "hub_app"


def test_one_round_trip_unreachable_server_is_operational_error():
    engine = create_engine(
        "postgresql+psycopg://hub@127.0.0.1:9/hub", connect_args={"connect_timeout": 2}
    )
    with pytest.raises(OperationalError):
        execute_in_one_round_trip(TenantContext("a"), "SELECT 1", {}, engine=engine)


def test_readable_tenant_follows_the_session_scope(seeded):
    engine, a, b = seeded
    with unit_of_work(TenantContext(a), engine=engine) as s:
        assert readable_tenant(s, a) == a
        assert readable_tenant(s, b) is None
    with unit_of_work(SystemContext("test"), engine=engine) as s:
        assert readable_tenant(s, b) == b
    with Session(engine) as s, pytest.raises(Forbidden):
        readable_tenant(s, a)


def test_duplicate_search_sees_only_the_session_tenant(seeded):
    # The search runs as a Core statement past the ORM's criteria; in another tenant's
    # session it finds nothing, as an ORM query would.
    engine, a, _b = seeded
    lat, lon = 42.3601, -71.0589
    rid = tracking_code()
    with unit_of_work(TenantContext(a), engine=engine) as s:
        s.add(
            ServiceRequest(
                id=rid,
                tenant_id=a,
                service_code="streetlight",
                lat=lat,
                lon=lon,
                h3_cell=storage_cell(lat, lon),
            )
        )
    owner = SimpleNamespace(id=a)

    def linked(scope: TenantContext) -> str | None:
        new = {"id": "NEW", "service_code": "streetlight", "duplicate_of": None}
        with unit_of_work(scope, engine=engine) as s:
            link_duplicates(s, owner, [new], [(lat, lon)])
        return new["duplicate_of"]

    assert linked(TenantContext(a)) == rid
    for tenant in (_b, f"c{tracking_code(6).lower()}"):
        assert linked(TenantContext(tenant)) is None
