"""Intake with a stored notice template that it cannot fill: the built-in notice replaces it.

Validation rejects such templates now, but a manifest stored before that check keeps loading
(`parse_manifest(..., stored=True)`), so intake must still file its requests.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import structlog
from open311_support import manifest_data, pothole_form
from structlog.testing import capture_logs

from hub.core.db import get_engine, unit_of_work
from hub.core.tenancy import SystemContext
from hub.requests import texts
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard


def _onboard_with_texts(hub_db: str, status_texts: dict) -> tuple[str, str, str]:
    """Onboard a tenant whose stored manifest has `status_texts`, skipping their validation.

    Returns the tenant id, its jurisdiction and its Open311 key."""
    tenant_id = f"texts-{uuid.uuid4().hex[:8]}"
    jurisdiction = f"{tenant_id}.example.org"
    data = manifest_data(tenant_id, jurisdiction, region=f"region-{tenant_id}")
    data["languages"] = ["en", "es", "zh"]
    data["profile"]["status_texts"] = status_texts
    manifest = parse_manifest(data, stored=True)
    with unit_of_work(SystemContext("test onboarding"), engine=get_engine(hub_db)) as session:
        _, open311_key = onboard(session, manifest, actor="test")
    return tenant_id, jurisdiction, open311_key


def _post(client, jurisdiction: str, key: str, locale: str, lat: str):
    # `pothole_form` reads only these two fields of `TenantKeys`.
    tenant = SimpleNamespace(jurisdiction=jurisdiction, open311=key)
    form = pothole_form(tenant, lat=lat)
    return client.post("/open311/v2/requests.json", data=form, params={"locale": locale})


@pytest.mark.parametrize(
    ("locale", "template", "built_in"),
    [
        ("zh", "谢谢，预计 {date} 前处理。", "Thank you. Your request has been received and"),
        ("es", "Gracias, antes del {expected", "Gracias. Hemos recibido su solicitud y"),
        ("es", "Gracias, antes del {expected.year}", "Gracias. Hemos recibido su solicitud y"),
    ],
)
def test_unfillable_notice_falls_back(client, hub_db, monkeypatch, locale, template, built_in):
    tenant_id, jurisdiction, key = _onboard_with_texts(
        hub_db, {locale: {"notice.expected": template}}
    )
    # A logger of the test's own: capture_logs misses one that structlog cached earlier.
    monkeypatch.setattr(texts, "log", structlog.get_logger(texts.__name__))
    with capture_logs() as logs:
        first = _post(client, jurisdiction, key, locale, lat="40.01")
        second = _post(client, jurisdiction, key, locale, lat="40.02")

    for response in (first, second):
        assert response.status_code == 201, response.text
        notice = response.json()[0]["service_notice"]
        assert notice.startswith(built_in)
        assert "{" not in notice
        assert response.json()[0]["service_request_id"]

    warnings = [entry for entry in logs if entry["event"] == "notice_template_invalid"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["tenant_id"] == tenant_id
    assert warnings[0]["text_key"] == "notice.expected"


def test_valid_stored_notice_used(client, hub_db):
    _, jurisdiction, key = _onboard_with_texts(
        hub_db, {"zh": {"notice.expected": "谢谢，预计 {expected} 前处理。"}}
    )
    response = _post(client, jurisdiction, key, "zh", lat="40.01")
    assert response.status_code == 201, response.text
    notice = response.json()[0]["service_notice"]
    assert notice.startswith("谢谢，预计 ")
    assert "{expected}" not in notice
