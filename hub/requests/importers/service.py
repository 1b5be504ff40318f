"""Run one import: read an export row by row, map it, and write it in batched transactions.

Each batch is one transaction: the ids already stored for this tenant and source are looked up
in one query and skipped, the rest are encrypted and inserted with their status events. A
re-import of the same file therefore changes nothing, and a failed batch leaves the earlier
batches committed. Imported requests are history: they get no agency deliveries and no routing
task, because the source city handled them already.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, String, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.core.db import unit_of_work
from hub.core.errors import ErrorCollector, HubError, InvalidInput, each_error
from hub.core.ids import tracking_code
from hub.core.tenancy import TenantContext
from hub.requests import catalog
from hub.requests.catalog import TenantSnapshot
from hub.requests.importers.formats import ExportFormat, RowError, SourceRecord
from hub.requests.importers.localtime import LocalTimes, load_zone
from hub.requests.importers.mapping import CategoryMapper, category_label
from hub.requests.importers.metrics import IMPORT_BATCH_LATENCY, IMPORT_ROWS
from hub.requests.importers.readers import ExportFile
from hub.requests.models import ServiceRequest, StatusEvent
from hub.requests.records import PersonalFields, seal_event_note, sealed_request_columns
from hub.requests.validation import MAX_DESCRIPTION_CHARS, check_media_url, check_text
from privacy.fields import FieldCipher
from privacy.retention import cleared_columns, past_retention, retention_cutoffs

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 1000
# Rejected rows listed one by one in the report; the counts by reason cover all of them.
MAX_LISTED_REJECTIONS = 100
# Distinct unmapped categories counted by name; further ones are counted under "(more)".
MAX_LISTED_CATEGORIES = 500
MAX_ADDRESS_CHARS = 500
# Rows between two progress reports.
PROGRESS_EVERY_ROWS = 250


@dataclass
class Rejection:
    """One rejected row. For a row with several problems, `column` and `reason` name each of
    its columns and reasons once, and `message` has every message, all in the order they were
    found and joined with `PROBLEM_SEPARATOR`."""

    position: int
    column: str
    reason: str
    message: str


PROBLEM_SEPARATOR = "; "


@dataclass
class ImportReport:
    tenant_id: str
    format: str
    file: str
    source: str
    # "line" for CSV and JSON lines, "record" (1-based item number) for JSON arrays.
    position_kind: str
    read: int = 0
    imported: int = 0
    skipped_existing: int = 0
    rejected: int = 0
    # Rows with readable coordinates, and those of them outside the tenant's service area.
    located: int = 0
    outside_service_area: int = 0
    # Closed before the tenant's retention period: stored without personal fields.
    past_retention: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)
    unmapped_categories: Counter[str] = field(default_factory=Counter)
    dst_adjustments: dict[str, int] = field(default_factory=dict)
    dst_examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def reject(self, position: int, errors: Sequence[InvalidInput]) -> None:
        """Count a rejected row under each of its reasons, and list it with all of them."""
        problems = [item for error in errors for item in each_error(error)]
        reasons = list(dict.fromkeys(problem.code for problem in problems))
        self.rejected += 1
        self.rejected_by_reason.update(reasons)
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            columns = dict.fromkeys(problem.field or "" for problem in problems)
            self.rejections.append(
                Rejection(
                    position,
                    PROBLEM_SEPARATOR.join(columns),
                    PROBLEM_SEPARATOR.join(reasons),
                    PROBLEM_SEPARATOR.join(problem.message for problem in problems),
                )
            )

    def count_unmapped(self, category: str) -> None:
        if category in self.unmapped_categories or (
            len(self.unmapped_categories) < MAX_LISTED_CATEGORIES
        ):
            self.unmapped_categories[category] += 1
        else:
            self.unmapped_categories["(more)"] += 1

    def warnings(self) -> list[str]:
        """Return the report's warnings: signs that the file is not the tenant's."""
        if self.outside_service_area * 2 > self.located:
            return [
                f"{self.outside_service_area} of the {self.located} rows with coordinates are "
                f"outside tenant {self.tenant_id}'s service area, so the file may be another "
                "city's export; check --tenant, or the manifest's service_area (GeoJSON "
                "positions are [lon, lat])"
            ]
        return []

    def as_dict(self) -> dict[str, Any]:
        rate = self.read / self.seconds if self.seconds > 0 else None
        return {
            "tenant": self.tenant_id,
            "format": self.format,
            "file": self.file,
            "source": self.source,
            "read": self.read,
            "imported": self.imported,
            "skipped_existing": self.skipped_existing,
            "rejected": self.rejected,
            "located": self.located,
            "outside_service_area": self.outside_service_area,
            "warnings": self.warnings(),
            "past_retention": self.past_retention,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "rejections": [
                {
                    self.position_kind: r.position,
                    "column": r.column,
                    "reason": r.reason,
                    "message": r.message,
                }
                for r in self.rejections
            ],
            "unmapped_categories": dict(self.unmapped_categories.most_common()),
            "dst_adjustments": self.dst_adjustments,
            "dst_examples": self.dst_examples,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(rate, 1) if rate else None,
        }


def _check_value(
    errors: ErrorCollector, check: Callable[..., None], *args: Any, **kwargs: Any
) -> None:
    """Run one of intake's checks on a row's value, adding its problem to `errors` as a
    RowError with the reason `invalid_value`."""
    try:
        check(*args, **kwargs)
    except InvalidInput as exc:
        errors.add(RowError(exc.field or "text", "invalid_value", exc.message))


@dataclass(frozen=True)
class Progress:
    bytes_read: int
    bytes_total: int
    rows_read: int


@dataclass
class _Pending:
    record: SourceRecord
    service_code: str
    # The source category when it matched nothing and the row goes to the fallback service.
    unmapped_category: str | None = None


class Importer:
    """One import of one file into one tenant. Use `run()` once."""

    def __init__(
        self,
        ctx: TenantContext,
        tenant: TenantSnapshot,
        export_format: ExportFormat,
        path: Path,
        *,
        engine: Engine | None = None,
        limit: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fallback: str | None = None,
        progress: Callable[[Progress], None] | None = None,
    ):
        if ctx.tenant_id != tenant.id:
            raise InvalidInput(f"context tenant {ctx.tenant_id} does not match {tenant.id}")
        if limit is not None and limit < 1:
            raise InvalidInput(f"limit must be 1 or more, got {limit}")
        if not 1 <= batch_size <= 50_000:
            raise InvalidInput(f"batch size must be between 1 and 50000, got {batch_size}")
        self.ctx = ctx
        self.tenant = tenant
        self.format = export_format
        self.path = path
        self.engine = engine
        self.limit = limit
        self.batch_size = batch_size
        self.progress = progress
        self.mapper = CategoryMapper(tenant, export_format, fallback=fallback)
        self.times = LocalTimes(load_zone(tenant.timezone))
        self.area = catalog.service_area(tenant)
        self.report = ImportReport(
            tenant_id=tenant.id,
            format=export_format.name,
            file=path.name,
            source=export_format.source,
            position_kind="record" if export_format.container == "json" else "line",
        )

    def run(self) -> ImportReport:
        started = time.perf_counter()
        log.info("import_started", tenant_id=self.tenant.id, format=self.format.name)
        batch: list[_Pending] = []
        with ExportFile(self.path) as export:
            for position, row in self.format.rows(export):
                self.report.read += 1
                pending = self._prepare(position, row)
                if pending is not None:
                    batch.append(pending)
                if len(batch) >= self.batch_size:
                    self._flush(batch)
                    batch = []
                if self.report.read % PROGRESS_EVERY_ROWS == 0:
                    self._tick(export)
                if self.limit is not None and self.report.read >= self.limit:
                    break
            if batch:
                self._flush(batch)
            self._tick(export)

        self.report.dst_adjustments = self.times.counts()
        self.report.dst_examples = {k: v for k, v in self.times.examples.items() if v}
        self.report.seconds = time.perf_counter() - started
        IMPORT_ROWS.labels(self.tenant.id, self.format.name, "rejected").inc(self.report.rejected)
        log.info(
            "import_finished",
            tenant_id=self.tenant.id,
            format=self.format.name,
            read=self.report.read,
            imported=self.report.imported,
            skipped_existing=self.report.skipped_existing,
            rejected=self.report.rejected,
            seconds=round(self.report.seconds, 3),
        )
        return self.report

    def _tick(self, export: ExportFile) -> None:
        if self.progress is not None:
            self.progress(Progress(export.bytes_read, export.size, self.report.read))

    # -- one row -------------------------------------------------------------------------

    def _prepare(self, position: int, row: dict[str, Any]) -> _Pending | None:
        """Return the row ready to write, or None after rejecting it with all its problems."""
        errors = ErrorCollector()
        record = self.format.parse_row(position, row, self.times, errors)
        code, mapped = None, True
        # A row without a category has its missing value reported already.
        if record.category is not None:
            resolved = errors.check(self.mapper.resolve, record, self.format.category_column)
            code, mapped = resolved or (None, True)
            if resolved is None:
                self.report.count_unmapped(category_label(record))
        self._check(record, errors)
        if errors:
            self.report.reject(position, errors.errors)
            return None
        # A row for the fallback service is listed under its category once it is imported,
        # so that an alias can be added. A row already stored is not counted.
        return _Pending(record, code, None if mapped else category_label(record))

    def _check(self, record: SourceRecord, errors: ErrorCollector) -> None:
        """Add the row's location and text problems to `errors`."""
        # Coordinates that could not be read are reported as such, not again as no location.
        unreadable = any(error.code == "invalid_coordinates" for error in errors.errors)
        if record.lat is not None and record.lon is not None:
            self.report.located += 1
            if self.area is not None and not self.area.contains(record.lat, record.lon):
                self.report.outside_service_area += 1
                errors.add(
                    RowError(
                        "coordinates",
                        "outside_service_area",
                        f"the location is outside tenant {self.tenant.id}'s service area",
                    )
                )
        elif record.address is None and not unreadable:
            errors.add(
                RowError(
                    "coordinates",
                    "missing_location",
                    "the row has neither coordinates nor an address",
                )
            )
        checks = (
            ("description", record.description, MAX_DESCRIPTION_CHARS),
            ("address", record.address, MAX_ADDRESS_CHARS),
            ("status note", record.status_note, MAX_DESCRIPTION_CHARS),
        )
        for name, value, max_chars in checks:
            _check_value(errors, check_text, name, value, max_chars=max_chars)
        _check_value(errors, check_media_url, record.media_url)

    # -- one batch -----------------------------------------------------------------------

    def _flush(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            fresh, existing = self._write(batch)
        except IntegrityError:
            # Another import of the same source committed some of these ids after the lookup;
            # the lookup on retry finds them and skips them.
            log.warning("import_batch_retried", tenant_id=self.tenant.id, rows=len(batch))
            fresh, existing = self._write(batch)
        imported = len(fresh)
        for pending in fresh:
            if pending.unmapped_category is not None:
                self.report.count_unmapped(pending.unmapped_category)
        self.report.imported += imported
        self.report.skipped_existing += existing
        IMPORT_ROWS.labels(self.tenant.id, self.format.name, "imported").inc(imported)
        IMPORT_ROWS.labels(self.tenant.id, self.format.name, "existing").inc(existing)
        IMPORT_BATCH_LATENCY.labels(self.format.name).observe(time.perf_counter() - started)

    def _write(self, batch: list[_Pending]) -> tuple[list[_Pending], int]:
        """Store the rows of `batch` not stored yet; return them and the count of the others."""
        with unit_of_work(self.ctx, engine=self.engine) as session:
            stored = self._stored_ids(session, [p.record.source_id for p in batch])
            fresh: dict[str, _Pending] = {}
            for pending in batch:
                source_id = pending.record.source_id
                if source_id not in stored and source_id not in fresh:
                    fresh[source_id] = pending
            if not fresh:
                return [], len(batch)

            cipher = FieldCipher.for_tenant(session, self.tenant.id)
            cutoffs = retention_cutoffs(session, self.tenant.id)
            requests, events, notes = self._build(cipher, list(fresh.values()), cutoffs)
            # Core executemany on the tables: ORM objects or ORM bulk inserts cost several
            # times more per row here. The rows carry tenant_id explicitly, and PostgreSQL's
            # row-level security still checks it.
            session.execute(insert(ServiceRequest.__table__), requests)
            session.execute(insert(StatusEvent.__table__), events)
            # A note's ciphertext is bound to its event's id, known only after the insert.
            # Each imported request has at most one event per status, so (request, status)
            # finds the id. One query is much faster than RETURNING row by row on SQLite.
            event_ids = self._event_ids(session, [row["id"] for row in requests])
            sealed = []
            for index, note in notes:
                event = events[index]
                event_id = event_ids[(event["request_id"], event["status"])]
                sealed.append(
                    {
                        "id": event_id,
                        "note_enc": seal_event_note(cipher, event_id, note),
                        "dek_version": cipher.dek_version,
                    }
                )
            if sealed:
                session.execute(update(StatusEvent), sealed)
        return list(fresh.values()), len(batch) - len(fresh)

    def _event_ids(self, session: Session, request_ids: list[str]) -> dict[tuple[str, str], int]:
        statement = select(StatusEvent.request_id, StatusEvent.status, StatusEvent.id).where(
            StatusEvent.tenant_id == self.tenant.id, StatusEvent.request_id.in_(request_ids)
        )
        return {(request_id, status): id_ for request_id, status, id_ in session.execute(statement)}

    def _stored_ids(self, session: Session, source_ids: list[str]) -> set[str]:
        matches = [
            ServiceRequest.tenant_id == self.tenant.id,
            ServiceRequest.source == self.format.source,
        ]
        if session.get_bind().dialect.name == "postgresql":
            # One index probe per batch id. With `source_id IN (...)` PostgreSQL may scan every
            # row of the tenant's source and filter it (its plan on fresh tables, before
            # autovacuum's ANALYZE), which grows with the rows already imported.
            ids = (
                func.unnest(
                    bindparam("source_ids", value=sorted(set(source_ids)), type_=ARRAY(String))
                )
                .table_valued("source_id")
                .render_derived(name="batch_ids")
            )
            probe = exists().where(*matches, ServiceRequest.source_id == ids.c.source_id)
            return set(session.scalars(select(ids.c.source_id).where(probe)))
        statement = select(ServiceRequest.source_id).where(
            *matches, ServiceRequest.source_id.in_(set(source_ids))
        )
        return set(session.scalars(statement))

    def _build(
        self,
        cipher: FieldCipher,
        batch: list[_Pending],
        cutoffs: dict[str, tuple[str, datetime]],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[int, str]]]:
        """Return the request rows, the event rows and (event index, note) pairs to seal.

        `cutoffs` are the tenant's retention cutoffs (`privacy.retention.retention_cutoffs`).
        """
        actor = f"import:{self.format.name}"
        requests: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        notes: list[tuple[int, str]] = []
        for pending in batch:
            record = pending.record
            service = self.tenant.services[pending.service_code]
            request_id = tracking_code()
            closed_at = record.closed_at if record.status == "closed" else None
            # A request closed before the retention period keeps no personal data: the daily
            # purge would clear it, so it is never stored.
            expired = past_retention(
                cutoffs, ServiceRequest.__tablename__, {"closed_at": closed_at}
            )
            personal = (
                PersonalFields()
                if expired
                else PersonalFields(
                    description=record.description,
                    address=record.address,
                    media_url=record.media_url,
                )
            )
            row = {
                "id": request_id,
                "tenant_id": self.tenant.id,
                "service_code": service.code,
                "status": record.status,
                "resolution": record.resolution,
                "agency_code": service.agency_code,
                "requested_at": record.requested_at,
                "updated_at": record.updated_at or record.closed_at or record.requested_at,
                "expected_at": record.expected_at,
                "closed_at": closed_at,
                "zipcode": (record.zipcode or "")[:16] or None,
                "channel": record.channel,
                "source": self.format.source,
                "source_id": record.source_id,
                **sealed_request_columns(
                    cipher, self.tenant, service, request_id, personal, record.lat, record.lon
                ),
            }
            if expired:
                # Stored as the purge leaves it, with only the row's own keys, because the rows
                # of one statement must have the same keys and imported rows have no blind
                # indexes. NOTE: a request closed before the `requests` period is imported
                # too, and the next purge deletes it.
                cleared = cleared_columns(ServiceRequest.__tablename__)
                row.update({name: value for name, value in cleared.items() if name in row})
                self.report.past_retention += 1
            requests.append(row)
            for event, note in self._events(request_id, record, actor):
                if note is not None and not past_retention(
                    cutoffs, StatusEvent.__tablename__, event
                ):
                    notes.append((len(events), note))
                events.append(event)
        return requests, events, notes

    def _events(
        self, request_id: str, record: SourceRecord, actor: str
    ) -> list[tuple[dict[str, Any], str | None]]:
        """Return the filing event and, when the source reports a later state, one for it."""

        def event(status: str, at: Any, resolution: str | None = None) -> dict[str, Any]:
            return {
                "tenant_id": self.tenant.id,
                "request_id": request_id,
                "at": at,
                "status": status,
                "resolution": resolution,
                "actor": actor,
                "channel": "import",
            }

        if record.status == "submitted":
            return [(event("submitted", record.requested_at), record.status_note)]
        when = record.closed_at if record.status == "closed" else None
        when = when or record.updated_at or record.requested_at
        return [
            (event("submitted", record.requested_at), None),
            (event(record.status, when, record.resolution), record.status_note),
        ]


def run_import(
    ctx: TenantContext,
    tenant: TenantSnapshot,
    export_format: ExportFormat,
    path: Path,
    **options: Any,
) -> ImportReport:
    """Import `path` in `export_format` into the tenant; see `Importer` for the options."""
    try:
        return Importer(ctx, tenant, export_format, path, **options).run()
    except HubError:
        raise
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}; check the path") from None
