"""Map a source's category (NYC "Complaint Type", SF "Category", ...) to a tenant service code.

The first rule that names a service in the tenant's catalog wins:

1. the service code the source states itself (Open311 `service_code`);

then for the subcategory (SF "Request Type"), if any, and after it the category:

2. a service whose manifest `aliases` contain the category (case-insensitive);
3. a service whose code is the category, or the category in slug form (`Street Light
   Condition` -> `street-light-condition` or `street_light_condition`);
4. a service whose name in any language is the category;
5. the format's built-in table (`ExportFormat.categories`) of common categories to the hub's
   conventional codes (`noise`, `pothole`, `streetlight`, ...), when the tenant has that code;
6. the fallback service: the `--fallback` option, else a service with the code `other`.

A category resolved by the fallback is imported and counted as unmapped in the report. With no
fallback the row is rejected with the category named, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hub.core.errors import InvalidInput
from hub.requests.catalog import CatalogService, TenantSnapshot
from hub.requests.importers.formats import ExportFormat, RowError, SourceRecord

FALLBACK_CODE = "other"
_SLUG_SEPARATORS = re.compile(r"[^0-9a-z]+")


def _slugs(category: str) -> tuple[str, str]:
    words = _SLUG_SEPARATORS.sub(" ", category.lower()).split()
    return "-".join(words), "_".join(words)


def category_label(record: SourceRecord) -> str:
    """Return the category as the report names it: `Category / Subcategory` when both exist."""
    if record.subcategory:
        return f"{record.category} / {record.subcategory}"
    return record.category


class CategoryMapper:
    """Resolves categories of one format against one tenant's catalog; results are cached."""

    def __init__(
        self, tenant: TenantSnapshot, export_format: ExportFormat, *, fallback: str | None = None
    ):
        self.tenant = tenant
        self.format = export_format
        self.services: Mapping[str, CatalogService] = tenant.services
        self._by_alias: dict[str, str] = {}
        for spec in tenant.manifest.services:
            for alias in spec.aliases:
                self._by_alias.setdefault(alias.strip().lower(), spec.code)
        self._by_name: dict[str, str] = {}
        for code, service in self.services.items():
            for name in (service.names or {}).values():
                self._by_name.setdefault(name.strip().lower(), code)

        self.fallback = fallback
        if self.fallback is not None and self.fallback not in self.services:
            raise InvalidInput(
                f"fallback service {self.fallback!r} is not in tenant {tenant.id}'s catalog; "
                f"use one of: {', '.join(sorted(self.services))}"
            )
        if self.fallback is None and FALLBACK_CODE in self.services:
            self.fallback = FALLBACK_CODE
        self._cache: dict[tuple[str | None, str | None, str], tuple[str | None, bool]] = {}

    def resolve(self, record: SourceRecord, column: str) -> tuple[str, bool]:
        """Return (service code, mapped); `mapped` is False when the fallback was used.

        Raises RowError when the category matches no service and there is no fallback.
        """
        key = (record.service_code, record.subcategory, record.category)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._lookup(record.service_code, record.subcategory, record.category)
            self._cache[key] = cached
        code, mapped = cached
        if code is None:
            raise RowError(
                column,
                "unmapped_category",
                f"no service matches category {category_label(record)!r}; add it to a "
                "service's aliases in the manifest or pass --fallback CODE",
            )
        return code, mapped

    def _lookup(
        self, source_code: str | None, subcategory: str | None, category: str
    ) -> tuple[str | None, bool]:
        if source_code is not None and source_code in self.services:
            return source_code, True
        for name in (subcategory, category):
            if name is not None:
                code = self._match(name)
                if code is not None:
                    return code, True
        return self.fallback, False

    def _match(self, category: str) -> str | None:
        lowered = category.strip().lower()
        candidates = [
            self._by_alias.get(lowered),
            category if category in self.services else None,
            *(slug for slug in _slugs(category) if slug in self.services),
            self._by_name.get(lowered),
        ]
        builtin = self.format.categories.get(lowered)
        if builtin is not None and builtin in self.services:
            candidates.append(builtin)
        return next((code for code in candidates if code is not None), None)
