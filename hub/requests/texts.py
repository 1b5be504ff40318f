"""Resident-facing notices of intake (`service_notice`), per language.

Status texts come from the tenant profile (`tenants.profile`). A tenant overrides a notice, or
adds a language, in its manifest under `profile.status_texts` with the notice's key, for
example `{es: {notice.received: "Recibida"}}`.
"""

from __future__ import annotations

from tenants.profile import first_text, profile_for
from tenants.registry import TenantInfo

BUILT_IN: dict[str, dict[str, str]] = {
    "en": {
        "notice.received": "Thank you. Your request has been received.",
        "notice.expected": "Thank you. Your request has been received and is expected to be "
        "addressed by {expected}.",
        "notice.token": "Thank you. Your request has been queued; use the token to look up its "
        "id shortly.",
    },
    "es": {
        "notice.received": "Gracias. Hemos recibido su solicitud.",
        "notice.expected": "Gracias. Hemos recibido su solicitud y esperamos atenderla antes "
        "del {expected}.",
        "notice.token": "Gracias. Su solicitud está en cola; use el token para consultar su "
        "número en breve.",
    },
}


def notice_text(tenant: TenantInfo, language: str | None, key: str) -> str:
    """Return the notice `key` in the tenant language closest to `language`, falling back as
    status texts do (`TenantProfile.text_languages`). The key itself is the last resort."""
    profile = profile_for(tenant)
    tables = (tenant.manifest.profile.status_texts, BUILT_IN)
    return first_text(tables, profile.text_languages(language), [key]) or key
