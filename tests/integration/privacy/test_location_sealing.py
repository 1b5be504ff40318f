"""A service that becomes location-sensitive gets its stored requests' exact points sealed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import yaml
from open311_support import CENTRE, box_polygon, manifest_data
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from hub.cli.main import app
from hub.core.db import dispose_engines, unit_of_work
from hub.core.outbox import OutboxMessage
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import SystemContext, TenantContext
from hub.requests import geo
from hub.requests.location_sealing import (
    ACTION_LOCATIONS_SEALED,
    exposed_points,
    seal_service_locations,
    sensitive_locations_control,
)
from hub.requests.models import ServiceRequest
from hub.requests.schemas import IntakeData
from hub.requests.service import submit_request
from privacy.fields import decrypt_value
from privacy.models import AuditEntry
from privacy.report import build_report
from privacy.rotation import rotate_dek
from privacy.tasks import run_retention_purge
from tenants.manifest import parse_manifest
from tenants.onboarding import SEAL_LOCATIONS_TASK, onboard_manifest
from tenants.registry import TenantInfo, get_tenant, invalidate_cache

LAT, LON = CENTRE
# Exact points inside the test service area: POINTS in the north district, SOUTH in none.
POINTS = [(LAT + 0.0123457, LON + 0.0098765), (LAT + 0.0211111, LON - 0.0133333)]
SOUTH = (LAT - 0.0177777, LON + 0.0144444)
FILED_AT = datetime(2024, 3, 1, 12, tzinfo=UTC)


def city_manifest(tenant_id: str, *, sensitive: bool, rule: dict | None = None) -> dict:
    """Return a test city's manifest with a north district and a `noise` service."""
    data = manifest_data(tenant_id, f"{tenant_id}.example.org", region=None)
    data["districts"] = [
        {
            "code": f"{tenant_id}-north",
            "name": "North",
            "geometry": box_polygon(LON - 0.05, LAT, LON + 0.05, LAT + 0.05),
        }
    ]
    data["services"].append(
        {
            "code": "noise",
            "names": {"en": "Noise", "es": "Ruido"},
            "location_sensitive": sensitive,
            "open_data": rule or {"location": "h3", "h3_resolution": 7},
        }
    )
    return data


def onboard(engine: Engine, data: dict):
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        return onboard_manifest(session, parse_manifest(data))


def new_city(engine: Engine) -> str:
    tenant_id = f"seal-{uuid.uuid4().hex[:8]}"
    onboard(engine, city_manifest(tenant_id, sensitive=False))
    return tenant_id


def snapshot(engine: Engine, tenant_id: str) -> TenantInfo:
    tenant = get_tenant(tenant_id, engine=engine)
    assert tenant is not None
    return tenant


def file_noise(engine: Engine, tenant_id: str, points: list[tuple[float, float]]) -> list[str]:
    ctx = TenantContext(tenant_id, actor="test")
    tenant = snapshot(engine, tenant_id)
    ids = []
    with unit_of_work(ctx, engine=engine) as session:
        for lat, lon in points:
            data = IntakeData(
                service_code="noise",
                lat=lat,
                lon=lon,
                description="loud party",
                requested_at=FILED_AT,
            )
            ids.append(submit_request(session, ctx, tenant, data).id)
    return ids


def stored(engine: Engine, tenant_id: str, request_id: str) -> ServiceRequest:
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        row = session.get(ServiceRequest, request_id)
        session.expunge_all()
    return row


def decrypt(engine: Engine, tenant_id: str, request_id: str, column: str, blob) -> str | None:
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        return decrypt_value(session, tenant_id, "service_requests", column, request_id, blob)


def make_sensitive(engine: Engine, tenant_id: str, rule: dict | None = None):
    return onboard(engine, city_manifest(tenant_id, sensitive=True, rule=rule))


def seal_entries(engine: Engine, tenant_id: str) -> list[AuditEntry]:
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant_id, AuditEntry.action == ACTION_LOCATIONS_SEALED)
            .order_by(AuditEntry.seq)
        ).all()
        session.expunge_all()
    return list(entries)


def sensitive_control(engine: Engine, tenant_id: str) -> dict:
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        return sensitive_locations_control(session, tenant_id)


