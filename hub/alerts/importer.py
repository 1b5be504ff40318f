"""Bulk opt-in from CSV or JSON files, committed in chunks so a large file shows progress.

CSV columns: `places` (`lat,lon` pairs separated by `;`) or `lat` and `lon`; `languages`
(codes separated by `;`, preferred first); one column per channel (`email`, `sms`, `webhook`,
`webpush`), empty when unused; `test_opt_in` (true/false); `consent_at` (ISO 8601 with an
offset). JSON: a list of objects with `places` ([[lat, lon], ...]), `languages`, `channels`
({channel: address}, where a Web Push subscription may be an object or its JSON text),
`test_opt_in` and `consent_at`. Problems name the record, the column or field and the fix.

The records have no id column, so a record is matched to a subscriber already stored by its
channels and addresses together, through a blind index (`Subscriber.channels_bidx`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub.alerts.models import CHANNELS
from hub.alerts.subscriptions import (
    SubscriptionInput,
    find_by_channels,
    lock_matching,
    subscribe,
)
from hub.core.db import unit_of_work
from hub.core.errors import HubError, InvalidInput, shown
from hub.core.tenancy import TenantContext
from privacy.fields import FieldCipher

CHUNK = 500
# Largest CSV field accepted, in characters: a subscriber's fields are addresses, coordinates
# and tags, so Python's default limit is ample.
CSV_FIELD_LIMIT = 131_072
MAX_PROBLEMS = 20

DEGREES_FIX = "give decimal degrees, such as 40.7128 for a latitude or -74.0060 for a longitude"
CONSENT_FIX = "give ISO 8601 with an offset, such as 2026-01-15T09:30:00-05:00"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y")


def _missing(value: Any) -> bool:
    return value is None or str(value).strip() == ""


def _degrees(value: Any, name: str) -> float:
    """Read one coordinate. The message names the column but not the value, because a
    resident's coordinates are personal data."""
    if _missing(value):
        raise InvalidInput(f"{name} is missing; {DEGREES_FIX}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} is not a number; {DEGREES_FIX}") from None


def _consent(value: Any, name: str) -> datetime:
    if _missing(value):
        raise InvalidInput(f"{name} is missing; {CONSENT_FIX}")
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        # `shown` repeats the value only when it cannot be an address or other free text.
        raise InvalidInput(f"{name}{shown(str(value))} is invalid; {CONSENT_FIX}") from None


Record = SubscriptionInput | InvalidInput


def _csv_records(path: Path) -> Iterator[tuple[int, Record]]:
    # The limit is process-wide and the 311 importers raise it, so it is set for each file.
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            for line, row in enumerate(reader, start=2):
                try:
                    yield line, _csv_record(path, row)
                except InvalidInput as exc:
                    yield line, exc
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise InvalidInput(
                f"{path}: invalid CSV near line {reader.line_num + 1} ({exc}); check the quoting"
            ) from None


def _csv_places(row: dict[str, str]) -> list[tuple[float, float]]:
    if row.get("places"):
        places = []
        for number, pair in enumerate(row["places"].split(";"), start=1):
            parts = pair.split(",")
            if len(parts) != 2:
                raise InvalidInput(
                    f"column places: place {number} is not a latitude,longitude pair; separate "
                    "the two numbers with ',' and the places with ';', such as "
                    "40.7128,-74.0060;40.7306,-73.9352"
                )
            name = f"column places: place {number}"
            places.append(
                (_degrees(parts[0], f"{name} latitude"), _degrees(parts[1], f"{name} longitude"))
            )
        return places
    if "lat" not in row and "lon" not in row:
        raise InvalidInput("no places column and no lat and lon columns; add either to the header")
    return [(_degrees(row.get("lat"), "column lat"), _degrees(row.get("lon"), "column lon"))]


def _csv_record(path: Path, row: dict[str, str]) -> SubscriptionInput:
    languages = [code for code in (row.get("languages") or "").split(";") if code]
    return SubscriptionInput(
        places=_csv_places(row),
        languages=languages,
        channels={c: row[c] for c in CHANNELS if row.get(c)},
        consent_at=_consent(row.get("consent_at"), "column consent_at"),
        test_opt_in=_truthy(row.get("test_opt_in", "")),
        source=f"import:{path.name}"[:120],
    )


def _read_json(path: Path) -> list[Any]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "give a JSON list of subscriber objects"
        ) from None
    if not isinstance(records, list):
        raise InvalidInput(f"{path}: expected a JSON list of subscriber objects")
    return records


def _not_utf8(path: Path) -> InvalidInput:
    return InvalidInput(f"{path} is not UTF-8 text; save it as UTF-8 and import it again")


def _json_records(path: Path) -> Iterator[tuple[int, Record]]:
    for number, item in enumerate(_read_json(path), start=1):
        try:
            yield number, _json_record(path, item)
        except InvalidInput as exc:
            yield number, exc


