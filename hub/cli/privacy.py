"""`hub privacy`: key rotation and listing, anonymized exports, the privacy report, retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hub.cli.operator import cli_actor
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, err_console, fail, table
from hub.core.db import get_engine, unit_of_work
from hub.core.logging import configure_logging
from hub.core.tenancy import ROLE_ADMIN, TenantContext
from hub.requests import models as _request_models  # noqa: F401 - registers encrypted tables

app = typer.Typer(help="Keys, anonymized exports, the privacy report and retention.")


@app.callback()
def _configure() -> None:
    # Logs go to stderr, so `--json` output on stdout stays one clean document.
    configure_logging()


TENANT_OPTION = typer.Option(..., "--tenant", help="Tenant id.")


def operator(tenant_id: str) -> TenantContext:
    """Build the context of an operator acting for one tenant (may decrypt, audited)."""
    return TenantContext(tenant_id, actor=cli_actor(), roles=frozenset({ROLE_ADMIN}))


def progress_bar(description: str, total: int | None) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@app.command("rotate")
def rotate_command(
    tenant: str = TENANT_OPTION,
    dek: bool = typer.Option(False, "--dek", help="Create a new DEK and re-encrypt rows."),
    kek: bool = typer.Option(False, "--kek", help="Create a new KEK and re-wrap the data keys."),
    wait: bool = typer.Option(
        False, "--wait", help="Re-encrypt in this process with a progress bar (DEK only)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Rotate a tenant's DEK (new primary now, rows re-encrypted by a task) or its KEK."""
    from privacy.rotation import reencrypt_tenant, remaining_rows, rotate_dek, rotate_kek
    from privacy.tasks import enqueue_reencryption

    if dek == kek:
        fail("choose exactly one of --dek or --kek")
    ctx = operator(tenant)
    engine = get_engine()
    result: dict[str, Any] = {"tenant_id": tenant}
    with cli_errors():
        with unit_of_work(ctx, engine=engine) as session:
            if kek:
                result["kek_version"] = rotate_kek(session, tenant, actor=cli_actor())
            else:
                result["dek_version"] = rotate_dek(session, tenant, actor=cli_actor())
                result["rows_to_reencrypt"] = remaining_rows(session, tenant)
                if not wait:
                    enqueue_reencryption(session, tenant)
        if dek and wait:
            total = result["rows_to_reencrypt"]
            with progress_bar("re-encrypting", total) as bar:
                task = bar.add_task("rows", total=total)
                done = reencrypt_tenant(
                    tenant,
                    engine=engine,
                    progress=lambda n: bar.advance(task, n),
                    actor=cli_actor(),
                )
            result["reencrypted"] = done
        elif dek:
            result["reencryption"] = "queued on the maintenance queue"

    def render(data: dict[str, Any]) -> None:
        for key, value in data.items():
            console.print(f"{key}: {value}", markup=False)

    emit(result, as_json, render)


