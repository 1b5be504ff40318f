"""Resident-facing notices of intake (`service_notice`), per language.

Status texts come from the tenant profile (`tenants.profile`). A tenant overrides a notice, or
adds a language, in its manifest under `profile.status_texts` with the notice's key, for
example `{es: {notice.received: "Recibida"}}`.
"""

from __future__ import annotations

import math
from typing import Any

import structlog

from hub.core.logging import RepeatLimiter
from tenants.profile import first_text, profile_for
from tenants.registry import TenantInfo
from tenants.texts import BUILT_IN_NOTICES as BUILT_IN

log = structlog.get_logger(__name__)

# Logs a stored template that cannot be filled once per tenant and key, for the life of the
# process: every request in that language would otherwise log it again.
_template_log = RepeatLimiter(math.inf)


def notice_text(tenant: TenantInfo, language: str | None, key: str) -> str:
    """Return the notice `key` in the tenant language closest to `language`, falling back as
    status texts do (`TenantProfile.text_languages`). The key itself is the last resort."""
    profile = profile_for(tenant)
    tables = (tenant.manifest.profile.status_texts, BUILT_IN)
    return first_text(tables, profile.text_languages(language), [key]) or key


def format_notice(tenant: TenantInfo, language: str | None, key: str, **values: Any) -> str:
    """Return the notice `key` as `notice_text` finds it, with `values` filled in.

    A manifest stored before validation checked placeholders may have a template that
    `str.format` cannot fill, such as one with `{date}`. Intake must still file the request,
    so it replaces such a template by the built-in text of the key and logs a warning.
    """
    template = notice_text(tenant, language, key)
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        _template_log.log(
            log.warning,
            "notice_template_invalid",
            key=(tenant.id, key),
            tenant_id=tenant.id,
            text_key=key,
            language=language,
            error=f"{type(exc).__name__}: {exc}",
        )
    languages = profile_for(tenant).text_languages(language)
    built_in = first_text((BUILT_IN,), languages, [key]) or key
    return built_in.format(**values)
