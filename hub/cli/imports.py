"""`hub import FORMAT FILE --tenant ID`: load a city's 311 export into a tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from hub.cli.output import (
    JSON_OPTION,
    cli_errors,
    console,
    emit,
    err_console,
    fail,
    require_file,
    table,
)
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.tenancy import TenantContext
from hub.requests.importers import FORMATS, get_format
from hub.requests.importers.service import DEFAULT_BATCH_SIZE, run_import
from hub.requests.importers.service import Progress as ImportProgress
from tenants.registry import get_tenant

# Rejected rows and unmapped categories printed in the text report; --json lists them all.
SHOWN_REJECTIONS = 20
SHOWN_CATEGORIES = 15


def resolve_tenant(tenant_id: str) -> Any:
    """Return the active tenant's snapshot, or exit with a message naming the id."""
    tenant = get_tenant(tenant_id)
    if tenant is None:
        fail(f"tenant {tenant_id!r} not found; onboard it with `hub tenants onboard FILE` first")
    if not tenant.active:
        fail(f"tenant {tenant_id!r} is offboarded; this command needs an active tenant")
    return tenant


def import_command(
    format_name: str = typer.Argument(
        ..., metavar="FORMAT", help=f"Export format, one of: {', '.join(FORMATS)}."
    ),
    file: Path = typer.Argument(..., help="The export file (CSV, JSON array or JSON lines)."),
    tenant_id: str = typer.Option(..., "--tenant", help="Id of the tenant to import into."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Stop after reading this many rows."
    ),
    fallback: str | None = typer.Option(
        None,
        "--fallback",
        help="Service code for categories that match no service; without it such rows are "
        "rejected and listed.",
    ),
    batch_size: int = typer.Option(
        DEFAULT_BATCH_SIZE, "--batch-size", min=1, max=50_000, help="Rows per transaction."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Import a 311 export into a tenant. Rows already imported are skipped, so re-running
    the same file changes nothing. Local times are read in the tenant's time zone."""
    configure_logging()
    with cli_errors():
        export_format = get_format(format_name)
        require_file(file)
        upgrade()
        tenant = resolve_tenant(tenant_id)
        ctx = TenantContext(tenant.id, actor="cli:import")
        with ProgressBar(file, limit=limit) as update:
            report = run_import(
                ctx,
                tenant,
                export_format,
                file,
                limit=limit,
                batch_size=batch_size,
                fallback=fallback,
                progress=update,
            )
    emit(report.as_dict(), as_json, _render)


class ProgressBar:
    """A rich progress bar on stderr over the bytes of the file read so far, or over the rows
    read when `--limit` stops the import before the end of the file.

    The bar starts with the first progress report, so a file rejected on its header prints
    only the error.
    """

    def __init__(self, file: Path, *, limit: int | None = None):
        self.file = file
        self.limit = limit
        amount = MofNCompleteColumn() if limit else DownloadColumn()
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            amount,
            TextColumn("{task.fields[rows]} rows"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.task: Any = None
        self.rows_read = 0

    def __enter__(self):
        return self.update

    def update(self, progress: ImportProgress) -> None:
        if self.task is None:
            self.bar.start()
            total = self.limit or progress.bytes_total
            self.task = self.bar.add_task(f"importing {self.file.name}", total=total, rows=0)
        self.rows_read = progress.rows_read
        if self.limit:
            completed = min(progress.rows_read, self.limit)
        else:
            completed = progress.bytes_read
        self.bar.update(self.task, completed=completed, rows=progress.rows_read)

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if self.task is None:
            return
        if exc_type is None and self.limit and self.rows_read < self.limit:
            # The file ended before the limit: the rows read were all the work.
            self.bar.update(self.task, total=self.rows_read, completed=self.rows_read)
        self.bar.stop()


def _render(report: dict[str, Any]) -> None:
    console.print(
        f"{report['format']} {report['file']} -> tenant {report['tenant']}: "
        f"read {report['read']}, imported {report['imported']}, "
        f"skipped as already present {report['skipped_existing']}, "
        f"rejected {report['rejected']} ({report['seconds']} s)",
        highlight=False,
    )
    if report["past_retention"]:
        console.print(
            f"{report['past_retention']} imported requests were closed before the tenant's "
            "personal-data retention period and were stored without their personal fields "
            "(description, address, media, exact location)",
            highlight=False,
        )
    dst = report["dst_adjustments"]
    console.print(
        f"DST adjustments: {dst['ambiguous']} ambiguous (first occurrence taken), "
        f"{dst['nonexistent']} nonexistent (shifted forward)",
        highlight=False,
    )
    if report["rejected_by_reason"]:
        title = "Rejected rows by reason"
        if sum(report["rejected_by_reason"].values()) > report["rejected"]:
            title += " (a row with several problems counts under each of its reasons)"
        table(
            title,
            ["reason", "rows"],
            sorted(report["rejected_by_reason"].items(), key=lambda item: -item[1]),
        )
    if report["unmapped_categories"]:
        items = list(report["unmapped_categories"].items())
        table(
            f"Unmapped categories ({len(items)}; top {min(len(items), SHOWN_CATEGORIES)})",
            ["category", "rows"],
            items[:SHOWN_CATEGORIES],
        )
    for warning in report["warnings"]:
        console.print(f"warning: {warning}", highlight=False, markup=False)
    rejections = report["rejections"]
    if rejections:
        kind = "record" if rejections and "record" in rejections[0] else "line"
        table(
            f"First rejected rows ({min(len(rejections), SHOWN_REJECTIONS)} of "
            f"{report['rejected']}; --json lists up to {len(rejections)})",
            [kind, "column", "problem"],
            [(r[kind], r["column"], r["message"]) for r in rejections[:SHOWN_REJECTIONS]],
        )
