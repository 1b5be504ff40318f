"""`hub tenants`: onboard tenants from manifests, inspect them and manage their API keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.orm import Session

from failover.centers import check_partner_agent_center
from hub.cli.offboard import offboard_command, open_sealed_command
from hub.cli.operator import cli_actor
from hub.cli.output import (
    JSON_OPTION,
    cli_errors,
    emit,
    err_console,
    fail,
    print_error,
    table,
)
from hub.core.clock import isoformat
from hub.core.db import unit_of_work
from hub.core.errors import HubError, NotFound
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.tenancy import ALL_ROLES, SystemContext, TenantContext
from hub.requests.listing import open_requests_by_agency
from hub.requests.texts import BUILT_IN as BUILT_IN_NOTICES
from hub.requests.webhook import PREVIOUS_SIGNATURE_HEADER, is_placeholder_url
from tenants.agencies import (
    DEFAULT_OVERLAP_HOURS,
    MAX_OVERLAP_HOURS,
    check_overlap_hours,
    list_agencies,
    reveal_webhook_secret,
    rotate_webhook_secret,
)
from tenants.catalog_import import build_catalog
from tenants.keys import (
    check_holder,
    check_post_limit,
    create_api_key,
    list_api_keys,
    revoke_api_key,
    set_api_key_roles,
)
from tenants.languages import text_for
from tenants.manifest import Manifest, ManifestError, load_manifest
from tenants.manifest_changes import ManifestChanges
from tenants.manifest_warnings import manifest_warnings
from tenants.onboarding import onboard_manifest, preview_onboarding
from tenants.profile import DEFAULT_STATUS_TEXTS
from tenants.registry import TenantInfo, get_tenant, list_tenants

app = typer.Typer(help="Tenants: onboarding, catalog import and API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a tenant and their roles.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.callback()
def _configure() -> None:
    # Logs go to stderr, so `--json` output on stdout stays one clean document.
    configure_logging()


ROLE_HELP = "Role the key grants (repeat for several): " + ", ".join(sorted(ALL_ROLES)) + "."


def _tenant_summary(info: TenantInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "jurisdiction_id": info.jurisdiction_id,
        "name": info.name,
        "timezone": info.timezone,
        "languages": list(info.languages),
        "region": info.region,
        "status": info.status,
        "manifest_version": info.manifest_version,
        "services": len(info.services),
    }


def _existing_tenant(tenant_id: str) -> TenantInfo:
    info = get_tenant(tenant_id)
    if info is None:
        fail(f"tenant {tenant_id!r} not found; `hub tenants list` shows the onboarded tenants")
    return info


@contextmanager
def _tenant_session(
    tenant_id: str, *, write: bool = True
) -> Iterator[tuple[Session, TenantContext]]:
    """Migrate the database, exit unless the tenant exists, and open a unit of work in the
    tenant's context as the CLI operator."""
    upgrade()
    _existing_tenant(tenant_id)
    ctx = TenantContext(tenant_id, actor=cli_actor())
    with unit_of_work(ctx, write=write) as session:
        yield session, ctx


def _load_or_exit(file: Path, as_json: bool) -> Manifest:
    """Return the valid manifest of `file`, or exit with its problems (status 2)."""
    try:
        return load_manifest(file)
    except ManifestError as exc:
        # Under --json the error document also lists the problems, one `path: message` each.
        print_error(exc.message, code=2, as_json=as_json, valid=False, problems=exc.problems)
        raise typer.Exit(2) from None
    except HubError as exc:
        fail(exc.message)


def _warnings(manifest: Manifest) -> list[str]:
    """Return the manifest's warnings, with the hub's built-in status texts and notices, and
    the agencies whose webhook is a placeholder."""
    placeholders = _placeholder_agencies(manifest)
    found = manifest_warnings(
        manifest, {"status texts": DEFAULT_STATUS_TEXTS, "notices": BUILT_IN_NOTICES}
    )
    if placeholders:
        found.append(
            f"agencies: {', '.join(placeholders)} have a placeholder webhook_url under "
            ".invalid, so their requests will not be delivered; put the agencies' endpoints "
            "in the manifest and onboard it again"
        )
    return found


