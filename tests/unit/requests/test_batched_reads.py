"""Batched public reads of one request on PostgreSQL: the GET requests/{id} path."""

from __future__ import annotations

import asyncio

import pytest
from open311_support import INSIDE, onboard_tenant
from sqlalchemy import create_engine
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from hub.core.db import AsyncReader, async_reader, close_async_readers, get_engine, unit_of_work
from hub.core.tenancy import TenantContext
from hub.requests import queries, service
from hub.requests.schemas import IntakeData
from tenants.registry import get_tenant


def _submit(engine, tenant, ctx) -> str:
    lat, lon = INSIDE
    data = IntakeData(service_code="pothole", lat=lat, lon=lon, attributes={"depth": "4"})
    with unit_of_work(ctx, engine=engine) as session:
        return service.submit_request(session, ctx, tenant, data).id


@pytest.fixture
def two_cities(pg_url):
    engine = get_engine(pg_url)
    ids = {}
    for name in ("north", "south"):
        onboard_tenant(engine, name)
        tenant = get_tenant(name, engine=engine)
        ctx = TenantContext(name, actor="test")
        ids[name] = [_submit(engine, tenant, ctx) for _ in range(3)]
    return engine, ids


def _read_all(engine, reads: list[tuple[str, str]], *, reject_with=None) -> tuple[list, list[int]]:
    """Read every (tenant, request id) pair at once; return the rows or errors, and the number
    of ids of each query. `reject_with(params)` may raise an error in place of a query."""
    sizes: list[int] = []

    async def main():
        reader = async_reader(engine)
        fetch = reader.fetch

        async def counted(scope, statement, params):
            if reject_with is not None:
                reject_with(params)
            sizes.append(len(params.get("request_ids", [params.get("request_id")])))
            return await fetch(scope, statement, params)

        reader.fetch = counted
        try:
            return await asyncio.gather(
                *(
                    queries.public_request_batched(
                        TenantContext(tenant, actor="test"), request_id, engine=engine
                    )
                    for tenant, request_id in reads
                ),
                return_exceptions=True,
            )
        finally:
            await close_async_readers()

    return asyncio.run(main()), sizes


def test_concurrent_reads_share_one_query_per_tenant(two_cities):
    engine, ids = two_cities
    reads = [("north", i) for i in ids["north"]] + [("south", i) for i in ids["south"]]
    # The same id twice, an unknown id and another city's id.
    reads += [("north", ids["north"][0]), ("north", "NOPE"), ("north", ids["south"][0])]
    rows, sizes = _read_all(engine, reads)

    found = [row.id if row is not None else None for row in rows]
    assert found[:6] == ids["north"] + ids["south"]
    assert found[6:] == [ids["north"][0], None, None]
    assert all(row.tenant_id == tenant for row, (tenant, _) in zip(rows[:7], reads, strict=False))
    # One query per tenant with each id waiting for it once: 3 + 2 for north, 3 for south.
    assert sorted(sizes) == [3, 5]


def test_ids_no_request_can_have_are_not_sent(two_cities):
    engine, _ = two_cities
    rows, sizes = _read_all(engine, [("north", "A" * 17), ("north", "A\x00B"), ("north", "\ud800")])
    assert rows == [None, None, None]
    assert sizes == []


def test_failed_batch_retries_each_id(two_cities):
    """A statement error that is not a lost connection fails only the id that causes it."""
    engine, ids = two_cities

    def reject_with(params):
        if "request_ids" in params or params["request_id"] == ids["north"][1]:
            raise DataError(None, None, Exception("rejected"))

    (first, second, third), _ = _read_all(
        engine, [("north", request_id) for request_id in ids["north"]], reject_with=reject_with
    )
    assert first.id == ids["north"][0]
    assert isinstance(second, DataError)
    assert third.id == ids["north"][2]


def test_reader_connection_is_clean_after_a_failed_statement(two_cities):
    engine, ids = two_cities

    async def main():
        reader = AsyncReader(engine, size=1)
        ctx = TenantContext("north", actor="test")
        try:
            with pytest.raises(DBAPIError):
                await reader.fetch(ctx, "SELECT 1 / 0", {})
            assert len(reader._idle) == 1  # kept, its transaction rolled back
            statement = "SELECT count(*) FROM service_requests WHERE id = %(id)s"
            return await reader.fetch(ctx, statement, {"id": ids["north"][0]})
        finally:
            await reader.aclose()

    assert asyncio.run(main()) == [(1,)]


def test_reader_scope_ends_with_its_transaction(two_cities):
    engine, _ = two_cities

    async def main():
        reader = AsyncReader(engine, size=1)
        try:
            await reader.fetch(TenantContext("north", actor="test"), "SELECT 1", {})
            cursor = await reader._idle[0].execute(
                "SELECT current_setting('app.tenant_id', true), current_user"
            )
            return await cursor.fetchone()
        finally:
            await reader.aclose()

    tenant, role = asyncio.run(main())
    assert tenant in (None, "")
    assert role != "hub_app"


def test_unreachable_server_fails_every_read():
    engine = create_engine("postgresql+psycopg://hub@127.0.0.1:9/hub")
    results, _ = _read_all(engine, [("north", f"R{i}") for i in range(3)])
    assert all(isinstance(result, OperationalError) for result in results)


def test_reader_reconnects_after_the_server_ended_its_connections(two_cities):
    """A read on connections the server ended fails with the error a session gets, and the
    reader opens new connections for the next read."""
    engine, _ = two_cities
    ctx = TenantContext("north", actor="test")
    statement = "SELECT pg_backend_pid()"

    async def main():
        reader = AsyncReader(engine, size=2)
        try:
            first, second = await asyncio.gather(
                reader.fetch(ctx, "SELECT pg_backend_pid(), pg_sleep(0.05)", {}),
                reader.fetch(ctx, "SELECT pg_backend_pid(), pg_sleep(0.05)", {}),
            )
            with engine.connect() as admin:
                for pid in (first[0][0], second[0][0]):
                    admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            with pytest.raises(OperationalError):
                await reader.fetch(ctx, statement, {})
            assert reader._idle == []  # the other ended connection was closed too
            return await reader.fetch(ctx, statement, {})
        finally:
            await reader.aclose()

    (pid,) = asyncio.run(main())[0]
    assert pid > 0


def test_reader_statement_timeout(two_cities):
    engine, _ = two_cities

    async def main():
        reader = AsyncReader(engine, size=1, statement_timeout_ms=100)
        ctx = TenantContext("north", actor="test")
        try:
            with pytest.raises(OperationalError, match="statement timeout"):
                await reader.fetch(ctx, "SELECT pg_sleep(5)", {})
            return await reader.fetch(ctx, "SELECT 1", {})
        finally:
            await reader.aclose()

    assert asyncio.run(main()) == [(1,)]
