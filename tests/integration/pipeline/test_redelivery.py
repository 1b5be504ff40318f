"""`hub requests redeliver` and the delivery gauges, after an agency outage outlasts the
retry window."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
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
    result = CliRunner().invoke(app, ["--as", "dana", "requests", "redeliver", *args, "--json"])
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
    (water_entry,) = output["agencies"]
    assert water_entry["agency"] == "water"
    assert water_entry["deliveries"] == 1
    assert water_entry["last_errors"] == ["HTTP 503"]
    assert water_entry["first_due_at"] == water_entry["last_due_at"]
    assert _states(configured_db, request_id) == {"dpw": "sent", "water": "sent"}
    assert receiver.count_for(water) == 1
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == 1
    (entry,) = _audit_entries(configured_db, tenant_id)
    assert entry.actor == "cli:dana"
    assert entry.details["deliveries"] == 1
    assert entry.details["agencies"] == ["water"]
    assert entry.details["rate_per_minute"] == 60.0


def test_redeliver_keeps_delivery_id(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    tenant_id, request_id, water = outage
    with unit_of_work(SystemContext("test read"), engine=configured_db) as session:
        before = session.scalars(
            select(Delivery.public_id).where(
                Delivery.request_id == request_id, Delivery.destination == "water"
            )
        ).one()

    _run("--tenant", tenant_id)
    _route_queued(configured_db)

    (item,) = [item for item in receiver.snapshot() if item.path == water]
    assert item.delivery_id == before
    assert item.payload["delivery_id"] == before


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
            public_id=row.public_id,
            request_id=request_id,
            destination="water",
            attempt=1,
            url="http://127.0.0.1:9/unused",
            secret="unused",
            previous_secret=None,
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


BACKLOG_REQUESTS = 5


@pytest.fixture
def backlog(configured_db: Engine, receiver: AgencyReceiver) -> tuple[str, list[str]]:
    """A tenant whose `dpw` and `water` endpoints rejected the first attempt of every delivery
    of `BACKLOG_REQUESTS` requests with HTTP 404, so all of them are dead, and now accept again.

    Returns (tenant id, request ids in the order they were filed).
    """
    tenant_id = add_tenant(configured_db, receiver, ["dpw", "water"])
    _give_manifest(configured_db, tenant_id)
    paths = [receiver.path_for(tenant_id, code) for code in ("dpw", "water")]
    for path in paths:
        receiver.fail_paths[path] = 404
    request_ids = [
        add_request(configured_db, tenant_id, ["dpw", "water"]) for _ in range(BACKLOG_REQUESTS)
    ]
    for request_id in request_ids:
        assert route(request_id, tenant_id=tenant_id) == {"dead": 2}
    for path in paths:
        del receiver.fail_paths[path]
    return tenant_id, request_ids


def _due_times(engine: Engine, tenant_id: str, agency: str) -> list[datetime]:
    """Return `next_attempt_at` of the agency's deliveries in the order the requests were filed."""
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        rows = session.scalars(
            select(Delivery)
            .where(Delivery.tenant_id == tenant_id, Delivery.destination == agency)
            .order_by(Delivery.id)
        ).all()
        return [as_utc(row.next_attempt_at) for row in rows]


def _sent_count(engine: Engine, tenant_id: str, agency: str) -> int:
    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        rows = session.scalars(
            select(Delivery).where(
                Delivery.tenant_id == tenant_id,
                Delivery.destination == agency,
                Delivery.state == "sent",
            )
        ).all()
        return len(rows)


def _let_time_pass(engine: Engine, tenant_id: str, seconds: float) -> None:
    """Move the tenant's waiting deliveries and unpublished outbox messages `seconds` earlier,
    as if that much time had passed."""
    shift = timedelta(seconds=seconds)
    with unit_of_work(SystemContext("test: time passes"), engine=engine) as session:
        for row in session.scalars(
            select(Delivery).where(Delivery.tenant_id == tenant_id, Delivery.state == "pending")
        ):
            if row.next_attempt_at is not None:
                row.next_attempt_at = as_utc(row.next_attempt_at) - shift
        for message in session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.tenant_id == tenant_id, OutboxMessage.published_at.is_(None)
            )
        ):
            message.available_at = as_utc(message.available_at) - shift


