import json
from datetime import UTC, datetime

import pytest
import yaml
from open311_support import INSIDE
from overflow_support import beat, onboard_test_partner
from sqlalchemy import update
from typer.testing import CliRunner

from hub.cli.main import app
from hub.core.db import dispose_engines, unit_of_work
from hub.core.logging import configure_logging
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from hub.requests import service
from hub.requests.models import ServiceRequest
from hub.requests.schemas import IntakeData
from tenants.registry import get_tenant


@pytest.fixture
def hub_cli(hub_db):
    reset_settings_cache()
    # CliRunner replaces sys.stderr with a stream it closes afterwards, so logging is set up
    # before it runs.
    configure_logging(force=True)
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    yield run
    reset_settings_cache()
    dispose_engines()


def partner_file(tmp_path, tenant_id, **agreement):
    path = tmp_path / "partner.yaml"
    data = {
        "center": {
            "id": f"cli-{tenant_id}",
            "name": "CLI partner",
            "timezone": "America/Denver",
            "agents": 12,
            "skills": ["streets"],
            "languages": ["en", "es"],
        },
        "agreements": [{"tenant": tenant_id, **agreement}],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_onboard_then_status(hub_cli, engine, tenant, tmp_path):
    onboarded = hub_cli(
        "overflow", "partners", "onboard", str(partner_file(tmp_path, tenant.id)), "--json"
    )
    assert onboarded.exit_code == 0, onboarded.output
    assert json.loads(onboarded.stdout)["agreements"] == [f"{tenant.id}--cli-{tenant.id}"]

    beat(engine, tenant.home, staffed=2, available=1)
    status = hub_cli("overflow", "status", "--tenant", tenant.id, "--json")
    assert status.exit_code == 0, status.output
    body = json.loads(status.stdout)
    assert body["tenants"][0]["tenant_id"] == tenant.id
    assert body["tenants"][0]["partners"][0]["center_id"] == f"cli-{tenant.id}"
    states = {c["center_id"]: c["state"] for c in body["centers"]}
    assert states[tenant.home] == "active"
    assert states[f"cli-{tenant.id}"] == "unreachable"


def test_onboard_rejects_bad_manifest(hub_cli, tenant, tmp_path):
    result = hub_cli(
        "overflow", "partners", "onboard", str(partner_file(tmp_path, tenant.id, share_cap=2))
    )
    assert result.exit_code == 2
    assert "agreements[0].share_cap" in result.output
    assert "Traceback" not in result.output


def test_onboard_rejects_unknown_tenant(hub_cli, tmp_path):
    result = hub_cli("overflow", "partners", "onboard", str(partner_file(tmp_path, "no-such-city")))
    assert result.exit_code == 2
    assert "tenant 'no-such-city' in agreements is not onboarded" in result.output


def test_staffing_json(hub_cli):
    result = hub_cli(
        "overflow", "staffing", "--arrival-rate", "720", "--handle-time", "240", "--json"
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["agents"] == 54
    assert body["service_level"] >= 0.8


def test_simulate_csv_with_chart(hub_cli, tmp_path):
    curve = tmp_path / "curve.csv"
    curve.write_text(
        "minute,count\n" + "".join(f"{m},{3 if 60 <= m < 120 else 1}\n" for m in range(180))
    )
    chart = tmp_path / "surge.png"
    result = hub_cli(
        "overflow", "simulate", "--arrivals", str(curve), "--surge", "4", "--agents", "6",
        "--partner-agents", "10", "--chart", str(chart), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["with_overflow"]["service_level"] > body["without_overflow"]["service_level"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_needs_one_source(hub_cli):
    result = hub_cli("overflow", "simulate", "--surge", "4")
    assert result.exit_code == 2
    assert "give exactly one of --arrivals FILE or --from-tenant ID" in result.output


def test_simulate_from_tenant_on_new_database(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    reset_settings_cache()
    configure_logging(force=True)
    try:
        result = CliRunner().invoke(app, ["overflow", "simulate", "--from-tenant", "boston"])
    finally:
        reset_settings_cache()
        dispose_engines()
    assert result.exit_code == 2
    assert "tenant 'boston' not found" in result.output


def test_simulate_from_tenant_states_its_days(hub_cli, engine, tenant):
    ctx = TenantContext(tenant.id, actor="test")
    snapshot = get_tenant(tenant.id, engine=engine)
    lat, lon = INSIDE
    days = [datetime(2026, 3, 2, 15, tzinfo=UTC), datetime(2026, 3, 5, 16, tzinfo=UTC)]
    with unit_of_work(ctx, engine=engine) as session:
        for day in days:
            data = IntakeData(service_code="pothole", lat=lat, lon=lon, attributes={"depth": "4"})
            request_id = service.submit_request(session, ctx, snapshot, data).id
            session.execute(
                update(ServiceRequest)
                .where(ServiceRequest.id == request_id)
                .values(requested_at=day)
            )

    as_json = hub_cli("overflow", "simulate", "--from-tenant", tenant.id, "--json")
    as_text = hub_cli("overflow", "simulate", "--from-tenant", tenant.id)

    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["curve_source"] == {
        "tenant": tenant.id,
        "requests": 2,
        "first_day": "2026-03-02",
        "last_day": "2026-03-05",
        "days": 2,
    }
    assert as_text.exit_code == 0, as_text.output
    assert f"curve from 2 requests of tenant {tenant.id} on 2 days" in as_text.output
    assert "2026-03-02 to 2026-03-05" in as_text.output


def test_partner_key_needs_agreed_center(hub_cli, engine, tenant, other_tenant):
    agreed = onboard_test_partner(engine, tenant)
    unrelated = onboard_test_partner(engine, other_tenant)
    create = ("tenants", "keys", "create", "--tenant", tenant.id, "--role", "partner_agent")

    result = hub_cli(*create, "--center", "no-such-center")
    assert result.exit_code == 2
    assert "contact center 'no-such-center' not found" in result.stderr
    assert "hub overflow partners onboard" in result.stderr

    result = hub_cli(*create, "--center", tenant.home)
    assert result.exit_code == 2
    assert f"{tenant.home!r} is tenant {tenant.id!r}'s own center" in result.stderr

    result = hub_cli(*create, "--center", unrelated.center_id)
    assert result.exit_code == 2
    assert f"has no agreement with tenant {tenant.id!r}" in result.stderr

    result = hub_cli(*create)
    assert result.exit_code == 2
    assert "needs the id of its partner center" in result.stderr

    result = hub_cli(*create, "--center", agreed.center_id, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["center_id"] == agreed.center_id


def test_agent_key_takes_no_center(hub_cli, engine, tenant):
    agreed = onboard_test_partner(engine, tenant)
    result = hub_cli(
        "tenants",
        "keys",
        "create",
        "--tenant",
        tenant.id,
        "--role",
        "agent",
        "--center",
        agreed.center_id,
    )
    assert result.exit_code == 2
    assert "needs the partner_agent role" in result.stderr


def test_agreement_dates_city_whole_days(hub_cli, engine, tenant, tmp_path):
    """`valid_from: 2027-01-01` starts at midnight in the city (America/New_York), and
    `valid_until: 2027-12-31` includes the 31st there."""
    from datetime import date

    from sqlalchemy import select

    from failover.models import Agreement
    from hub.core.tenancy import SystemContext

    path = partner_file(
        tmp_path, tenant.id, valid_from=date(2027, 1, 1), valid_until=date(2027, 12, 31)
    )
    result = hub_cli("overflow", "partners", "onboard", str(path))
    assert result.exit_code == 0, result.output

    with unit_of_work(SystemContext("test read"), engine=engine) as session:
        row = session.scalars(select(Agreement).where(Agreement.tenant_id == tenant.id)).one()
        start, end = row.valid_from, row.valid_until
    assert start.replace(tzinfo=UTC) == datetime(2027, 1, 1, 5, tzinfo=UTC)
    assert end.replace(tzinfo=UTC) == datetime(2028, 1, 1, 5, tzinfo=UTC)
