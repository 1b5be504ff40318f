"""`hub audit`: export the audit log and verify an exported file offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from sqlalchemy import select

from hub.cli.operator import cli_actor
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, fail, require_file
from hub.core.db import unit_of_work
from hub.core.logging import configure_logging
from hub.core.tenancy import SystemContext

app = typer.Typer(help="Export the audit log and verify an export offline.")


@app.callback()
def _configure() -> None:
    # Logs go to stderr, so `--json` output on stdout stays one clean document.
    configure_logging()


@app.command("export")
def export_command(
    out: Path = typer.Option(..., "--out", help="JSON Lines file to write."),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's chain."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write the audit entries and signed checkpoints to a file, signing each chain's head."""
    from privacy.audit import checkpoint_chain, public_key_hex
    from privacy.audit_verify import export_audit
    from privacy.models import AuditEntry

    with cli_errors():
        with unit_of_work(SystemContext("audit export", actor=cli_actor())) as session:
            listed = session.scalars(select(AuditEntry.chain).distinct())
            chains = [tenant] if tenant else sorted(set(listed))
            for chain in chains:
                checkpoint_chain(session, chain)
        with unit_of_work(SystemContext("audit export"), write=False) as session:
            count = export_audit(session, out, tenant_id=tenant)
        key = public_key_hex()
    result = {"file": str(out), "entries": count, "chains": len(chains), "public_key": key}

    def render(data: dict[str, Any]) -> None:
        console.print(
            f"wrote {data['entries']} entries of {data['chains']} chain(s) to {data['file']}; "
            f"checkpoints are signed by Ed25519 key {data['public_key']}",
            markup=False,
        )

    emit(result, as_json, render)


def _is_public_key(value: str) -> bool:
    try:
        return len(bytes.fromhex(value)) == 32
    except ValueError:
        return False


@app.command("verify")
def verify_command(
    path: Path = typer.Argument(..., help="File written by `hub audit export`."),
    public_keys: list[str] | None = typer.Option(
        None,
        "--public-key",
        help="Trusted checkpoint signing key (64 hex digits); repeat it for the keys before "
        "and after `hub privacy rotate-root --new-derived-keys`.",
    ),
    earlier: list[Path] | None = typer.Option(
        None,
        "--earlier",
        help="An earlier export of the same chains (repeat for several): each of its entries "
        "must still be in this file, unchanged.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check every hash, link and signed checkpoint of an export; exit 1 on any problem.

    With --earlier, also check that nothing of an earlier export was removed or changed.
    """
    from privacy.audit_compare import compare_with_earlier
    from privacy.audit_verify import verify

    require_file(path, fix="give the file written by `hub audit export`")
    for earlier_path in earlier or ():
        require_file(earlier_path, fix="give an earlier file written by `hub audit export`")
    for public_key in public_keys or ():
        if not _is_public_key(public_key):
            fail(
                f"invalid --public-key {public_key!r}: expected 64 hex digits, as printed by "
                "`hub audit export`"
            )
    trusted = frozenset(key.lower() for key in public_keys) if public_keys else None
    with cli_errors():
        result = verify(path, trusted_keys=trusted)
        for earlier_path in earlier or ():
            comparison = compare_with_earlier(earlier_path, path, trusted_keys=trusted)
            result.problems += comparison.problems
            result.removed_by_retention += comparison.removed_count

    def render(data: dict[str, Any]) -> None:
        status = "verified" if data["ok"] else f"FAILED with {len(data['problems'])} problem(s)"
        console.print(
            f"{path}: {status}: {data['entries']} entries, {data['chains']} chain(s), "
            f"{data['checkpoints']} signed checkpoint(s)"
            + (f", against {', '.join(data['earlier'])}" if data["earlier"] else ""),
            markup=False,
        )
        for chain, seq in data["anchors"].items():
            console.print(
                f"  chain {chain} starts after its retention anchor #{seq}: entries #1..#{seq} "
                "were deleted by the retention purge",
                markup=False,
            )
        if data["earlier"]:
            console.print(
                f"  {data['removed_by_retention']} entries of the earlier export(s) were "
                "removed by retention",
                markup=False,
            )
        for problem in data["problems"]:
            where = f"line {problem['line']}: " if problem["line"] else ""
            console.print(f"  {where}{problem['kind']}: {problem['message']}", markup=False)
        if trusted is None and data["ok"]:
            keys = ", ".join(data["signer_keys"]) or "none"
            console.print(
                f"  note: signatures were checked against the keys in the file ({keys}); pass "
                "--public-key with the key you trust to check who signed them",
                markup=False,
            )

    data = result.as_dict()
    data["signer_pinned"] = trusted is not None
    data["earlier"] = [str(p) for p in earlier or ()]
    emit(data, as_json, render)
    if not result.ok:
        raise typer.Exit(1)
