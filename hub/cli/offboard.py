"""`hub tenants offboard`: export a tenant's data, then crypto-shred its keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from hub.cli.operator import cli_actor
from hub.cli.output import JSON_OPTION, cli_errors, console, emit, fail, require_file
from hub.requests import models as _request_models  # noqa: F401 - registers encrypted tables


def offboard_command(
    tenant_id: str = typer.Argument(..., help="Tenant id."),
    export: Path | None = typer.Option(None, "--export", help="Folder for the exported files."),
    public_key: Path | None = typer.Option(
        None,
        "--public-key",
        help="The tenant's X25519 public key (PEM or 64 hex digits); records are sealed to it.",
    ),
    crypto_shred: bool = typer.Option(
        False, "--crypto-shred", help="After the export, destroy the tenant's keys for good."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export a tenant's sealed records and open data; with --crypto-shred destroy its keys."""
    from tenants.offboarding import offboard

    if export is None and not crypto_shred:
        fail("nothing to do; give --export DIR (and --public-key FILE), or add --crypto-shred")
    if public_key is not None:
        require_file(public_key, label="public key file", fix="give the tenant's X25519 public key")
    with cli_errors():
        result = offboard(
            tenant_id,
            export_dir=export,
            public_key=public_key.read_bytes() if public_key else None,
            shred=crypto_shred,
            actor=cli_actor(),
        )

    def render(data: dict[str, Any]) -> None:
        for path in data["files"]:
            console.print(f"wrote {path}", markup=False)
        if data["shredded"]:
            console.print(
                f"destroyed {data['keys_destroyed']} key(s) of {tenant_id}; its personal data "
                "can no longer be decrypted",
                markup=False,
            )

    emit(result, as_json, render)


def open_sealed_command(
    sealed: Path = typer.Argument(..., help="A `.sealed` file written by `hub tenants offboard`."),
    private_key: Path = typer.Option(
        ...,
        "--private-key",
        help="The tenant's X25519 private key (unencrypted PEM or 64 hex digits).",
    ),
    out: Path = typer.Option(..., "--out", help="JSON file to write the records to."),
) -> None:
    """Decrypt a sealed offboarding export with the tenant's private key (no database)."""
    from privacy.shred import load_private_key, open_sealed

    require_file(sealed, label="sealed file", fix="give the .sealed file of the export")
    require_file(private_key, label="private key file", fix="give the tenant's X25519 key")
    with cli_errors():
        plaintext = open_sealed(load_private_key(private_key.read_bytes()), sealed.read_bytes())
    try:
        _write_owner_only(out, plaintext)
    except OSError as exc:
        fail(
            f"cannot write --out {out}: {exc.strerror or exc}; give a file path in a folder "
            "you can write to"
        )
    console.print(f"wrote {len(plaintext)} bytes of records to {out}", markup=False)


def _write_owner_only(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by its owner only, even when the file existed.

    The records are personal data in clear. The mode given to `os.open` applies only to a
    file it creates, so an existing file is restricted before anything is written to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