def _json_places(value: Any) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        raise InvalidInput(
            "field places is not a list; give [[latitude, longitude], ...] in decimal degrees"
        )
    places = []
    for number, place in enumerate(value, start=1):
        if not isinstance(place, list) or len(place) != 2:
            raise InvalidInput(
                f"field places: place {number} is not a [latitude, longitude] pair; give one "
                "such as [40.7128, -74.006]"
            )
        name = f"field places: place {number}"
        places.append(
            (_degrees(place[0], f"{name} latitude"), _degrees(place[1], f"{name} longitude"))
        )
    return places


def _json_channels(value: Any) -> dict[str, str]:
    """Read `channels`. A Web Push subscription may be given as an object or as its JSON text."""
    if not isinstance(value, dict):
        raise InvalidInput(
            'field channels is not an object; give one such as {"email": "name@example.org"}'
        )
    channels = {}
    for channel, address in value.items():
        if channel == "webpush" and isinstance(address, dict):
            address = json.dumps(address)
        if not isinstance(address, str):
            raise InvalidInput(f"field channels: the {channel} address is not text; give a string")
        channels[str(channel)] = address
    return channels


def _json_record(path: Path, item: Any) -> SubscriptionInput:
    if not isinstance(item, dict):
        raise InvalidInput(
            "this entry is not a JSON object; give each subscriber as an object with places, "
            "languages, channels, test_opt_in and consent_at"
        )
    languages = item.get("languages") or []
    if not isinstance(languages, list) or not all(isinstance(code, str) for code in languages):
        raise InvalidInput('field languages is not a list of codes; give one such as ["es", "en"]')
    return SubscriptionInput(
        places=_json_places(item.get("places") or []),
        languages=languages,
        channels=_json_channels(item.get("channels") or {}),
        consent_at=_consent(item.get("consent_at"), "field consent_at"),
        test_opt_in=_truthy(item.get("test_opt_in", False)),
        source=f"import:{path.name}"[:120],
    )


def count_records(path: Path) -> int:
    if path.suffix.lower() == ".json":
        return len(_read_json(path))
    try:
        with path.open(encoding="utf-8") as handle:
            return max(sum(1 for _ in handle) - 1, 0)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _subscribe_new(
    session: Session, ctx: TenantContext, record: SubscriptionInput, cipher: FieldCipher
) -> bool:
    """Subscribe `record` unless the tenant has a subscriber with the same channels and
    addresses; return whether it was added. A failed record leaves no rows behind. The caller
    holds the tenant's opt-in lock (`lock_matching`), so the match also finds
    the residents that other opt-ins committed.

    A record that shares some addresses with a stored subscriber but not all of them is added
    as a new subscriber. Its shared addresses are linked to the stored ones, so each alert
    reaches such an address once (`hub.alerts.targeting.recipient_rows`).
    """
    with session.begin_nested():
        if find_by_channels(session, ctx, record) is not None:
            return False
        subscribe(session, ctx, record, cipher=cipher)
    return True


def import_subscribers(
    engine: Engine | None,
    tenant_id: str,
    path: Path,
    *,
    actor: str = "cli:operator",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Opt in every record of `path`; return counts and the first problems (by record number).

    A bad record is skipped and reported; the others are imported. A record whose channels and
    addresses match a subscriber of the tenant, active or unsubscribed, is skipped and counted
    in `skipped_existing`, so importing a file again creates no duplicate. Addresses never
    appear in the problems.
    """
    if path.suffix.lower() == ".json":
        records = _json_records(path)
    elif path.suffix.lower() == ".csv":
        records = _csv_records(path)
    else:
        raise InvalidInput(f"{path}: unknown file type; use a .csv or .json file")
    ctx = TenantContext(tenant_id, actor=actor)
    imported = 0
    skipped_existing = 0
    problems: list[str] = []
    skipped = 0
    done = False
    while not done:
        with unit_of_work(ctx, engine=engine) as session:
            lock_matching(session, tenant_id)
            cipher = FieldCipher.for_tenant(session, tenant_id)
            handled = 0
            for line, record in records:
                handled += 1
                error = record if isinstance(record, InvalidInput) else None
                added = False
                if error is None:
                    try:
                        added = _subscribe_new(session, ctx, record, cipher)
                    except HubError as exc:
                        error = exc
                if error is not None:
                    skipped += 1
                    if len(problems) < MAX_PROBLEMS:
                        problems.append(f"record {line}: {error.message}")
                elif added:
                    imported += 1
                else:
                    skipped_existing += 1
                if handled >= CHUNK:
                    break
            else:
                done = True
        if progress is not None:
            progress(handled)
    return {
        "tenant_id": tenant_id,
        "imported": imported,
        "skipped_existing": skipped_existing,
        "skipped": skipped,
        "problems": problems,
    }