def test_onboarding_queues_sealing_task(engine):
    tenant_id = new_city(engine)

    result = make_sensitive(engine, tenant_id)

    assert result.sealing_services == ("noise",)
    with unit_of_work(SystemContext("test read"), engine=engine, write=False) as session:
        queued = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.tenant_id == tenant_id, OutboxMessage.task == SEAL_LOCATIONS_TASK
            )
        ).all()
        assert [message.kwargs for message in queued] == [
            {"service_code": "noise", "tenant_id": tenant_id}
        ] * 2
        assert [message.queue for message in queued] == ["maintenance"] * 2


def test_unchanged_sensitivity_queues_nothing(engine):
    tenant_id = new_city(engine)
    make_sensitive(engine, tenant_id)

    again = make_sensitive(engine, tenant_id, rule={"location": "h3", "h3_resolution": 6})
    back = onboard(engine, city_manifest(tenant_id, sensitive=False))

    assert again.outcome == "updated"
    assert again.sealing_services == ()
    assert back.sealing_services == ()


def test_stored_points_sealed_like_new_requests(engine):
    tenant_id = new_city(engine)
    old_ids = file_noise(engine, tenant_id, POINTS)
    make_sensitive(engine, tenant_id)
    new_id = file_noise(engine, tenant_id, POINTS[:1])[0]

    assert seal_service_locations(tenant_id, "noise", engine=engine) == 2

    new_row = stored(engine, tenant_id, new_id)
    for request_id, (lat, lon) in zip(old_ids, POINTS, strict=True):
        row = stored(engine, tenant_id, request_id)
        assert (row.lat, row.lon) == geo.public_point(lat, lon, "h3", 7)
        assert row.h3_cell is None
        assert row.district is None
        location = decrypt(engine, tenant_id, request_id, "location_enc", row.location_enc)
        assert json.loads(location) == [lat, lon]
    old_row = stored(engine, tenant_id, old_ids[0])
    assert (old_row.lat, old_row.lon) == (new_row.lat, new_row.lon)
    assert old_row.dek_version == new_row.dek_version


def test_district_rule_stores_district_only(engine):
    tenant_id = new_city(engine)
    north, south = file_noise(engine, tenant_id, [POINTS[0], SOUTH])

    make_sensitive(engine, tenant_id, rule={"location": "district"})
    assert seal_service_locations(tenant_id, "noise", engine=engine) == 2

    north_row, south_row = stored(engine, tenant_id, north), stored(engine, tenant_id, south)
    assert (north_row.lat, north_row.lon, north_row.district) == (None, None, f"{tenant_id}-north")
    assert (south_row.lat, south_row.lon, south_row.district) == (None, None, None)
    location = decrypt(engine, tenant_id, south, "location_enc", south_row.location_enc)
    assert json.loads(location) == list(SOUTH)


def test_purged_requests_get_public_point_only(engine, close_expired):
    tenant_id = new_city(engine)
    purged = file_noise(engine, tenant_id, POINTS)
    for request_id in purged:
        close_expired(engine, tenant_id, request_id)
    assert run_retention_purge(tenant_id, engine=engine)["service_requests"] == 2
    # The purge clears h3_cell and keeps the exact lat/lon of a service not yet sensitive.
    first = stored(engine, tenant_id, purged[0])
    assert (first.lat, first.lon) == POINTS[0]

    make_sensitive(engine, tenant_id)
    assert seal_service_locations(tenant_id, "noise", engine=engine) == 2

    for request_id, (lat, lon) in zip(purged, POINTS, strict=True):
        row = stored(engine, tenant_id, request_id)
        assert (row.lat, row.lon) == geo.public_point(lat, lon, "h3", 7)
        assert row.location_enc is None
        assert row.dek_version is None
        assert row.description_enc is None


def test_rows_under_old_dek_move_to_primary(engine):
    tenant_id = new_city(engine)
    (request_id,) = file_noise(engine, tenant_id, POINTS[:1])
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        primary = rotate_dek(session, tenant_id, actor="test")

    make_sensitive(engine, tenant_id)
    seal_service_locations(tenant_id, "noise", engine=engine)

    row = stored(engine, tenant_id, request_id)
    assert row.dek_version == primary
    assert row.location_enc[1:5] == primary.to_bytes(4, "big")
    assert row.description_enc[1:5] == primary.to_bytes(4, "big")
    assert decrypt(engine, tenant_id, request_id, "description_enc", row.description_enc) == (
        "loud party"
    )