def _placeholder_agencies(manifest: Manifest) -> list[str]:
    return [
        agency.code
        for agency in manifest.agencies
        if agency.webhook_url and is_placeholder_url(agency.webhook_url)
    ]


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}")


@app.command("validate")
def validate_command(
    file: Path = typer.Argument(..., help="Manifest YAML file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check a manifest without touching the database."""
    manifest = _load_or_exit(file, as_json)
    data = {
        "valid": True,
        "id": manifest.id,
        "jurisdiction_id": manifest.jurisdiction_id,
        "services": len(manifest.services),
        "agencies": len(manifest.agencies),
        "languages": manifest.languages,
        "warnings": _warnings(manifest),
    }

    def render(d: dict[str, Any]) -> None:
        print(
            f"{file}: valid manifest for {d['id']} ({d['jurisdiction_id']}): "
            f"{d['services']} services, {d['agencies']} agencies"
        )
        _print_warnings(d["warnings"])

    emit(data, as_json, render)


@app.command("onboard")
def onboard_command(
    file: Path = typer.Argument(..., help="Manifest YAML file."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check the manifest against the stored tenant and print what onboarding would "
        "change, changing nothing.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create or update a tenant from its manifest; a new tenant's Open311 key is printed once.

    An update prints what it changed: time zone, languages, service area, and the services
    and agencies added, deactivated or changed.
    """
    manifest = _load_or_exit(file, as_json)
    with cli_errors():
        upgrade()
        scope = SystemContext("cli onboard", actor=cli_actor())
        with unit_of_work(scope, write=not dry_run) as session:
            if dry_run:
                preview = preview_onboarding(session, manifest)
                outcome = OnboardingOutcome(
                    preview.tenant_id,
                    preview.outcome,
                    preview.version,
                    None,
                    preview.replaced_manifest_secrets,
                    preview.changes,
                )
            else:
                result = onboard_manifest(session, manifest, actor=cli_actor())
                outcome = OnboardingOutcome(
                    result.tenant.id,
                    result.outcome,
                    result.version,
                    result.open311_key,
                    result.replaced_manifest_secrets,
                    result.changes,
                    result.sealing_services,
                )
            deactivated = outcome.changes.agencies.deactivated if outcome.changes else ()
            open_requests = open_requests_by_agency(session, outcome.tenant_id, deactivated)
    placeholders = _placeholder_agencies(manifest)
    data = {
        "tenant_id": outcome.tenant_id,
        "jurisdiction_id": manifest.jurisdiction_id,
        "dry_run": dry_run,
        "outcome": outcome.outcome,
        "manifest_version": outcome.version,
        "open311_api_key": outcome.open311_key,
        "changes": outcome.changes.as_dict() if outcome.changes is not None else None,
        "placeholder_webhooks": placeholders,
        "replaced_manifest_secrets": list(outcome.replaced_manifest_secrets),
        "warnings": _warnings(manifest) + _deactivated_agency_warnings(open_requests),
        "sealing_services": list(outcome.sealing_services),
    }

    def render(d: dict[str, Any]) -> None:
        verb = f"would be {d['outcome']} (dry run, nothing changed)" if dry_run else d["outcome"]
        print(
            f"tenant {d['tenant_id']} ({d['jurisdiction_id']}): {verb}, "
            f"manifest version {d['manifest_version']}"
        )
        if outcome.changes is not None:
            for line in outcome.changes.lines() or [NO_LISTED_CHANGE]:
                print(f"  {line}")
        if d["open311_api_key"]:
            print(f"Open311 API key (shown once, store it now): {d['open311_api_key']}")
        for code in d["replaced_manifest_secrets"]:
            print(
                f"warning: agency {code}: the manifest's webhook_secret is the one that "
                "`hub tenants agency-secret --rotate` replaced, so onboarding kept the rotated "
                f"secret; remove the webhook_secret line of agency {code} from the manifest"
            )
        _print_warnings(d["warnings"])
        if d["sealing_services"]:
            print(
                f"services {', '.join(d['sealing_services'])} became location-sensitive: the "
                "conversion of their stored requests to encrypted exact points is queued for "
                "`hub worker` (or `hub serve`). Run it now with `hub privacy seal-locations "
                f"--tenant {d['tenant_id']}`; `hub privacy report --tenant {d['tenant_id']}` "
                "counts the requests left under sensitive_locations"
            )

    emit(data, as_json, render)


# An update whose compared fields are all equal changed a webhook secret, which the stored
# manifest leaves out, or follows a change of the key behind `manifest_hash`.
NO_LISTED_CHANGE = "no listed field changed (webhook secrets are not compared)"


def _deactivated_agency_warnings(open_requests: dict[str, int]) -> list[str]:
    """Warn of each agency that onboarding deactivates while it has open requests."""
    return [
        f"agencies: {code} becomes inactive with {count} open request(s), which stay routed "
        f"to {code}: only agency keys that name {code} can update them, and a key for a new "
        f"code cannot; keep {code} in the manifest (change its name, not its code) until "
        "they are closed"
        for code, count in sorted(open_requests.items())
    ]


@dataclass(frozen=True)
class OnboardingOutcome:
    """The result that `hub tenants onboard` prints, from an onboarding or its dry run."""

    tenant_id: str
    outcome: str
    version: int
    open311_key: str | None
    replaced_manifest_secrets: tuple[str, ...]
    changes: ManifestChanges | None
    # Services this run made location-sensitive (none in a dry run), whose stored requests
    # onboarding queued for conversion.
    sealing_services: tuple[str, ...] = ()


@app.command("list")
def list_command(
    include_inactive: bool = typer.Option(False, "--all", help="Include offboarded tenants."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the onboarded tenants."""
    with cli_errors():
        upgrade()
        tenants = [_tenant_summary(t) for t in list_tenants(include_inactive=include_inactive)]

    def render(rows: list[dict[str, Any]]) -> None:
        if not rows:
            print("no tenants yet; onboard one with `hub tenants onboard FILE`")
            return
        table(
            "Tenants",
            ["id", "jurisdiction", "name", "region", "languages", "services", "status"],
            [
                [
                    r["id"],
                    r["jurisdiction_id"],
                    r["name"],
                    r["region"],
                    ",".join(r["languages"]),
                    r["services"],
                    r["status"],
                ]
                for r in rows
            ],
        )

    emit(tenants, as_json, render)


@app.command("show")
def show_command(
    tenant_id: str = typer.Argument(..., help="Tenant id, as in `hub tenants list`."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one tenant, its service catalog and its agencies (never their secrets)."""
    with cli_errors():
        with _tenant_session(tenant_id, write=False) as (session, ctx):
            agencies = []
            for agency in list_agencies(session, ctx):
                summary = asdict(agency)
                summary["previous_secret_valid_until"] = isoformat(
                    agency.previous_secret_valid_until
                )
                agencies.append(summary)
        info = _existing_tenant(tenant_id)
    services = [
        {
            "code": s.code,
            "name": text_for(s.names, info.default_language) or s.code,
            "group": s.group,
            "agency": s.agency_code,
            "sla_hours": s.sla_hours,
            "sla_clock": s.sla_clock,
            "location_sensitive": s.location_sensitive,
            "open_data_location": s.open_data_location,
        }
        for s in info.services.values()
    ]
    data = {**_tenant_summary(info), "services": services, "agencies": agencies}

    def render(d: dict[str, Any]) -> None:
        print(
            f"{d['name']} ({d['id']}, {d['jurisdiction_id']}), {d['timezone']}, "
            f"languages {', '.join(d['languages'])}, region {d['region'] or '-'}, "
            f"manifest version {d['manifest_version']}"
        )
        table(
            "Services",
            ["code", "name", "group", "agency", "SLA hours", "clock", "sensitive", "open data"],
            [
                [
                    s["code"],
                    s["name"],
                    s["group"],
                    s["agency"],
                    s["sla_hours"],
                    s["sla_clock"],
                    "yes" if s["location_sensitive"] else "",
                    s["open_data_location"],
                ]
                for s in d["services"]
            ],
        )
        table(
            "Agencies",
            ["code", "name", "webhook host", "webhook secret", "deliveries/min", "active"],
            [
                [
                    a["code"],
                    a["name"],
                    a["webhook_host"],
                    _secret_cell(a),
                    _rate_cell(a["max_deliveries_per_minute"]),
                    "yes" if a["active"] else "no",
                ]
                for a in d["agencies"]
            ],
        )

    emit(data, as_json, render)


def _rate_cell(rate: float | None) -> str:
    return "no cap" if rate is None else f"{rate:g}"


def _secret_cell(agency: dict[str, Any]) -> str:
    if not agency["webhook_secret_set"]:
        return "missing"
    if agency["previous_secret_valid_until"]:
        return f"set, previous one signs too until {agency['previous_secret_valid_until']}"
    return "set"


@app.command("agency-secret")
def agency_secret_command(
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    agency: str = typer.Option(..., "--agency", help="Agency code, as in `hub tenants show`."),
    rotate: bool = typer.Option(
        False,
        "--rotate",
        help="Replace the secret with a new random one and print the new one. Deliveries are "
        "signed with both until the overlap ends.",
    ),
    overlap_hours: float | None = typer.Option(
        None,
        "--overlap-hours",
        help=f"With --rotate: hours during which deliveries also carry a signature made with "
        f"the replaced secret, from 0 (stop it at once, after a leak) to "
        f"{MAX_OVERLAP_HOURS:g}. Default {DEFAULT_OVERLAP_HOURS:g}.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print an agency's webhook signing secret, or rotate it with --rotate; each use is
    recorded in the audit log."""
    if overlap_hours is not None and not rotate:
        fail("--overlap-hours sets the overlap of a rotation; add --rotate or leave it out")
    if rotate:
        _rotate_agency_secret(tenant, agency, overlap_hours, as_json)
        return
    with cli_errors():
        with _tenant_session(tenant) as (session, ctx):
            secret = reveal_webhook_secret(session, ctx, agency)
    data = {"tenant_id": tenant, "agency_code": agency, "webhook_secret": secret}
    emit(
        data,
        as_json,
        lambda d: print(
            f"webhook secret of agency {d['agency_code']} ({d['tenant_id']}); give it to the "
            f"agency over a secure channel:\n{d['webhook_secret']}"
        ),
    )


def _rotate_agency_secret(
    tenant: str, agency: str, overlap_hours: float | None, as_json: bool
) -> None:
    hours = DEFAULT_OVERLAP_HOURS if overlap_hours is None else overlap_hours
    with cli_errors():
        check_overlap_hours(hours, field="--overlap-hours")
        with _tenant_session(tenant) as (session, ctx):
            rotated = rotate_webhook_secret(session, ctx, agency, overlap_hours=hours)
    data = {
        "tenant_id": tenant,
        "agency_code": agency,
        "webhook_secret": rotated.secret,
        "previous_secret_valid_until": isoformat(rotated.previous_valid_until),
    }

    def render(d: dict[str, Any]) -> None:
        if d["previous_secret_valid_until"]:
            overlap = (
                f"deliveries carry a second signature made with the replaced secret in "
                f"{PREVIOUS_SIGNATURE_HEADER} until {d['previous_secret_valid_until']}"
            )
        else:
            overlap = "the replaced secret no longer signs deliveries"
        print(
            f"new webhook secret of agency {d['agency_code']} ({d['tenant_id']}); {overlap}. "
            "Give it to the agency over a secure channel. If the tenant's manifest sets "
            "webhook_secret for this agency, remove that line: onboarding keeps the new "
            "secret while the manifest carries the replaced one, and warns until the line "
            f"is gone:\n{d['webhook_secret']}"
        )

    emit(data, as_json, render)


@app.command("import-catalog")
def import_catalog_command(
    file: Path = typer.Argument(..., help="Open311 services.json or services.xml of a city."),
    out: Path | None = typer.Option(None, "--out", help="Write the YAML here instead of stdout."),
    language: str = typer.Option("en", help="Language tag of the names in the file."),
    definitions: list[Path] = typer.Option(
        [], "--definition", help="A service definition file (services/{code}.json or .xml)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Build a manifest `services:` section from a city's Open311 service list."""
    with cli_errors():
        result = build_catalog(file, language=language, definition_paths=list(definitions))
    text = result.to_yaml()
    if out is not None:
        out.write_text(text, encoding="utf-8")
    summary = {
        "source_format": result.source_format,
        "services": len(result.services),
        "agencies": len(result.agencies),
        "skipped": [{"entry": entry, "reason": reason} for entry, reason in result.skipped],
        "missing_definitions": result.missing_definitions,
        "out": str(out) if out else None,
    }
    if as_json:
        if out is None:
            summary["catalog"] = {"services": result.services, "agencies": result.agencies}
        emit(summary, True, lambda d: None)
        return
    if out is None:
        print(text, end="")
    for entry, reason in result.skipped:
        err_console.print(
            f"skipped {entry}: {reason}", highlight=False, markup=False, soft_wrap=True
        )
    err_console.print(
        f"imported {len(result.services)} services and {len(result.agencies)} agencies "
        f"from {file} ({result.source_format}); {len(result.skipped)} skipped; "
        f"{len(result.missing_definitions)} declare attributes that need --definition files",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# --- keys ------------------------------------------------------------------------------------


def _key_row(row: Any) -> dict[str, Any]:
    return {
        "key_id": row.id,
        "prefix": row.prefix,
        "label": row.label,
        "roles": list(row.roles),
        "center_id": row.center_id,
        "holder": row.holder,
        "agencies": list(row.agencies or ()),
        "max_posts_per_minute": row.max_posts_per_minute,
        "created_at": isoformat(row.created_at),
        "revoked_at": isoformat(row.revoked_at),
    }


def _check_role_names(roles: list[str]) -> None:
    unknown = sorted(set(roles) - ALL_ROLES)
    if not roles:
        fail("give at least one --role; choose from " + ", ".join(sorted(ALL_ROLES)))
    if unknown:
        fail(f"unknown role {unknown[0]!r}; choose from {', '.join(sorted(ALL_ROLES))}")


def _post_limit_note(limit: int | None) -> str:
    if limit is None:
        return ""
    if limit == 0:
        return ", with no limit on POST requests"
    return f", limited to {limit} POST requests a minute"


def _post_limit_cell(limit: int | None) -> str:
    if limit is None:
        return "tenant's"
    return "no limit" if limit == 0 else str(limit)


@keys_app.command("create")
def keys_create_command(
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    roles: list[str] = typer.Option(..., "--role", help=ROLE_HELP),
    center: str | None = typer.Option(None, "--center", help="Contact center id (partner agents)."),
    label: str = typer.Option("created with hub tenants keys create", help="What the key is for."),
    holder: str | None = typer.Option(
        None,
        "--holder",
        help="Person who uses the key, by the name they give to `hub alerts ... --as`; "
        "alert approvals count the key's actions as that person's.",
    ),
    agencies: list[str] = typer.Option(
        [],
        "--agency",
        help="Code of an agency in the tenant's manifest that an agency key acts for (repeat "
        "it or separate codes with commas); required with --role agency. The key may update "
        "only the requests routed to these agencies.",
    ),
    max_posts_per_minute: int | None = typer.Option(
        None,
        "--max-posts-per-minute",
        help="Open311 POST requests per minute that this key may file, over all API "
        "processes, in place of the manifest's open311.max_posts_per_minute_per_key; 0 for "
        "no limit. Left out, the key has the tenant's limit.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API key; the key is printed once and only its hash is stored."""
    _check_role_names(roles)
    with cli_errors():
        if holder is not None:
            holder = check_holder(holder, name="--holder")
        check_post_limit(max_posts_per_minute, name="--max-posts-per-minute")
        with _tenant_session(tenant) as (session, ctx):
            if center is not None:
                check_partner_agent_center(session, tenant, center)
            row, raw = create_api_key(
                session,
                ctx,
                roles=roles,
                label=label,
                center_id=center,
                holder=holder,
                agencies=agencies,
                max_posts_per_minute=max_posts_per_minute,
            )
            data = {**_key_row(row), "api_key": raw}

    def render(d: dict[str, Any]) -> None:
        holder_note = f", held by {d['holder']}" if d["holder"] else ""
        agency_note = f", for agencies {', '.join(d['agencies'])}" if d["agencies"] else ""
        print(
            f"key {d['key_id']} for {tenant} with roles {', '.join(d['roles'])}"
            f"{agency_note}{holder_note}{_post_limit_note(d['max_posts_per_minute'])}"
        )
        print(f"API key (shown once, store it now): {d['api_key']}")

    emit(data, as_json, render)


@keys_app.command("list")
def keys_list_command(
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a tenant's API keys (prefixes only, never the keys)."""
    with cli_errors():
        with _tenant_session(tenant, write=False) as (session, ctx):
            rows = [_key_row(row) for row in list_api_keys(session, ctx)]

    def render(items: list[dict[str, Any]]) -> None:
        table(
            f"API keys of {tenant}",
            [
                "id",
                "prefix",
                "label",
                "holder",
                "roles",
                "agencies",
                "posts/min",
                "center",
                "created",
                "revoked",
            ],
            [
                [
                    r["key_id"],
                    r["prefix"],
                    r["label"],
                    r["holder"],
                    ",".join(r["roles"]),
                    ",".join(r["agencies"]),
                    _post_limit_cell(r["max_posts_per_minute"]),
                    r["center_id"],
                    r["created_at"],
                    r["revoked_at"],
                ]
                for r in items
            ],
        )

    emit(rows, as_json, render)


def _change_key(tenant: str, key_id: int, change: Any) -> dict[str, Any]:
    """Apply `change(session, ctx, key_id)` to one of the tenant's keys; return the key row."""
    with cli_errors():
        try:
            with _tenant_session(tenant) as (session, ctx):
                return _key_row(change(session, ctx, key_id))
        except NotFound:
            fail(f"key {key_id} not found for tenant {tenant}; `hub tenants keys list` shows ids")


@keys_app.command("revoke")
def keys_revoke_command(
    key_id: int = typer.Argument(..., help="Key id, as in `hub tenants keys list`."),
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke an API key. Other processes stop accepting it within a few seconds."""
    data = _change_key(tenant, key_id, revoke_api_key)
    emit(data, as_json, lambda d: print(f"key {d['key_id']} revoked at {d['revoked_at']}"))


@keys_app.command("roles")
def keys_roles_command(
    key_id: int = typer.Argument(..., help="Key id, as in `hub tenants keys list`."),
    tenant: str = typer.Option(..., "--tenant", help="Tenant id."),
    roles: list[str] = typer.Option([], "--role", help=ROLE_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replace the roles of an API key (the change is audited)."""
    _check_role_names(roles)

    def change(session: Any, ctx: TenantContext, key: int) -> Any:
        return set_api_key_roles(session, ctx, key, roles)

    data = _change_key(tenant, key_id, change)
    emit(data, as_json, lambda d: print(f"key {d['key_id']} now has roles {', '.join(d['roles'])}"))


# Offboarding (export, then crypto-shredding) is built on the privacy primitives.
app.command("offboard")(offboard_command)
app.command("open-sealed")(open_sealed_command)