@app.command("rotate-root")
def rotate_root_command(
    new_derived_keys: bool = typer.Option(
        False,
        "--new-derived-keys",
        help="Also replace the secrets derived from the root key, for a key that may have "
        "leaked: the audit signing key, webhook secrets, Web Push keys and unsubscribe links.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replace the local root key file and re-wrap every tenant's KEK under the new key."""
    from privacy.rotation import rotate_root

    with cli_errors():
        result = rotate_root(actor=cli_actor(), new_derived_keys=new_derived_keys)

    def render(data: dict[str, Any]) -> None:
        console.print(
            f"root key {data['old_root_key_id']} replaced by {data['new_root_key_id']}; "
            f"{data['keks']} KEK(s) re-wrapped",
            markup=False,
        )
        if data["failed_tenants"]:
            console.print(
                f"KEKs that failed to unwrap, still under the old key: "
                f"{', '.join(data['failed_tenants'])}",
                markup=False,
            )
        console.print(
            f"the old key is kept in {data['previous_key_file']}; delete it once no database "
            "configured with this key file needs it",
            markup=False,
        )
        console.print(
            f"back up the new root key file together with {data['derivation_key_file']}: "
            "without it the hub derives new secrets, and blind indexes, manifest digests and "
            "the audit signing key change",
            markup=False,
        )
        if data["new_derived_keys"]:
            console.print(
                "derived secrets replaced: give auditors the new audit public key "
                f"{data['audit_public_key']} beside the earlier one "
                f"{data['previous_audit_public_key']}, and alert webhook receivers their new "
                "secrets; Web Push subscribers must subscribe again",
                markup=False,
            )
        else:
            console.print(
                f"derived secrets unchanged; the audit public key is still "
                f"{data['audit_public_key']}",
                markup=False,
            )

    emit(result, as_json, render)


@app.command("keys")
def keys_command(tenant: str = TENANT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List a tenant's key versions with ages, encryption counts and rows per DEK version."""
    from privacy.rotation import list_keys

    with cli_errors():
        with unit_of_work(operator(tenant), write=False) as session:
            listing = list_keys(session, tenant)

    def render(items: list[dict[str, Any]]) -> None:
        table(
            f"keys of {tenant}",
            ["kind", "version", "primary", "age (days)", "encryptions", "rows", "retired"],
            [
                [
                    i["kind"],
                    i["version"],
                    "yes" if i["primary"] else "",
                    i["age_days"],
                    i.get("encryptions", ""),
                    i.get("rows", ""),
                    i["retired_at"] or "",
                ]
                for i in items
            ],
        )

    emit(listing, as_json, render)


@app.command("export")
def export_command(
    tenant: str = TENANT_OPTION,
    out: Path = typer.Option(..., "--out", help="File to write."),
    fmt: str = typer.Option("csv", "--format", help="csv or geojson."),
    free_text: str = typer.Option(
        "withheld",
        "--free-text",
        help="withheld (default): no descriptions. redacted: descriptions in which patterns "
        "replace e-mails, phones, addresses, plates and introduced names. Redaction is best "
        "effort, and names and health details can remain.",
    ),
    ids: str = typer.Option(
        "pseudonymous",
        "--ids",
        help="pseudonymous (default): an id per record that is new in every export. open311: "
        "the Open311 service_request_id, which lets anyone join a record to the exact time and "
        "location that the live Open311 API shows.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write the tenant's anonymized open data (k-anonymous) as CSV or GeoJSON, with a
    `.meta.json` file beside it that describes the file."""
    from privacy.export import open_data_export
    from privacy.open_data import record_export, write_export

    if fmt not in ("csv", "geojson"):
        fail(f"--format {fmt!r} is invalid; use csv or geojson")
    if free_text not in ("withheld", "redacted"):
        fail(f"--free-text {free_text!r} is invalid; use withheld or redacted")
    if ids not in ("pseudonymous", "open311"):
        fail(f"--ids {ids!r} is invalid; use pseudonymous or open311")
    ctx = operator(tenant)
    with cli_errors():
        with unit_of_work(ctx) as session:
            with progress_bar("reading requests", None) as bar:
                task = bar.add_task("rows", total=None)
                export = open_data_export(
                    session,
                    ctx,
                    free_text=free_text,
                    ids=ids,
                    progress=lambda n: bar.advance(task, n),
                )
            files = write_export(export, out, fmt)
            digests = record_export(
                session, tenant, actor=cli_actor(), export=export, fmt=fmt, files=files
            )
    result = {"files": [str(f) for f in files], "sha256": digests["sha256"], **export.metadata()}

    def render(data: dict[str, Any]) -> None:
        console.print(
            f"wrote {data['published_records']} of {data['total_records']} records to "
            f"{', '.join(data['files'])} (k={data['k']}, {data['ids']} ids, suppressed "
            f"{data['suppressed_records']} records in {data['suppressed_groups']} groups)",
            markup=False,
        )

    emit(result, as_json, render)


def declare_hub_purposes() -> None:
    """Import the modules that declare the hub's decryption purposes, so the report lists
    them as declared. Each declares its purposes with `declare_purpose` when imported."""
    import failover.service  # noqa: F401
    import hub.alerts.fanout  # noqa: F401
    import hub.requests.routing  # noqa: F401
    import hub.requests.transfer  # noqa: F401
    import privacy.export  # noqa: F401


@app.command("report")
def report_command(
    tenant: str = TENANT_OPTION,
    fmt: str = typer.Option("md", "--format", help="md (Markdown) or json."),
    out: Path | None = typer.Option(None, "--out", help="Write to this file instead of stdout."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the privacy report: per control, the evidence and pass or fail."""
    from hub.requests.location_sealing import sensitive_locations_control
    from privacy.report import build_report, render_markdown

    declare_hub_purposes()

    if fmt not in ("md", "json"):
        fail(f"--format {fmt!r} is invalid; use md or json")
    with cli_errors():
        with unit_of_work(operator(tenant), write=False) as session:
            report = build_report(session, tenant, feature_controls=[sensitive_locations_control])
    if as_json or fmt == "json":
        import json

        text = json.dumps(report, indent=2, default=str) + "\n"
    else:
        text = render_markdown(report)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {out}", markup=False)
    else:
        typer.echo(text, nl=False)
    if not report["passed"]:
        raise typer.Exit(1)


@app.command("purge")
def purge_command(tenant: str = TENANT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Purge the tenant's data past its retention periods now.

    Clears personal data past `personal_data`, deletes requests past `requests`, and deletes
    the tenant's audit entries past `audit` up to a signed anchor. Prints the rows cleared per
    table and, as deleted:TABLE, the rows deleted (deleted:audit_log for audit entries).
    """
    from privacy.tasks import run_retention_purge

    with cli_errors():
        purged = run_retention_purge(tenant, actor=cli_actor())

    def render(data: dict[str, int]) -> None:
        table(f"purged rows of {tenant}", ["table", "rows"], sorted(data.items()))

    emit(purged, as_json, render)


@app.command("seal-locations")
def seal_locations_command(
    tenant: str = TENANT_OPTION,
    service: str | None = typer.Option(
        None, "--service", help="Service code; default: every location-sensitive service."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Convert the stored requests of location-sensitive services that expose their point.

    Requests stored before their service became location-sensitive get their exact point
    encrypted and only the public point of the open-data rule in clear, as a new request.
    Onboarding queues this for a service that becomes location-sensitive. Prints the
    requests converted per service.
    """
    from hub.requests.location_sealing import exposed_points, seal_service_locations
    from tenants.registry import get_tenant

    engine = get_engine()
    with cli_errors():
        if get_tenant(tenant, engine=engine) is None:
            fail(f"tenant {tenant!r} not found; `hub tenants list` shows the onboarded tenants")
        with unit_of_work(operator(tenant), engine=engine, write=False) as session:
            pending = exposed_points(session, tenant)
        if service is not None and service not in pending:
            fail(
                f"service {service!r} of tenant {tenant!r} is not location-sensitive or not "
                "found; `hub tenants show TENANT` lists the services"
            )
        codes = [service] if service is not None else sorted(pending)
        sealed = {}
        for code in codes:
            with progress_bar(f"sealing {code}", pending[code]) as bar:
                task = bar.add_task("requests", total=pending[code])
                sealed[code] = seal_service_locations(
                    tenant,
                    code,
                    engine=engine,
                    actor=cli_actor(),
                    progress=lambda n, bar=bar, task=task: bar.advance(task, n),
                )

    def render(data: dict[str, int]) -> None:
        if not data:
            print(f"tenant {tenant} has no location-sensitive services")
            return
        table(f"requests sealed for {tenant}", ["service", "requests"], sorted(data.items()))

    emit(sealed, as_json, render)