def test_task_seals_queued_service(configured_db):
    from hub.requests.tasks import seal_locations

    tenant_id = new_city(configured_db)
    (request_id,) = file_noise(configured_db, tenant_id, POINTS[:1])
    make_sensitive(configured_db, tenant_id)

    assert seal_locations.run("noise", tenant_id=tenant_id) == 1

    assert stored(configured_db, tenant_id, request_id).location_enc is not None


def test_sealing_audited_per_batch(engine):
    tenant_id = new_city(engine)
    file_noise(engine, tenant_id, [*POINTS, SOUTH])
    make_sensitive(engine, tenant_id)

    assert seal_service_locations(tenant_id, "noise", engine=engine, batch=2) == 3

    entries = seal_entries(engine, tenant_id)
    assert [entry.details["rows"] for entry in entries] == [2, 1]
    assert {entry.details["service_code"] for entry in entries} == {"noise"}
    assert [entry.details["encrypted"] for entry in entries] == [2, 1]
    assert {entry.actor for entry in entries} == {"worker:location-sealing"}


def test_sealing_again_changes_nothing(engine):
    tenant_id = new_city(engine)
    (request_id,) = file_noise(engine, tenant_id, POINTS[:1])
    make_sensitive(engine, tenant_id)
    seal_service_locations(tenant_id, "noise", engine=engine)
    first = stored(engine, tenant_id, request_id)

    assert seal_service_locations(tenant_id, "noise", engine=engine) == 0

    assert stored(engine, tenant_id, request_id).location_enc == first.location_enc
    assert len(seal_entries(engine, tenant_id)) == 1


