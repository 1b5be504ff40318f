"""Per-tenant profile: the hooks where tenants may differ, each with a documented default.

Core code calls the profile (`profile_for(tenant)`) instead of branching on a tenant id. A tenant
changes a hook's data through the `profile` section of its manifest (for example its own status
texts). A tenant that needs different behaviour gets a `TenantProfile` subclass registered with
`register_profile`, overriding only the hooks that differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tenants.languages import match_language, negotiate_language, primary_subtag, text_for
from tenants.registry import ServiceInfo, TenantInfo
from tenants.texts import DEFAULT_STATUS_TEXTS


class TenantProfile:
    """The default behaviour of every hook. Subclass it to change a hook for one tenant."""

    def __init__(self, tenant: TenantInfo) -> None:
        self.tenant = tenant

    def pick_language(self, requested: str | None) -> str:
        """Return the tenant language for a response.

        Default: the tenant language that `requested` names (`match_language`: `es-MX` picks
        `es`, `zh` picks `zh-Hant`), else the tenant default.
        """
        if requested:
            found = match_language(requested.strip(), self.tenant.languages)
            if found is not None:
                return found
        return self.tenant.default_language

    def negotiate_language(self, accept_language: str | None) -> str:
        """Return the tenant language for a response from an Accept-Language header.

        Default: the tenant language that the header prefers (`negotiate_language`), else the
        tenant default when no range matches or there is no header.
        """
        if accept_language:
            found = negotiate_language(accept_language, self.tenant.languages)
            if found is not None:
                return found
        return self.tenant.default_language

    def text_languages(self, language: str | None) -> tuple[str, ...]:
        """Return the languages to try, in order, for a resident-facing text.

        Default: the chosen tenant language, its primary subtag, the tenant default and
        English, the same order as service names and attribute texts follow.
        """
        chosen = self.pick_language(language)
        return (chosen, primary_subtag(chosen), self.tenant.default_language, "en")

    def status_text(self, status: str, resolution: str | None, language: str | None) -> str:
        """Return the resident-facing text of a request state.

        Default: the manifest's `profile.status_texts`, then the built-in texts, trying
        `closed:<resolution>` before the bare state, in the languages of `text_languages`.
        The state name itself is the last resort.
        """
        keys = [f"{status}:{resolution}", status] if resolution else [status]
        tables = (self.tenant.manifest.profile.status_texts, DEFAULT_STATUS_TEXTS)
        return first_text(tables, self.text_languages(language), keys) or status

    def open311_status(self, status: str) -> str:
        """Return the Open311 `status` (`open` or `closed`). Default: closed only when closed."""
        return "closed" if status == "closed" else "open"

    def service_name(self, service: ServiceInfo, language: str | None) -> str:
        """Return a service's name for residents. Default: the name in the chosen language,
        then in the tenant's default language."""
        return service.name(self.pick_language(language), self.tenant.default_language)

    def group_name(self, service: ServiceInfo, language: str | None) -> str:
        """Return a service's group for residents. Default: the manifest's
        `profile.group_names` in the chosen language, then in the tenant's default language,
        then the group as the service names it."""
        names = self.tenant.manifest.profile.group_names.get(service.group, {})
        return self._text(names, language) or service.group

    def service_description(self, service: ServiceInfo, language: str | None) -> str:
        """Return a service's description. Default: as `service_name`, empty when none."""
        return self._text(service.descriptions, language) or ""

    def _text(self, texts: Mapping[str, str], language: str | None) -> str | None:
        """Return the text in the chosen language, else in the tenant's default language."""
        return text_for(texts, self.pick_language(language)) or text_for(
            texts, self.tenant.default_language
        )


def first_text(
    tables: Sequence[Mapping[str, Mapping[str, str]]], languages: Sequence[str], keys: Sequence[str]
) -> str | None:
    """Return the first non-empty text found under one of `keys`, trying each table in turn
    with each of `languages`, or None. Tables map a language tag to texts by key."""
    for table in tables:
        for language in languages:
            texts = text_for(table, language) or {}
            for key in keys:
                text = texts.get(key)
                if text:
                    return text
    return None


_registered: dict[str, type[TenantProfile]] = {}


def register_profile(tenant_id: str) -> Callable[[type[TenantProfile]], type[TenantProfile]]:
    """Register a `TenantProfile` subclass for one tenant (a class decorator)."""

    def decorator(cls: type[TenantProfile]) -> type[TenantProfile]:
        _registered[tenant_id] = cls
        return cls

    return decorator


def profile_for(tenant: TenantInfo) -> TenantProfile:
    """Return the profile of `tenant`: its registered subclass, or the default profile."""
    return _registered.get(tenant.id, TenantProfile)(tenant)
