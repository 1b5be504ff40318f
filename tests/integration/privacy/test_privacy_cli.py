"""The `hub privacy`, `hub audit` and `hub tenants offboard` commands end to end."""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select

from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext
from privacy.models import AuditEntry
from privacy.shred import open_sealed, seal

HUB = str(Path(sys.executable).parent / "hub")


@pytest.fixture
def db_url(sqlite_url):
    """Each command starts a new process (seconds each), so these run on SQLite only; the
    functions behind them are tested on both databases."""
    return sqlite_url


@pytest.fixture
def cli(db_url):
    """Run `hub` in a subprocess against the test database and the session's root key."""
    env = {**os.environ, "HUB_DATABASE_URL": db_url}

    def run(*args, expect=0):
        result = subprocess.run([HUB, *args], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == expect, result.stdout + result.stderr
        result.output = result.stdout + result.stderr
        return result

    return run


def as_json(result):
    return json.loads(result.stdout)


def test_keys_rotate_and_list(cli, engine, tenant, seed_requests):
    seed_requests(engine, tenant, 3)
    listing = as_json(cli("privacy", "keys", "--tenant", tenant, "--json"))
    deks = [k for k in listing if k["kind"] == "dek"]
    assert deks[0]["rows"] == 6
    rotated = as_json(cli("privacy", "rotate", "--tenant", tenant, "--dek", "--wait", "--json"))
    assert rotated["dek_version"] == 2
    reencrypted = {name: n for name, n in rotated["reencrypted"].items() if n}
    assert reencrypted == {"service_requests": 3, "status_events": 3}
    assert (
        as_json(cli("privacy", "rotate", "--tenant", tenant, "--kek", "--json"))["kek_version"] == 2
    )
    listing = as_json(cli("privacy", "keys", "--tenant", tenant, "--json"))
    by_version = {k["version"]: k for k in listing if k["kind"] == "dek"}
    assert by_version[1]["retired_at"] is not None
    assert by_version[2]["rows"] == 6


def test_rotate_needs_one_kind(cli, tenant):
    result = cli("privacy", "rotate", "--tenant", tenant, expect=2)
    assert "choose exactly one of --dek or --kek" in result.output


def test_export_report_and_audit(cli, engine, tenant, seed_requests, tmp_path):
    seeded = set(seed_requests(engine, tenant, 5))
    out = tmp_path / "open.csv"
    exported = as_json(cli("privacy", "export", "--tenant", tenant, "--out", str(out), "--json"))
    assert exported["k"] == 5
    assert exported["published_records"] == 5
    assert exported["ids"] == "pseudonymous"
    with out.open(newline="", encoding="utf-8") as handle:
        published = {row["id"] for row in csv.DictReader(handle)}
    assert len(published) == 5
    assert not published & seeded
    assert (tmp_path / "open.csv.meta.json").exists()
    report = json.loads(cli("privacy", "report", "--tenant", tenant, "--format", "json").stdout)
    assert report["passed"]
    audit_file = tmp_path / "audit.jsonl"
    cli("audit", "export", "--out", str(audit_file), "--tenant", tenant, "--json")
    verified = as_json(cli("audit", "verify", str(audit_file), "--json"))
    assert verified["ok"]
    assert verified["checkpoints"] == 1
    audit_file.write_text(
        audit_file.read_text().replace('"n"', '"m"', 1).replace("export.", "exp.", 1)
    )
    failed = cli("audit", "verify", str(audit_file), expect=1)
    assert "edited" in failed.output


def test_verify_trusts_keys_across_root_rotation(cli, engine, tenant, seed_requests, tmp_path):
    seed_requests(engine, tenant, 1)
    audit_file = tmp_path / "audit.jsonl"
    first = as_json(cli("audit", "export", "--out", str(audit_file), "--json"))["public_key"]

    # A routine rotation keeps the signing key that auditors hold, and names the derivation
    # key file to back up with the new root key.
    routine = as_json(cli("privacy", "rotate-root", "--json"))
    assert routine["derivation_key_file"].endswith(".derivation")
    assert Path(routine["derivation_key_file"]).exists()
    after_routine = as_json(cli("audit", "export", "--out", str(audit_file), "--json"))
    assert after_routine["public_key"] == first
    as_json(cli("audit", "verify", str(audit_file), "--public-key", first, "--json"))

    replaced = as_json(cli("privacy", "rotate-root", "--new-derived-keys", "--json"))
    second = replaced["audit_public_key"]
    assert second != first
    assert replaced["previous_audit_public_key"] == first
    exported = as_json(cli("audit", "export", "--out", str(audit_file), "--json"))
    assert exported["public_key"] == second
    only_new = as_json(
        cli("audit", "verify", str(audit_file), "--public-key", second, "--json", expect=1)
    )
    assert {problem["kind"] for problem in only_new["problems"]} == {"unknown_signer"}
    both = ["--public-key", first, "--public-key", second]
    assert as_json(cli("audit", "verify", str(audit_file), *both, "--json"))["ok"]


def test_export_rejects_unknown_ids(cli, tenant, tmp_path):
    out = tmp_path / "open.csv"
    result = cli("privacy", "export", "--tenant", tenant, "--out", str(out), "--ids", "x", expect=2)
    assert "--ids 'x' is invalid; use pseudonymous or open311" in result.output
    assert not out.exists()


def test_offboard_exports_then_shreds(cli, engine, tenant, other_tenant, seed_requests, tmp_path):
    seed_requests(engine, tenant, 2)
    seed_requests(engine, other_tenant, 1)
    private = X25519PrivateKey.generate()
    key_file = tmp_path / "tenant.pub"
    key_file.write_text(private.public_key().public_bytes_raw().hex())
    result = as_json(
        cli(
            "tenants",
            "offboard",
            tenant,
            "--export",
            str(tmp_path / "out"),
            "--public-key",
            str(key_file),
            "--crypto-shred",
            "--json",
        )
    )
    assert result["shredded"] is True
    assert result["keys_destroyed"] == 4
    sealed = tmp_path / "out" / f"{tenant}-records.json.sealed"
    document = json.loads(open_sealed(private, sealed.read_bytes()))
    assert len(document["tables"]["service_requests"]) == 2
    assert (tmp_path / "out" / f"{tenant}-open-data.geojson").exists()
    shredded = cli("privacy", "keys", "--tenant", tenant, expect=2)
    assert "crypto-shredded" in shredded.output
    assert "Traceback" not in shredded.output
    other = as_json(cli("privacy", "keys", "--tenant", other_tenant, "--json"))
    assert [k["rows"] for k in other if k["kind"] == "dek"] == [2]

    # The city opens its file with the documented command, and the audit entry of the
    # sealed export names the file and its SHA-256.
    private_file = tmp_path / "tenant.key"
    private_file.write_text(private.private_bytes_raw().hex())
    opened = tmp_path / "records.json"
    cli(
        "tenants",
        "open-sealed",
        str(sealed),
        "--private-key",
        str(private_file),
        "--out",
        str(opened),
    )
    assert json.loads(opened.read_text()) == document
    assert opened.stat().st_mode & 0o077 == 0
    wrong = tmp_path / "wrong.key"
    wrong.write_text(X25519PrivateKey.generate().private_bytes_raw().hex())
    failed = cli(
        "tenants",
        "open-sealed",
        str(sealed),
        "--private-key",
        str(wrong),
        "--out",
        str(opened),
        expect=2,
    )
    assert "failed authentication" in failed.output
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        [entry] = session.scalars(
            select(AuditEntry).where(
                AuditEntry.chain == tenant, AuditEntry.action == "export.sealed"
            )
        ).all()
    assert entry.details["files"] == [sealed.name]
    assert entry.details["sha256"] == [hashlib.sha256(sealed.read_bytes()).hexdigest()]

    # The privacy report gives the shredding as evidence instead of failing on missing keys.
    report = json.loads(cli("privacy", "report", "--tenant", tenant, "--format", "json").stdout)
    assert report["passed"]
    shred = next(c for c in report["controls"] if c["id"] == "crypto_shred")
    assert shred["evidence"]["keys_destroyed"] == 4
    assert shred["evidence"]["key_rows_remaining"] == 0
    chain = next(c for c in report["controls"] if c["id"] == "audit_chain")
    assert chain["passed"]
    markdown = cli("privacy", "report", "--tenant", tenant).stdout
    assert "| The tenant's keys were crypto-shredded" in markdown


def test_open_sealed_restricts_existing_file(cli, tmp_path):
    """The records go out owner-only even over a file that others could read, and an --out
    that cannot be written gives a message, not a traceback."""
    private = X25519PrivateKey.generate()
    sealed = tmp_path / "records.json.sealed"
    sealed.write_bytes(seal(private.public_key(), b'{"tables": {}}'))
    key_file = tmp_path / "tenant.key"
    key_file.write_text(private.private_bytes_raw().hex())
    opened = tmp_path / "records.json"
    opened.write_text("old")
    opened.chmod(0o644)

    args = ("tenants", "open-sealed", str(sealed), "--private-key", str(key_file), "--out")
    cli(*args, str(opened))

    assert opened.read_bytes() == b'{"tables": {}}'
    assert opened.stat().st_mode & 0o077 == 0
    blocked = tmp_path / "a-file" / "records.json"
    blocked.parent.write_text("not a folder")
    failed = cli(*args, str(blocked), expect=2)
    assert f"cannot write --out {blocked}" in failed.output
    assert "Traceback" not in failed.output


def test_shred_without_export_rejected(cli, tenant):
    result = cli("tenants", "offboard", tenant, "--crypto-shred", expect=2)
    assert "--crypto-shred needs --export DIR" in result.output


def test_purge_audited_as_operator(cli, engine, tenant, seed_requests, close_expired):
    ids = seed_requests(engine, tenant, 2)
    close_expired(engine, tenant, ids[0])
    purged = as_json(cli("--as", "dana.lee", "privacy", "purge", "--tenant", tenant, "--json"))
    assert purged["service_requests"] == 1
    assert "deleted:service_requests" not in purged
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        actors = session.scalars(
            select(AuditEntry.actor).where(
                AuditEntry.chain == tenant, AuditEntry.action == "retention.purge"
            )
        ).all()
    assert actors == ["cli:dana.lee"]


def test_rotate_wait_records_encryptions(cli, engine, tenant, seed_requests):
    seed_requests(engine, tenant, 3)
    rotated = as_json(cli("privacy", "rotate", "--tenant", tenant, "--dek", "--wait", "--json"))
    # Each seeded request has four ciphertexts and its status event one.
    assert sum(rotated["reencrypted"].values()) == 6
    listing = as_json(cli("privacy", "keys", "--tenant", tenant, "--json"))
    counts = {k["version"]: k["encryptions"] for k in listing if k["kind"] == "dek"}
    assert counts[2] == 15


def _purposes_declared_in_source() -> set[str]:
    """Return the first argument of every `declare_purpose("...")` call in the hub's code."""
    root = Path(__file__).resolve().parents[3]
    codes = set()
    for package in ("hub", "failover", "privacy", "tenants"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "declare_purpose"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    codes.add(node.args[0].value)
    return codes


def test_report_lists_every_hub_purpose(cli, tenant):
    report = json.loads(cli("privacy", "report", "--tenant", tenant, "--format", "json").stdout)
    purposes = next(c for c in report["controls"] if c["id"] == "purpose_limitation")
    declared = purposes["evidence"]["declared_purposes"]

    by_hub = {item["code"] for item in declared if item["declared_by"] == "hub"}
    assert by_hub == _purposes_declared_in_source()
    assert {"agency_delivery", "alerts.delivery", "overflow.partner_view"} <= by_hub
    assert [item["code"] for item in declared if item["declared_by"] == "default"] == [
        "staff.request_view"
    ]
    assert purposes["passed"]


def test_verify_against_earlier_export(cli, engine, tenant, seed_requests, tmp_path):
    from sqlalchemy import delete

    from hub.core.tenancy import SystemContext
    from privacy.models import AuditCheckpoint, AuditHead

    seed_requests(engine, tenant, 1)
    earlier = tmp_path / "earlier.jsonl"
    cli("audit", "export", "--out", str(earlier), "--tenant", tenant, "--json")
    later = tmp_path / "later.jsonl"
    cli("audit", "export", "--out", str(later), "--tenant", tenant, "--json")
    assert as_json(cli("audit", "verify", str(later), "--earlier", str(earlier), "--json"))["ok"]

    with unit_of_work(SystemContext("test"), engine=engine) as session:
        last = max(session.scalars(select(AuditEntry.seq).where(AuditEntry.chain == tenant)))
        session.execute(
            delete(AuditEntry).where(AuditEntry.chain == tenant, AuditEntry.seq == last)
        )
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.chain == tenant))
        session.execute(delete(AuditHead).where(AuditHead.chain == tenant))
    shrunk = tmp_path / "shrunk.jsonl"
    cli("audit", "export", "--out", str(shrunk), "--tenant", tenant, "--json")
    assert as_json(cli("audit", "verify", str(shrunk), "--json"))["ok"]

    failed = cli("audit", "verify", str(shrunk), "--earlier", str(earlier), expect=1)
    assert f"deleted: entries {tenant} #{last} of the earlier export" in failed.output
    missing = cli("audit", "verify", str(shrunk), "--earlier", str(tmp_path / "nope"), expect=2)
    assert "not found" in missing.output


