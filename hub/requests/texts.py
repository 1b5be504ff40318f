"""Resident-facing notices of intake (`service_notice`), per language.

Status texts come from the tenant profile (`tenants.profile`). A tenant overrides a notice, or
adds a language, in its manifest under `profile.status_texts` with the notice's key, for
example `{es: {notice.received: "Recibida"}}`.
"""

from __future__ import annotations

from tenants.profile import first_text, profile_for
from tenants.registry import TenantInfo
from tenants.texts import BUILT_IN_NOTICES as BUILT_IN


def notice_text(tenant: TenantInfo, language: str | None, key: str) -> str:
    """Return the notice `key` in the tenant language closest to `language`, falling back as
    status texts do (`TenantProfile.text_languages`). The key itself is the last resort."""
    profile = profile_for(tenant)
    tables = (tenant.manifest.profile.status_texts, BUILT_IN)
    return first_text(tables, profile.text_languages(language), [key]) or key
