"""`hub requests redeliver` and the delivery gauges, after an agency outage outlasts the
retry window."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from typing import Any

import pytest
from pipeline_support import add_request, add_tenant
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from hub.api.observability import DELIVERIES, DELIVERY_OLDEST_RETRY, delivery_reader
from hub.cli.demo.receiver import AgencyReceiver
from hub.cli.main import app
from hub.core.clock import as_utc, utcnow
from hub.core.db import unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import routing
from hub.requests.models import Delivery
from hub.requests.redelivery import REDELIVER_ACTION
from hub.requests.tasks import route
from hub.requests.webhook import SendResult
from privacy.models import AuditEntry
from tenants.manifest import example_paths, load_manifest
from tenants.models import Tenant
from tenants.registry import invalidate_cache


def _give_manifest(engine: Engine, tenant_id: str) -> None:
    """Store an example city's manifest on a test tenant, so the CLI can look the tenant up."""
    path = next(p for p in example_paths() if p.name == "boston.yaml")
    manifest = load_manifest(path).model_dump(mode="json")
    manifest["id"] = tenant_id
    manifest["jurisdiction_id"] = f"{tenant_id}.example.org"
    with unit_of_work(SystemContext("test: manifest"), engine=engine) as session:
        session.get(Tenant, tenant_id).manifest = manifest
    invalidate_cache()


def _run(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["requests", "redeliver", *args, "--json"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout)


def _states(engine: Engine, request_id: str) -> dict[str, str]:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        rows = session.scalars(select(Delivery).where(Delivery.request_id == request_id))
        return {row.destination: row.state for row in rows}


def _route_queued(engine: Engine) -> None:
    """Run the routing tasks queued in the outbox, as a worker would once they are due."""
    with unit_of_work(SystemContext("test: take the queued routing"), engine=engine) as session:
        messages = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.task == routing.ROUTE_TASK,
                OutboxMessage.published_at.is_(None),
                OutboxMessage.available_at <= utcnow(),
            )
        ).all()
        for message in messages:
            message.published_at = utcnow()
        queued = [dict(message.kwargs) for message in messages]
    for kwargs in queued:
        route(**kwargs)


def _audit_entries(engine: Engine, tenant_id: str) -> list[AuditEntry]:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        return list(
            session.scalars(
                select(AuditEntry).where(
                    AuditEntry.tenant_id == tenant_id,
                    AuditEntry.action == REDELIVER_ACTION,
                )
            )
        )


@pytest.fixture
def outage(configured_db: Engine, receiver: AgencyReceiver) -> tuple[str, str, str]:
    """A tenant whose `water` agency was down for a whole retry window, while `dpw` was up.

    Returns (tenant id, request id, path of the water agency on the receiver).
    """
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "water"])
    _give_manifest(configured_db, tenant_id)
    water = receiver.path_for(tenant_id, "water")
    receiver.fail_paths[water] = 503
    request_id = add_request(configured_db, tenant_id, ["dpw", "water"])
    assert route(request_id, tenant_id=tenant_id) == {"sent": 1, "retry": 1}
    with unit_of_work(SystemContext("test: the window ends"), engine=configured_db) as session:
        row = session.scalars(
            select(Delivery).where(
                Delivery.request_id == request_id, Delivery.destination == "water"
            )
        ).one()
        window = timedelta(seconds=routing.RETRY_WINDOW_SECONDS + 60)
        row.first_attempt_at = utcnow() - window
        row.next_attempt_at = utcnow() - timedelta(seconds=1)
    assert route(request_id, tenant_id=tenant_id) == {"dead": 1}
    # Mark the first retry message published, as the relay did before the agency came back.
    with unit_of_work(SystemContext("test: relay"), engine=configured_db) as session:
        for message in session.scalars(select(OutboxMessage)):
            message.published_at = message.published_at or utcnow()
    del receiver.fail_paths[water]
    return tenant_id, request_id, water