def test_purge_prints_deleted_requests(cli, engine, tenant, seed_requests):
    from datetime import UTC, datetime

    from sqlalchemy import update

    from hub.requests.models import ServiceRequest

    ids = seed_requests(engine, tenant, 2)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        session.execute(
            update(ServiceRequest)
            .where(ServiceRequest.id == ids[0])
            .values(status="closed", closed_at=datetime(2015, 1, 1, tzinfo=UTC))
        )
    output = cli("privacy", "purge", "--tenant", tenant).stdout
    assert "deleted:service_requests" in output
    purged = as_json(cli("privacy", "purge", "--tenant", tenant, "--json"))
    assert purged["service_requests"] == 0
    assert "deleted:service_requests" not in purged


def test_verify_counts_entries_removed_by_retention(cli, engine, monkeypatch, request, tmp_path):
    from datetime import UTC, datetime

    import privacy.audit
    from privacy.audit import audit

    with monkeypatch.context() as patch:
        patch.setattr(privacy.audit, "utcnow", lambda: datetime(2016, 1, 1, tzinfo=UTC))
        tenant = request.getfixturevalue("tenant")
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            for _ in range(3):
                audit(session, tenant_id=tenant, actor="cli:test", action="test.event")
    earlier = tmp_path / "earlier.jsonl"
    cli("audit", "export", "--out", str(earlier), "--tenant", tenant)

    purged = as_json(cli("privacy", "purge", "--tenant", tenant, "--json"))
    # keys.create and the three test entries are old; the export's checkpoint is not an entry.
    assert purged["deleted:audit_log"] == 4
    later = tmp_path / "later.jsonl"
    cli("audit", "export", "--out", str(later), "--tenant", tenant)

    data = as_json(cli("audit", "verify", str(later), "--earlier", str(earlier), "--json"))
    assert data["ok"], data["problems"]
    assert data["removed_by_retention"] == 4
    assert data["anchors"] == {tenant: 4}
    text = cli("audit", "verify", str(later), "--earlier", str(earlier)).stdout
    assert f"chain {tenant} starts after its retention anchor #4" in text
    assert "4 entries of the earlier export(s) were removed by retention" in text
