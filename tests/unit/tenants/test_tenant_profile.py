"""Profile hooks: language choice and fallback, status and notice texts, manifest overrides."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import MappingProxyType

import yaml

from hub.requests.texts import notice_text
from tenants.calendar import BusinessCalendar
from tenants.manifest import example_paths, parse_manifest
from tenants.profile import TenantProfile, profile_for, register_profile
from tenants.registry import ServiceInfo, TenantInfo


def _tenant(overrides: dict | None = None, tenant_id: str = "san-francisco") -> TenantInfo:
    path = next(p for p in example_paths() if p.stem == "san-francisco")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    if overrides:
        data["profile"] = {"status_texts": overrides}
    manifest = parse_manifest(data)
    spec = manifest.services[0]
    service = ServiceInfo(
        code=spec.code,
        names=MappingProxyType(dict(spec.names)),
        descriptions=MappingProxyType(dict(spec.descriptions)),
        type=spec.type,
        keywords=(),
        group=spec.group,
        attributes=(),
        agency_code=None,
        sla_hours=spec.sla_hours,
        sla_clock=spec.sla_clock,
        location_sensitive=False,
        open_data_location="h3",
        h3_resolution=8,
    )
    return TenantInfo(
        id=tenant_id,
        jurisdiction_id=manifest.jurisdiction_id,
        name=manifest.name,
        timezone=manifest.timezone,
        languages=tuple(manifest.languages),
        default_language=manifest.default_language,
        region=manifest.region,
        status="active",
        manifest_version=1,
        manifest=manifest,
        services=MappingProxyType({service.code: service}),
        calendar=BusinessCalendar.from_spec(manifest.calendar),
    )


def test_pick_language_fallbacks():
    profile = profile_for(_tenant())
    assert profile.pick_language("es") == "es"
    assert profile.pick_language("ES") == "es"
    assert profile.pick_language("es-MX") == "es"
    assert profile.pick_language("zh-Hant") == "zh"
    assert profile.pick_language("fr") == "en"
    assert profile.pick_language(None) == "en"


def test_negotiate_language_uses_q_values():
    profile = profile_for(_tenant())
    assert profile.negotiate_language("fr-FR,fr;q=0.9,es;q=0.8") == "es"
    assert profile.negotiate_language("en;q=0.1, es;q=0.9") == "es"
    assert profile.negotiate_language("zh-Hant-TW, en;q=0.5") == "zh"
    assert profile.negotiate_language("de") == "en"
    assert profile.negotiate_language(None) == "en"


def _spanish_first(overrides: dict | None = None) -> TenantInfo:
    """The San Francisco example with Spanish as its default language."""
    return replace(_tenant(overrides), languages=("es", "en", "zh", "fil"), default_language="es")


def test_status_text_falls_back_to_tenant_default():
    profile = profile_for(_spanish_first())
    # Filipino has no built-in status texts, so the tenant default comes before English.
    assert profile.status_text("on_hold", None, "fil") == "En espera"


def test_notice_falls_back_like_status_texts():
    english_first = _tenant()
    spanish_first = _spanish_first()
    # Chinese has built-in status texts but no built-in notices.
    assert profile_for(english_first).status_text("closed", None, "zh") == "已結案"
    assert notice_text(english_first, "zh", "notice.received").startswith("Thank you.")
    assert notice_text(spanish_first, "zh", "notice.received").startswith("Gracias.")
    assert notice_text(spanish_first, "fil", "notice.received").startswith("Gracias.")


def test_notice_manifest_override():
    tenant = _tenant({"zh": {"notice.received": "謝謝"}})
    assert notice_text(tenant, "zh-Hant", "notice.received") == "謝謝"
    assert notice_text(tenant, "zh", "notice.unknown") == "notice.unknown"


def test_status_text_defaults():
    profile = profile_for(_tenant())
    assert profile.status_text("in_progress", None, "es") == "En curso"
    assert profile.status_text("closed", "duplicate", "en") == "Closed: already reported"
    assert profile.status_text("closed", "unknown_resolution", "es") == "Cerrada"
    # Filipino has no built-in texts, so English is used.
    assert profile.status_text("on_hold", None, "fil") == "On hold"


def test_status_text_manifest_override():
    profile = profile_for(_tenant({"es": {"closed:fixed": "Arreglado"}}))
    assert profile.status_text("closed", "fixed", "es") == "Arreglado"
    assert profile.status_text("closed", "fixed", "en") == "Closed: fixed"


def test_service_name_language():
    tenant = _tenant()
    profile = profile_for(tenant)
    service = tenant.services["001"]
    assert profile.service_name(service, "es-US") == "Botes de basura dejados afuera"
    assert profile.service_name(service, "fil") == "Cans left out 24x7"
    assert profile.service_description(service, "fr").startswith("Garbage or recycling")


def test_texts_found_in_any_case():
    tenant = _tenant({"ES": {"closed:fixed": "Arreglado"}})
    profile = profile_for(tenant)
    service = replace(
        tenant.services["001"],
        names=MappingProxyType({"EN": "Cans left out", "Es": "Botes"}),
        descriptions=MappingProxyType({"ES": "Botes de basura"}),
    )
    assert profile.status_text("closed", "fixed", "es") == "Arreglado"
    assert profile.service_name(service, "es-US") == "Botes"
    assert profile.service_name(service, "fil") == "Cans left out"
    assert profile.service_description(service, "es") == "Botes de basura"


def test_open311_status():
    profile = profile_for(_tenant())
    assert profile.open311_status("closed") == "closed"
    assert profile.open311_status("on_hold") == "open"


def test_registered_subclass_used():
    @register_profile("profile-test-city")
    class QuietProfile(TenantProfile):
        def open311_status(self, status: str) -> str:
            return "open"

    assert isinstance(profile_for(_tenant(tenant_id="profile-test-city")), QuietProfile)
    assert type(profile_for(_tenant())) is TenantProfile


def test_group_name_localized():
    tenant = _tenant()
    [service] = tenant.services.values()
    names = tenant.manifest.profile.group_names[service.group]
    profile = profile_for(tenant)

    assert profile.group_name(service, "es") == names["es"]
    assert profile.group_name(service, "es-MX") == names["es"]
    # No Filipino name: the default language's.
    assert profile.group_name(service, "fil") == names["en"]
    assert profile.group_name(replace(service, group="Other"), "es") == "Other"