def test_redeliver_sends_dead_again(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    tenant_id, request_id, water = outage

    code, output = _run("--tenant", tenant_id)
    _route_queued(configured_db)

    assert code == 0
    assert output["deliveries"] == 1
    assert output["requests"] == 1
    assert output["agencies"] == [{"agency": "water", "deliveries": 1, "last_errors": ["HTTP 503"]}]
    assert _states(configured_db, request_id) == {"dpw": "sent", "water": "sent"}
    assert receiver.count_for(water) == 1
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 1
    (entry,) = _audit_entries(configured_db, tenant_id)
    assert entry.actor == "cli:operator"
    assert entry.details["deliveries"] == 1
    assert entry.details["agencies"] == ["water"]


def test_redeliver_twice_sends_once(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    tenant_id, request_id, water = outage

    first_code, first = _run("--tenant", tenant_id, "--agency", "water")
    second_code, second = _run("--tenant", tenant_id, "--agency", "water")
    _route_queued(configured_db)
    _route_queued(configured_db)

    assert (first_code, second_code) == (0, 0)
    assert first["deliveries"] == 1
    assert second["deliveries"] == 0
    assert second["agencies"] == []
    assert receiver.count_for(water) == 1
    assert sum(receiver.duplicates.values()) == 0
    assert _states(configured_db, request_id)["water"] == "sent"


def test_redeliver_leaves_sent_alone(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    tenant_id, request_id, _water = outage
    dpw = receiver.path_for(tenant_id, "dpw")

    code, output = _run("--tenant", tenant_id, "--agency", "dpw")
    _route_queued(configured_db)

    assert code == 0
    assert output["deliveries"] == 0
    assert receiver.count_for(dpw) == 1
    assert _states(configured_db, request_id) == {"dpw": "sent", "water": "dead"}


def test_redeliver_dry_run_changes_nothing(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    tenant_id, request_id, water = outage

    code, output = _run("--tenant", tenant_id, "--dry-run")
    _route_queued(configured_db)

    assert code == 0
    assert output["dry_run"] is True
    assert output["deliveries"] == 1
    assert _states(configured_db, request_id)["water"] == "dead"
    assert receiver.count_for(water) == 0
    assert _audit_entries(configured_db, tenant_id) == []


def test_redeliver_since_filters_by_death(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    tenant_id, request_id, _water = outage
    later = (utcnow() + timedelta(minutes=5)).isoformat()
    earlier = (utcnow() - timedelta(minutes=5)).isoformat()

    _, none_yet = _run("--tenant", tenant_id, "--since", later)
    _, found = _run("--tenant", tenant_id, "--since", earlier)

    assert none_yet["deliveries"] == 0
    assert found["deliveries"] == 1


@pytest.mark.parametrize("hours", [-5, 5], ids=["west", "east"])
def test_redeliver_since_honours_offset(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str], hours: int
) -> None:
    """The same instants written with another UTC offset select the same deliveries."""
    tenant_id, _request_id, _water = outage
    zone = timezone(timedelta(hours=hours))
    later = (utcnow() + timedelta(minutes=5)).astimezone(zone).isoformat()
    earlier = (utcnow() - timedelta(minutes=5)).astimezone(zone).isoformat()

    _, none_yet = _run("--tenant", tenant_id, "--since", later, "--dry-run")
    _, found = _run("--tenant", tenant_id, "--since", earlier, "--dry-run")

    assert none_yet["deliveries"] == 0
    assert found["deliveries"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since is not an ISO 8601 date-time"),
        (["--since", "2024-01-31T09:00:00"], "--since has no UTC offset"),
        (["--agency", "nosuch"], "agency 'nosuch' not found in the catalog of tenant"),
    ],
)
def test_redeliver_rejects_bad_input(
    outage: tuple[str, str, str], args: list[str], message: str
) -> None:
    tenant_id, _request_id, _water = outage

    code, output = _run("--tenant", tenant_id, *args)

    assert code == 2
    assert message in output["error"]


def test_redeliver_unknown_tenant(configured_db: Engine) -> None:
    code, output = _run("--tenant", "nosuch-city")

    assert code == 2
    assert "tenant 'nosuch-city' not found" in output["error"]


def test_delivery_gauges_per_agency(
    configured_db: Engine, outage: tuple[str, str, str], receiver: AgencyReceiver
) -> None:
    tenant_id, _request_id, _water = outage
    receiver.fail_paths[receiver.path_for(tenant_id, "dpw")] = 503
    retrying = add_request(configured_db, tenant_id, ["dpw"])
    route(retrying, tenant_id=tenant_id)

    samples = delivery_reader(configured_db)()

    counts = {labels: value for labels, value in samples[DELIVERIES.name] if labels[0] == tenant_id}
    ages = {
        labels: value
        for labels, value in samples[DELIVERY_OLDEST_RETRY.name]
        if labels[0] == tenant_id
    }
    assert counts == {(tenant_id, "water", "dead"): 1.0, (tenant_id, "dpw", "failed"): 1.0}
    assert list(ages) == [(tenant_id, "dpw")]
    assert 0 <= ages[(tenant_id, "dpw")] < 60


def test_deliveries_lists_retrying_and_dead(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    """While an agency is down its deliveries wait in `failed` long before one is `dead`."""
    tenant_id, _request_id, _water = outage
    receiver.fail_paths[receiver.path_for(tenant_id, "dpw")] = 503
    retrying = add_request(configured_db, tenant_id, ["dpw"])
    assert route(retrying, tenant_id=tenant_id) == {"retry": 1}

    result = CliRunner().invoke(app, ["requests", "deliveries", "--tenant", tenant_id, "--json"])

    assert result.exit_code == 0, result.stdout
    listed = json.loads(result.stdout)["agencies"]
    assert [(e["agency"], e["state"], e["deliveries"]) for e in listed] == [
        ("dpw", "failed", 1),
        ("water", "dead", 1),
    ]
    assert [e["last_errors"] for e in listed] == [["HTTP 503"], ["HTTP 503"]]
    assert all(e["oldest_first_attempt"] for e in listed)

    only_dpw = CliRunner().invoke(
        app, ["requests", "deliveries", "--tenant", tenant_id, "--agency", "dpw", "--json"]
    )
    assert [e["agency"] for e in json.loads(only_dpw.stdout)["agencies"]] == ["dpw"]


def test_outcome_from_before_redelivery_is_stale(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    """A worker that reports an attempt made before a redelivery, with the attempt number that
    the new window has reached again, changes nothing."""
    tenant_id, request_id, _water = outage
    ctx = TenantContext(tenant_id, actor="test")
    receiver.fail_paths[receiver.path_for(tenant_id, "water")] = 503
    with unit_of_work(ctx, engine=configured_db) as session:
        row = session.scalars(
            select(Delivery).where(
                Delivery.request_id == request_id, Delivery.destination == "water"
            )
        ).one()
        late = routing.Claim(
            delivery_id=row.id,
            request_id=request_id,
            destination="water",
            attempt=1,
            url="http://127.0.0.1:9/unused",
            secret="unused",
            body=b"{}",
            window_start=as_utc(row.first_attempt_at),
        )
    _run("--tenant", tenant_id)
    _route_queued(configured_db)
    assert _states(configured_db, request_id)["water"] == "failed"

    with unit_of_work(ctx, engine=configured_db) as session:
        outcome = routing.record_outcome(session, ctx, late, SendResult(ok=True, transient=False))

    assert outcome == "stale"
    assert _states(configured_db, request_id)["water"] == "failed"
