"""What compose, validate and preview tell an emergency manager before anything is sent: an
area outside the tenants (swapped coordinates), missing translations, channels without a
provider, zero recipients, an expired CAP file, and the `sent` time a reference needs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from alerts_support import (
    BOSTON_POINT,
    BOTH_CITIES,
    NYC_POINT,
    add_resident,
    add_tenant,
    cap_alert,
    manager,
)
from sqlalchemy import Engine, select
from test_alert_fanout import alert_row, approve, run_batches, send

from hub.alerts import models as m
from hub.alerts import workflow
from hub.alerts.cap.mapping import to_dict
from hub.alerts.cap.model import Area
from hub.alerts.cap.problems import InvalidCap
from hub.alerts.cap.writer import write
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext
from tenants.models import Tenant

# The receivers listen on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")

RATES = {"rate_limits": {"webhook": 1000, "email": 1000}}
SWAPPED = [(lon, lat) for lat, lon in BOTH_CITIES]
# A box around lower Manhattan only, and one around central Boston only.
MANHATTAN = [(40.6, -74.1), (40.6, -73.9), (40.8, -73.9), (40.8, -74.1), (40.6, -74.1)]
BOSTON_AREA = {
    "type": "Polygon",
    "coordinates": [[[-71.2, 42.2], [-70.9, 42.2], [-70.9, 42.5], [-71.2, 42.5], [-71.2, 42.2]]],
}


def compose(engine: Engine, tenant: str, cap, tenants=None) -> list[dict]:
    return workflow.compose(engine, manager(tenant), cap, tenants=tenants)


def english_only(identifier: str, **options):
    cap = cap_alert(identifier, **options)
    cap.infos = [info for info in cap.infos if info.language == "en-US"]
    return cap


def set_service_area(engine: Engine, tenant: str, area: dict) -> None:
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        row = session.get(Tenant, tenant)
        row.manifest = {**row.manifest, "service_area": area}


def test_swapped_polygon_rejected_at_compose(engine) -> None:
    nyc, boston = add_tenant(engine, alerts=RATES), add_tenant(engine, alerts=RATES)

    with pytest.raises(InvalidCap) as caught:
        compose(engine, nyc, cap_alert("SWAP-1", ring=SWAPPED), tenants=[boston])

    [problem] = caught.value.problems  # both info blocks have the same area: one problem
    assert problem.path == "alert/info[1]/area[1]"
    assert f"does not overlap the service area of {nyc} or {boston}" in problem.message
    assert "with latitude and longitude swapped it would lie in" in problem.message
    with unit_of_work(manager(nyc), engine=engine) as session:
        assert session.scalar(select(m.Alert.id)) is None


def test_area_over_no_tenant_without_swap_hint(engine) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    far = [(10.0, 10.0), (10.0, 11.0), (11.0, 11.0), (11.0, 10.0), (10.0, 10.0)]
    cap = cap_alert("FAR-1", ring=far)
    cap.infos[0].areas.append(Area(area_desc="Lagos"))

    with pytest.raises(InvalidCap) as caught:
        compose(engine, tenant, cap)

    [problem] = caught.value.problems
    assert "'Coast' does not overlap the service area" in problem.message
    assert "swapped" not in problem.message


def test_regional_alert_warns_about_missed_tenant(engine) -> None:
    nyc, boston = add_tenant(engine, alerts=RATES), add_tenant(engine, alerts=RATES)
    set_service_area(engine, boston, BOSTON_AREA)

    rows = compose(engine, nyc, cap_alert("MISS-1", ring=MANHATTAN), tenants=[boston])

    warnings = {row["tenant_id"]: row["warnings"] for row in rows}
    assert warnings[boston] == [
        f"no area of the alert overlaps the service area of {boston}, so none of its residents "
        f"would get it; add an area over {boston} or leave it out of the alert"
    ]
    assert not any("service area" in text for text in warnings[nyc])


def test_validate_with_tenant_reports_swapped_area(engine, cli, tmp_path) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    path = tmp_path / "swapped.xml"
    path.write_bytes(write(cap_alert("SWAP-2", ring=SWAPPED)))

    assert cli("validate", str(path)).exit_code == 0
    result = cli("validate", str(path), "--tenant", tenant, "--json")

    assert result.exit_code == 1, result.output
    [problem] = json.loads(result.stdout)["problems"]
    assert f"does not overlap the service area of {tenant}" in problem["message"]
    assert "latitude and longitude swapped" in problem["message"]


def test_missing_translation_counted_at_compose_and_preview(engine, cli) -> None:
    tenant = add_tenant(engine, alerts=RATES)  # languages en and es
    hooks = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "http://127.0.0.1:9/c")
    add_resident(engine, tenant, NYC_POINT, {"webhook": hooks[0]}, languages=["es"])
    add_resident(engine, tenant, NYC_POINT, {"webhook": hooks[1]}, languages=["zh", "en"])
    add_resident(engine, tenant, NYC_POINT, {"webhook": hooks[2]}, languages=["en"])

    [row] = compose(engine, tenant, english_only("LANG-1"))

    expected = [
        f"no info block in es, which {tenant} declares; residents who prefer it get en-US",
        "2 residents prefer es, zh: no info block in those languages, they get en-US",
    ]
    assert row["warnings"] == expected
    [preview] = workflow.preview(engine, manager(tenant), row["id"])
    assert preview["warnings"] == expected
    text = cli("preview", row["id"], "--tenant", tenant)
    assert "warning: " in text.output
    assert "2 residents prefer es, zh" in text.output


def test_translated_alert_has_no_language_warning(engine) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    add_resident(engine, tenant, NYC_POINT, {"webhook": "http://127.0.0.1:9/a"}, languages=["es"])

    [row] = compose(engine, tenant, cap_alert("LANG-2"))

    assert row["warnings"] == []


def test_unconfigured_email_fails_at_once(engine) -> None:
    tenant = add_tenant(engine, alerts=RATES)  # no alerts.providers
    add_resident(engine, tenant, NYC_POINT, {"email": "vecina@example.org"})
    [row] = compose(engine, tenant, cap_alert("MAIL-1"))
    assert row["warnings"] == [
        "1 resident uses email, but "
        f"{tenant} has no provider for it: 1 email message(s) would fail with "
        "'SMTP provider not configured (alerts.providers.smtp)'"
    ]
    approve(engine, tenant, row["id"], "em2")
    send(engine, [alert_row(engine, tenant, row["id"])])

    run_batches(engine, tenant, row["id"])

    with unit_of_work(manager(tenant), engine=engine) as session:
        delivery = session.scalar(select(m.Delivery).where(m.Delivery.alert_id == row["id"]))
        assert (delivery.state, delivery.attempts) == (m.FAILED, 1)
        assert delivery.last_error == "SMTP provider not configured (alerts.providers.smtp)"
    assert alert_row(engine, tenant, row["id"]).state == m.SEND_FAILED


def test_smtp_without_sender_is_not_configured(engine) -> None:
    alerts = {**RATES, "providers": {"smtp": {"host": "127.0.0.1", "port": 2525}}}
    tenant = add_tenant(engine, alerts=alerts)
    add_resident(engine, tenant, NYC_POINT, {"email": "vecina@example.org"})

    [row] = compose(engine, tenant, cap_alert("MAIL-2"))

    [preview] = workflow.preview(engine, manager(tenant), row["id"])
    assert preview["warnings"] == row["warnings"]
    assert "SMTP provider not configured" in row["warnings"][0]


def test_preview_counts_residents_and_messages(engine, cli) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    channels = {"webhook": "http://127.0.0.1:9/a", "email": "vecina@example.org"}
    add_resident(engine, tenant, NYC_POINT, channels, languages=["es-US"])
    [row] = compose(engine, tenant, cap_alert("PREV-1"))

    text = cli("preview", row["id"], "--tenant", tenant)

    assert text.exit_code == 0, text.output
    assert "messages" in text.output
    assert f"{tenant}: 1 resident(s) get 2 message(s), one per resident and channel" in (
        text.output
    )


def test_preview_says_nobody_is_reached(engine, cli) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    add_resident(engine, tenant, BOSTON_POINT, {"webhook": "http://127.0.0.1:9/a"})
    [row] = compose(engine, tenant, cap_alert("PREV-2", ring=MANHATTAN))

    assert row["warnings"] == [
        f"nobody in {tenant} would get this message: no subscribed resident matches it"
    ]
    text = cli("preview", row["id"], "--tenant", tenant)
    assert f"{tenant}: 0 resident(s) get 0 message(s)" in text.output
    assert "nobody in" in text.output


def expired_cap(identifier: str):
    cap = cap_alert(identifier)
    eastern = timezone(timedelta(hours=-5))
    for info in cap.infos:
        info.expires = datetime(2025, 12, 5, 12, 0, tzinfo=eastern)
    cap.sent = datetime(2025, 12, 5, 9, 0, tzinfo=eastern)
    return cap


def test_validate_warns_about_expired_xml(cli, tmp_path) -> None:
    path = tmp_path / "expired.xml"
    path.write_bytes(write(expired_cap("EXP-1")))

    result = cli("validate", str(path), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["warnings"][0] == (
        "alert/info[1]/expires: compose rejects the alert: expires 2025-12-05T12:00:00-05:00 "
        "(2025-12-05T17:00:00+00:00) has passed, so the alert could never be sent; set a "
        "later expires time"
    )
    text = cli("validate", str(path))
    assert "warning: alert/info[2]/expires: compose rejects the alert" in text.output


def test_validate_rejects_expired_yaml(cli, tmp_path) -> None:
    path = tmp_path / "expired.yaml"
    path.write_text(yaml.safe_dump(to_dict(expired_cap("EXP-2")), allow_unicode=True))

    result = cli("validate", str(path), "--json")

    assert result.exit_code == 1, result.output
    messages = [p["message"] for p in json.loads(result.stdout)["problems"]]
    assert messages[0].startswith("expires 2025-12-05T12:00:00-05:00 (2025-12-05T17:00:00+00:00)")


def test_list_and_status_show_sent(engine, cli) -> None:
    tenant = add_tenant(engine, alerts=RATES)
    cap = cap_alert("SENT-1")
    [row] = compose(engine, tenant, cap)
    sent = cap.sent.isoformat()

    [listed] = json.loads(cli("list", "--tenant", tenant, "--json").stdout)
    assert listed["sent"] == sent
    assert sent in cli("list", "--tenant", tenant).output
    [status] = json.loads(cli("status", row["id"], "--tenant", tenant, "--json").stdout)
    assert (status["sender"], status["sent"]) == (cap.sender, sent)
    text = cli("status", row["id"], "--tenant", tenant).output
    assert f"gives references: {cap.sender},SENT-1,{sent}" in text
