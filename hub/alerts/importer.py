"""Bulk opt-in from CSV or JSON files, committed in chunks so a large file shows progress.

CSV columns: `places` (`lat,lon` pairs separated by `;`) or `lat` and `lon`; `languages`
(codes separated by `;`, preferred first); one column per channel (`email`, `sms`, `webhook`,
`webpush`), empty when unused; `test_opt_in` (true/false); `consent_at` (ISO 8601 with an
offset). JSON: a list of objects with `places` ([[lat, lon], ...]), `languages`, `channels`
({channel: address}), `test_opt_in` and `consent_at`.

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
from hub.alerts.subscriptions import SubscriptionInput, find_by_channels, subscribe
from hub.core.db import unit_of_work
from hub.core.errors import HubError, InvalidInput
from hub.core.tenancy import TenantContext
from privacy.fields import FieldCipher

CHUNK = 500
MAX_PROBLEMS = 20


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y")


def _consent(value: Any, line: int) -> datetime:
    try:
        consent = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidInput(
            f"record {line}: consent_at {value!r} is invalid; use ISO 8601 with an offset"
        ) from exc
    return consent


Record = SubscriptionInput | InvalidInput


def _csv_records(path: Path) -> Iterator[tuple[int, Record]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                yield line, _csv_record(path, line, row)
            except (ValueError, KeyError, TypeError) as exc:
                yield (
                    line,
                    InvalidInput(f"unreadable value ({type(exc).__name__}); check the columns"),
                )
            except InvalidInput as exc:
                yield line, exc


def _csv_record(path: Path, line: int, row: dict[str, str]) -> SubscriptionInput:
    if row.get("places"):
        places = []
        for pair in row["places"].split(";"):
            lat, lon = pair.split(",")
            places.append((float(lat), float(lon)))
    else:
        places = [(float(row["lat"]), float(row["lon"]))]
    channels = {c: row[c] for c in CHANNELS if row.get(c)}
    languages = [code for code in (row.get("languages") or "").split(";") if code]
    return SubscriptionInput(
        places=places,
        languages=languages,
        channels=channels,
        consent_at=_consent(row.get("consent_at"), line),
        test_opt_in=_truthy(row.get("test_opt_in", "")),
        source=f"import:{path.name}"[:120],
    )


def _json_records(path: Path) -> Iterator[tuple[int, Record]]:
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise InvalidInput(f"{path}: expected a JSON list of subscriber objects")
    for number, item in enumerate(records, start=1):
        try:
            yield (
                number,
                SubscriptionInput(
                    places=[(float(lat), float(lon)) for lat, lon in item.get("places") or []],
                    languages=list(item.get("languages") or []),
                    channels=dict(item.get("channels") or {}),
                    consent_at=_consent(item.get("consent_at"), number),
                    test_opt_in=bool(item.get("test_opt_in", False)),
                    source=f"import:{path.name}"[:120],
                ),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            yield number, InvalidInput(f"unreadable value ({type(exc).__name__})")
        except InvalidInput as exc:
            yield number, exc


def count_records(path: Path) -> int:
    if path.suffix.lower() == ".json":
        return len(json.loads(path.read_text(encoding="utf-8")))
    with path.open(encoding="utf-8") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def _subscribe_new(
    session: Session, ctx: TenantContext, record: SubscriptionInput, cipher: FieldCipher
) -> bool:
    """Subscribe `record` unless the tenant has a subscriber with the same channels and
    addresses; return whether it was added. A failed record leaves no rows behind.

    NOTE: a record that shares some addresses with a stored subscriber but not all of them is
    added, so the shared addresses then get each alert twice. Two imports running at the same
    time can also both add the same resident, because nothing locks the check.
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