def test_redeliver_rate_spreads_per_agency(
    configured_db: Engine, backlog: tuple[str, list[str]]
) -> None:
    """At 30 per minute the n-th delivery of each agency (from 0) is due n * 2 s after the first,
    and the first is due when the command runs."""
    tenant_id, _request_ids = backlog
    before = utcnow()

    code, output = _run("--tenant", tenant_id, "--rate", "30")

    after = utcnow()
    assert code == 0
    assert output["rate_per_minute"] == 30.0
    assert output["deliveries"] == 2 * BACKLOG_REQUESTS
    assert [entry["agency"] for entry in output["agencies"]] == ["dpw", "water"]
    for entry in output["agencies"]:
        due = _due_times(configured_db, tenant_id, entry["agency"])
        assert len(due) == BACKLOG_REQUESTS
        assert before <= due[0] <= after
        offsets = [(at - due[0]).total_seconds() for at in due]
        assert offsets == pytest.approx([2.0 * n for n in range(BACKLOG_REQUESTS)], abs=0.01)
        assert entry["deliveries"] == BACKLOG_REQUESTS
        first_due = datetime.fromisoformat(entry["first_due_at"])
        last_due = datetime.fromisoformat(entry["last_due_at"])
        assert abs((first_due - due[0]).total_seconds()) < 1
        assert abs((last_due - due[-1]).total_seconds()) < 1
    (audited,) = _audit_entries(configured_db, tenant_id)
    assert audited.details["rate_per_minute"] == 30.0


def test_redeliver_sends_only_due(
    configured_db: Engine, receiver: AgencyReceiver, backlog: tuple[str, list[str]]
) -> None:
    """At 2 per minute (one every 30 s) the worker sends each agency's first delivery at once
    and each later one only once its time has come, however often routing runs."""
    tenant_id, request_ids = backlog

    code, _output = _run("--tenant", tenant_id, "--rate", "2")
    _route_queued(configured_db)

    assert code == 0
    assert _sent_count(configured_db, tenant_id, "dpw") == 1
    assert _sent_count(configured_db, tenant_id, "water") == 1

    # A routing task that runs early, such as a repeated message, sends nothing before its time.
    for request_id in request_ids:
        assert route(request_id, tenant_id=tenant_id) == {}
    assert _sent_count(configured_db, tenant_id, "water") == 1

    _let_time_pass(configured_db, tenant_id, 75)
    _route_queued(configured_db)

    assert _sent_count(configured_db, tenant_id, "dpw") == 3
    assert _sent_count(configured_db, tenant_id, "water") == 3
    assert _states(configured_db, request_ids[2]) == {"dpw": "sent", "water": "sent"}
    assert _states(configured_db, request_ids[3]) == {"dpw": "pending", "water": "pending"}

    _let_time_pass(configured_db, tenant_id, 60)
    _route_queued(configured_db)

    assert _sent_count(configured_db, tenant_id, "water") == BACKLOG_REQUESTS
    assert receiver.count_for(receiver.path_for(tenant_id, "water")) == BACKLOG_REQUESTS
    assert receiver.count_for(receiver.path_for(tenant_id, "dpw")) == BACKLOG_REQUESTS
    assert sum(receiver.duplicates.values()) == 0


def test_redeliver_continues_earlier_schedule(
    configured_db: Engine, receiver: AgencyReceiver, backlog: tuple[str, list[str]]
) -> None:
    """Deliveries that go dead while an earlier redelivery to the agency still waits are
    scheduled after it, so a second run does not add to the first one's rate."""
    tenant_id, _request_ids = backlog
    water = receiver.path_for(tenant_id, "water")

    _, first = _run("--tenant", tenant_id, "--agency", "water", "--rate", "6")
    receiver.fail_paths[water] = 404
    late = add_request(configured_db, tenant_id, ["water"])
    assert route(late, tenant_id=tenant_id) == {"dead": 1}
    del receiver.fail_paths[water]
    _, second = _run("--tenant", tenant_id, "--agency", "water", "--rate", "6")

    due = _due_times(configured_db, tenant_id, "water")
    offsets = [(at - due[0]).total_seconds() for at in due]
    assert offsets == pytest.approx([10.0 * n for n in range(BACKLOG_REQUESTS + 1)], abs=0.01)
    assert first["agencies"][0]["deliveries"] == BACKLOG_REQUESTS
    assert second["agencies"][0]["deliveries"] == 1
    assert second["agencies"][0]["first_due_at"] == second["agencies"][0]["last_due_at"]
    assert datetime.fromisoformat(second["agencies"][0]["first_due_at"]) > datetime.fromisoformat(
        first["agencies"][0]["last_due_at"]
    )


