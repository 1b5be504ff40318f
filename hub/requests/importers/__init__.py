"""Importers for real 311 exports: NYC, San Francisco, Boston and Open311 `requests.json`.

`FORMATS` maps each format name accepted by `hub import` to its parser;
`hub.requests.importers.service.run_import` reads a file in one of them into a tenant.
"""

from __future__ import annotations

from hub.core.errors import InvalidInput
from hub.requests.importers.boston import BostonCsv, BostonJsonl
from hub.requests.importers.formats import ExportFormat
from hub.requests.importers.nyc import NycCsv, NycJson
from hub.requests.importers.open311 import Open311Json
from hub.requests.importers.sf import SfCsv

FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (NycCsv(), NycJson(), SfCsv(), BostonCsv(), BostonJsonl(), Open311Json())
}


def get_format(name: str) -> ExportFormat:
    """Return the format called `name`, or raise InvalidInput listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown import format {name!r}; use one of: {', '.join(FORMATS)}"
        ) from None


__all__ = ["FORMATS", "ExportFormat", "get_format"]