def test_interrupted_sealing_resumes(engine):
    tenant_id = new_city(engine)
    file_noise(engine, tenant_id, [*POINTS, SOUTH])
    make_sensitive(engine, tenant_id)

    def stop(_count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seal_service_locations(tenant_id, "noise", engine=engine, batch=2, progress=stop)
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        assert exposed_points(session, tenant_id)["noise"] == 1

    assert seal_service_locations(tenant_id, "noise", engine=engine, batch=2) == 1
    assert [entry.details["rows"] for entry in seal_entries(engine, tenant_id)] == [2, 1]


def test_service_no_longer_sensitive_skipped(engine):
    tenant_id = new_city(engine)
    (request_id,) = file_noise(engine, tenant_id, POINTS[:1])
    make_sensitive(engine, tenant_id)
    onboard(engine, city_manifest(tenant_id, sensitive=False))

    assert seal_service_locations(tenant_id, "noise", engine=engine) == 0

    assert stored(engine, tenant_id, request_id).h3_cell is not None


def test_report_control_fails_until_sealed(engine, close_expired):
    tenant_id = new_city(engine)
    live, purged = file_noise(engine, tenant_id, POINTS)
    close_expired(engine, tenant_id, purged)
    run_retention_purge(tenant_id, engine=engine)
    make_sensitive(engine, tenant_id)

    before = sensitive_control(engine, tenant_id)
    seal_service_locations(tenant_id, "noise", engine=engine)
    after = sensitive_control(engine, tenant_id)

    assert before["passed"] is False
    assert before["evidence"]["requests_exposing_point"]["noise"] == 2
    assert after["passed"] is True
    assert after["evidence"]["requests_exposing_point"] == {
        "encampment": 0,
        "graffiti": 0,
        "noise": 0,
    }


def test_rule_change_keeps_sealed_points_public(engine, close_expired):
    tenant_id = new_city(engine)
    make_sensitive(engine, tenant_id, rule={"location": "h3", "h3_resolution": 8})
    live, purged = file_noise(engine, tenant_id, POINTS)
    close_expired(engine, tenant_id, purged)
    run_retention_purge(tenant_id, engine=engine)

    make_sensitive(engine, tenant_id, rule={"location": "district"})

    assert sensitive_control(engine, tenant_id)["passed"] is True
    assert seal_service_locations(tenant_id, "noise", engine=engine) == 0
    assert (stored(engine, tenant_id, purged).lat, stored(engine, tenant_id, purged).lon) == (
        geo.public_point(*POINTS[1], "h3", 8)
    )


def test_report_includes_feature_control(engine):
    tenant_id = new_city(engine)
    file_noise(engine, tenant_id, POINTS[:1])
    make_sensitive(engine, tenant_id)

    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        report = build_report(session, tenant_id, feature_controls=[sensitive_locations_control])

    ids = [item["id"] for item in report["controls"]]
    assert ids[-2:] == ["sensitive_locations", "audit_chain"]
    assert report["passed"] is False


@pytest.fixture
def hub_cli(db_url, monkeypatch):
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    reset_settings_cache()
    invalidate_cache()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        """Run `hub ARGS` and return its exit code, stdout and stderr."""
        result = runner.invoke(app, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    yield run
    reset_settings_cache()
    dispose_engines()


def report_control(hub_cli, tenant_id: str) -> dict:
    _code, out, _err = hub_cli("privacy", "report", "--tenant", tenant_id, "--format", "json")
    controls = {item["id"]: item for item in json.loads(out)["controls"]}
    return controls["sensitive_locations"]


def test_cli_onboard_and_seal(hub_cli, engine, tmp_path):
    tenant_id = f"seal-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(city_manifest(tenant_id, sensitive=False)), encoding="utf-8")
    assert hub_cli("tenants", "onboard", str(path))[0] == 0
    file_noise(engine, tenant_id, POINTS)
    path.write_text(yaml.safe_dump(city_manifest(tenant_id, sensitive=True)), encoding="utf-8")

    code, out, _err = hub_cli("tenants", "onboard", str(path))

    assert code == 0, out
    assert "services noise became location-sensitive" in out
    assert f"hub privacy seal-locations --tenant {tenant_id}" in " ".join(out.split())
    assert report_control(hub_cli, tenant_id)["passed"] is False

    code, out, _err = hub_cli("privacy", "seal-locations", "--tenant", tenant_id, "--json")

    assert code == 0, out
    assert json.loads(out) == {"encampment": 0, "graffiti": 0, "noise": 2}
    assert report_control(hub_cli, tenant_id)["passed"] is True
    code, out, _err = hub_cli(
        "privacy", "seal-locations", "--tenant", tenant_id, "--service", "noise", "--json"
    )
    assert code == 0, out
    assert json.loads(out) == {"noise": 0}


def test_cli_seal_rejects_plain_service(hub_cli, engine):
    tenant_id = new_city(engine)

    code, _out, err = hub_cli(
        "privacy", "seal-locations", "--tenant", tenant_id, "--service", "pothole"
    )

    assert code == 2
    assert "not location-sensitive" in err


def test_row_locked_elsewhere_still_sealed(pg_url):
    """A request that another transaction has locked (a status update, a re-encryption batch)
    when the conversion reaches it is converted once that transaction ends, not skipped."""
    import threading
    import time

    from hub.core.db import get_engine

    engine = get_engine(pg_url)
    tenant_id = new_city(engine)
    locked_id, _other = file_noise(engine, tenant_id, POINTS)
    make_sensitive(engine, tenant_id)

    results = []
    with unit_of_work(TenantContext(tenant_id), engine=engine) as holder:
        holder.get(ServiceRequest, locked_id, with_for_update=True)
        sealing = threading.Thread(
            target=lambda: results.append(seal_service_locations(tenant_id, "noise", engine=engine))
        )
        sealing.start()
        time.sleep(1.0)
    sealing.join(timeout=30)

    assert results == [2]
    with unit_of_work(TenantContext(tenant_id), engine=engine, write=False) as session:
        assert exposed_points(session, tenant_id)["noise"] == 0


def test_request_from_stale_cache_sealed_later(engine):
    """Another API process serves its cached tenant, with the service not yet sensitive, for
    up to the registry's cache lifetime after onboarding. A request it stores then has its
    exact point in clear, after the first conversion may have finished, so onboarding queues
    a second conversion for after that lifetime."""
    from datetime import timedelta

    from tenants.registry import CACHE_TTL_SECONDS

    tenant_id = new_city(engine)
    stale = snapshot(engine, tenant_id)
    make_sensitive(engine, tenant_id)
    assert seal_service_locations(tenant_id, "noise", engine=engine) == 0

    ctx = TenantContext(tenant_id, actor="test")
    data = IntakeData(service_code="noise", lat=POINTS[0][0], lon=POINTS[0][1])
    with unit_of_work(ctx, engine=engine) as session:
        submit_request(session, ctx, stale, data)

    with unit_of_work(SystemContext("test read"), engine=engine, write=False) as session:
        queued = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.tenant_id == tenant_id, OutboxMessage.task == SEAL_LOCATIONS_TASK
            )
        ).all()
        delays = sorted(message.available_at - message.created_at for message in queued)
    assert len(delays) == 2
    assert delays[-1] > timedelta(seconds=CACHE_TTL_SECONDS)
    assert seal_service_locations(tenant_id, "noise", engine=engine) == 1
