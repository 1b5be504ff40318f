"""Replay of a real 311 export through the Open311 API, parsed by the `hub import` formats.

Each row becomes a `POST requests` form: the service code that the importers' category mapping
picks for the tenant, the row's coordinates, address and description. Rows the format cannot
parse or map are counted by reason and skipped. Required attributes that real exports never
carry get a generated value, as in `hub.cli.demo.generate`.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from hub.cli.demo.generate import attribute_fields
from hub.core.errors import InvalidInput, each_error
from hub.requests.importers import get_format
from hub.requests.importers.localtime import LocalTimes, load_zone
from hub.requests.importers.mapping import CategoryMapper
from hub.requests.importers.readers import ExportFile
from tenants.manifest import Manifest
from tenants.registry import get_tenant

Form = list[tuple[str, str]]


def export_forms(
    path: Path,
    format_name: str,
    manifest: Manifest,
    *,
    jurisdiction_id: str,
    api_key: str,
    limit: int,
    seed: int,
) -> tuple[list[Form], Counter[str]]:
    """Return up to `limit` forms built from the export's rows, and skipped rows by reason."""
    export_format = get_format(format_name)
    tenant = get_tenant(manifest.id)
    if tenant is None:
        raise ValueError(f"tenant {manifest.id} is not onboarded")
    mapper = CategoryMapper(tenant, export_format)
    times = LocalTimes(load_zone(tenant.timezone))
    specs = {service.code: service for service in manifest.services}
    rng = random.Random(seed)

    forms: list[Form] = []
    skipped: Counter[str] = Counter()
    with ExportFile(path) as export:
        for position, row in export_format.rows(export):
            if len(forms) >= limit:
                break
            try:
                record = export_format.parse_row(position, row, times)
                code, _mapped = mapper.resolve(record, export_format.category_column)
            except InvalidInput as exc:
                # A row with several problems is counted once, under the first.
                skipped[each_error(exc)[0].code] += 1
                continue
            if record.lat is None or record.lon is None:
                skipped["no_location"] += 1
                continue
            form: Form = [
                ("jurisdiction_id", jurisdiction_id),
                ("api_key", api_key),
                ("service_code", code),
                ("lat", f"{record.lat:.6f}"),
                ("long", f"{record.lon:.6f}"),
                ("description", (record.description or record.category)[:4000]),
            ]
            if record.address:
                form.append(("address_string", record.address))
            for attribute in specs[code].attributes if code in specs else []:
                if attribute.variable and attribute.required:
                    form.extend(attribute_fields(attribute, rng))
            forms.append(form)
    return forms, skipped