def test_redeliver_dry_run_shows_schedule(
    configured_db: Engine, backlog: tuple[str, list[str]]
) -> None:
    tenant_id, request_ids = backlog
    before = utcnow()

    code, output = _run("--tenant", tenant_id, "--rate", "30", "--dry-run")
    text = CliRunner().invoke(
        app, ["requests", "redeliver", "--tenant", tenant_id, "--rate", "30", "--dry-run"]
    )

    assert code == 0
    assert output["dry_run"] is True
    assert text.exit_code == 0, text.stdout
    assert "to resend at 30 per minute per agency (dry run)" in text.stdout
    assert "last due" in text.stdout
    due_times = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", text.stdout)
    assert len(due_times) == 4
    for entry in output["agencies"]:
        last_due = datetime.fromisoformat(entry["last_due_at"])
        expected = before + timedelta(seconds=2.0 * (BACKLOG_REQUESTS - 1))
        assert abs((last_due - expected).total_seconds()) < 2
    assert all(_states(configured_db, r) == {"dpw": "dead", "water": "dead"} for r in request_ids)
    assert _audit_entries(configured_db, tenant_id) == []


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf", ""])
def test_redeliver_rejects_bad_rate(
    configured_db: Engine, outage: tuple[str, str, str], value: str
) -> None:
    tenant_id, request_id, _water = outage

    code, output = _run("--tenant", tenant_id, "--rate", value)
    text = CliRunner().invoke(
        app, ["requests", "redeliver", "--tenant", tenant_id, "--rate", value]
    )

    assert code == 2
    assert f"invalid --rate {value!r}" in output["error"]
    assert "number above 0, such as 60" in output["error"]
    assert text.exit_code == 2
    assert "Traceback" not in text.stderr
    assert text.stderr.strip().splitlines() == [f"error: {output['error']}"]
    assert _states(configured_db, request_id)["water"] == "dead"
    assert _audit_entries(configured_db, tenant_id) == []


def test_list_names_requests_of_dead_deliveries(
    configured_db: Engine, outage: tuple[str, str, str]
) -> None:
    """The operator tells the agency which requests it missed: `requests list --delivery`."""
    tenant_id, request_id, _ = outage

    def listed(*options: str) -> list[str]:
        result = CliRunner().invoke(
            app, ["requests", "list", "--tenant", tenant_id, *options, "--json"]
        )
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.stdout)["requests"]]

    assert listed("--agency", "water", "--delivery", "dead") == [request_id]
    assert listed("--delivery", "dead") == [request_id]
    assert listed("--agency", "dpw", "--delivery", "dead") == []
    assert listed("--delivery", "failed") == []
    bad = CliRunner().invoke(
        app, ["requests", "list", "--tenant", tenant_id, "--delivery", "lost", "--json"]
    )
    assert bad.exit_code != 0
    assert "unknown delivery state lost; use failed or dead" in bad.stdout


def test_deliveries_listed_while_one_fails(
    configured_db: Engine, receiver: AgencyReceiver, outage: tuple[str, str, str]
) -> None:
    """A delivery that fails between the listing's two queries (a worker routing meanwhile)
    is left out of the listing instead of failing it."""
    from hub.requests.redelivery import undelivered

    tenant_id, _request_id, _water = outage
    receiver.fail_paths[receiver.path_for(tenant_id, "dpw")] = 503
    retrying = add_request(configured_db, tenant_id, ["dpw"])
    routed = []
    ctx = TenantContext(tenant_id, actor="test")

    with unit_of_work(ctx, engine=configured_db, write=False) as session:
        execute = session.execute

        def execute_then_route(*args: Any, **kwargs: Any) -> Any:
            result = execute(*args, **kwargs)
            if not routed:
                routed.append(route(retrying, tenant_id=tenant_id))
            return result

        session.execute = execute_then_route  # type: ignore[method-assign]
        standings = undelivered(session, ctx)

    assert routed == [{"retry": 1}]
    assert ("water", "dead") in [(entry.agency, entry.state) for entry in standings]
