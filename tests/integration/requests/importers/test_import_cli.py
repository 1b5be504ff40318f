"""`hub import` and `hub requests` through the real Typer app, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import getpass
import json

import pytest
from import_support import city_manifest, onboard_data
from sqlalchemy import func, select
from typer.testing import CliRunner

from hub.cli.main import app
from hub.core.db import dispose_engines, unit_of_work
from hub.core.logging import configure_logging
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from hub.requests.schemas import IntakeData
from hub.requests.service import submit_request
from privacy.fields import encryption_count
from privacy.models import AuditEntry
from privacy.report import build_report
from tenants.registry import invalidate_cache

NYC5 = "311_records/nyc/NYC311-5.csv"


@pytest.fixture
def hub_cli(db_url, monkeypatch):
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    reset_settings_cache()
    invalidate_cache()
    # CliRunner replaces sys.stderr with a stream it closes afterwards, so logging is set up
    # before it runs.
    configure_logging(force=True)
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    yield run
    reset_settings_cache()
    dispose_engines()


@pytest.fixture
def two_cities(engine):
    manifests = [city_manifest("nyc", "America/New_York") for _ in range(2)]
    for manifest in manifests:
        # The samples closed years ago; a long retention keeps their personal fields.
        manifest["privacy"] = {
            "retention_days": {"personal_data": 36500},
            "decryption_purposes": [
                {"code": "staff.review", "descriptions": {"en": "Review a request."}},
                {"code": "staff.callback", "descriptions": {"en": "Call the resident back."}},
            ],
        }
    a, b = (onboard_data(engine, manifest) for manifest in manifests)
    return a, b


def test_import_json_report_then_noop(hub_cli, two_cities, shared_data):
    a, _ = two_cities
    first = hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id, "--json")
    assert first.exit_code == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["read"] == 5
    assert report["imported"] == 5
    assert report["tenant"] == a.id
    assert report["dst_adjustments"] == {"ambiguous": 0, "nonexistent": 0}

    second = hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id, "--json")
    again = json.loads(second.stdout)
    assert again["imported"] == 0
    assert again["skipped_existing"] == 5


def test_import_text_report(hub_cli, two_cities, shared_data):
    a, _ = two_cities
    result = hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id)
    assert result.exit_code == 0
    assert "read 5, imported 5" in result.stdout
    assert "DST adjustments: 0 ambiguous" in result.stdout


def test_import_records_encryption_counts(hub_cli, two_cities, shared_data, engine):
    a, _ = two_cities
    result = hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id)
    assert result.exit_code == 0, result.stderr

    with unit_of_work(TenantContext(a.id), engine=engine) as session:
        coverage = next(
            c for c in build_report(session, a.id)["controls"] if c["id"] == "encryption_coverage"
        )
        counted = encryption_count(session, a.id, 1)
    assert counted > 0
    assert counted == coverage["evidence"]["stored_values"]


BAD_INVOCATIONS = [
    # (arguments after `import`, words the one-line error must contain)
    (["nyc-csv", "SF", "--tenant", "A"], ["missing the column", "'Unique Key'", "NYC 311"]),
    (["chicago-csv", "NYC", "--tenant", "A"], ["unknown import format", "nyc-csv"]),
    (["nyc-csv", "NYC", "--tenant", "nowhere"], ["tenant 'nowhere' not found"]),
    (["nyc-csv", "/no/such/file.csv", "--tenant", "A"], ["file not found", "/no/such/file.csv"]),
    (["nyc-csv", "NYCDIR", "--tenant", "A"], ["is a folder, not a file", "a file in it"]),
    (["nyc-json", "NYC", "--tenant", "A"], ["does not start with a JSON array", "CSV formats"]),
    (["nyc-csv", "NYC", "--tenant", "A", "--fallback", "nope"], ["fallback service 'nope'"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_INVOCATIONS)
def test_bad_import_one_line_error(hub_cli, two_cities, shared_data, args, words):
    a, _ = two_cities
    files = {
        "SF": str(shared_data / "311_records/sf/cases_sample_10000(no-geo).csv"),
        "NYC": str(shared_data / NYC5),
        "NYCDIR": str((shared_data / NYC5).parent),
        "A": a.id,
    }
    result = hub_cli("import", *[files.get(arg, arg) for arg in args])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "error: " in message
    message = message[message.index("error: ") :]
    for word in words:
        assert word in message


def test_requests_list_and_status_filter(hub_cli, two_cities, shared_data):
    a, b = two_cities
    hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id)

    listed = json.loads(hub_cli("requests", "list", "--tenant", a.id, "--json").stdout)
    assert listed["total"] == 5
    assert {r["source"] for r in listed["requests"]} == {"nyc311"}
    assert "personal" not in listed["requests"][0]

    closed = json.loads(
        hub_cli("requests", "list", "--tenant", a.id, "--status", "closed", "--json").stdout
    )
    assert closed["total"] == 4

    other = json.loads(hub_cli("requests", "list", "--tenant", b.id, "--json").stdout)
    assert other["total"] == 0


def test_requests_list_open311_status_groups(hub_cli, two_cities, shared_data):
    a, _ = two_cities
    hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id)

    def listed(*statuses: str) -> dict:
        options = [part for status in statuses for part in ("--status", status)]
        result = hub_cli("requests", "list", "--tenant", a.id, *options, "--json")
        assert result.exit_code == 0, result.stdout
        return json.loads(result.stdout)

    opened = listed("open")
    assert opened["total"] == 1
    assert opened["requests"][0]["status"] != "closed"
    assert listed("open", "closed")["total"] == 5
    assert listed("open", opened["requests"][0]["status"])["total"] == 1


def test_requests_list_unknown_status(hub_cli, two_cities):
    a, _ = two_cities
    result = hub_cli("requests", "list", "--tenant", a.id, "--status", "pending")
    assert result.exit_code == 2
    assert "unknown status pending" in result.stderr
    assert "Open311 groups open and closed" in result.stderr


def test_requests_show_decrypts_with_purpose(hub_cli, two_cities, shared_data, engine):
    a, b = two_cities
    hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id)
    listed = json.loads(hub_cli("requests", "list", "--tenant", a.id, "--json").stdout)
    request_id = next(r["id"] for r in listed["requests"] if r["source_id"] == "34675190")

    plain = json.loads(hub_cli("requests", "show", request_id, "--tenant", a.id, "--json").stdout)
    assert "personal" not in plain
    assert [e["status"] for e in plain["history"]] == ["submitted", "closed"]

    def decryptions() -> int:
        with unit_of_work(TenantContext(a.id), engine=engine, write=False) as session:
            return session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.tenant_id == a.id, AuditEntry.action == "pii.decrypt")
            )

    before = decryptions()
    shown = hub_cli(
        "requests", "show", request_id, "--tenant", a.id, "--purpose", "staff.review", "--json"
    )
    data = json.loads(shown.stdout)
    assert data["personal"]["address"] == "117 EAST 118 STREET, NEW YORK"
    assert "police action was not necessary" in data["history"][1]["note"]
    # One entry for the request's fields and one for the closing note.
    assert decryptions() == before + 2


def test_requests_show_other_tenant_not_found(hub_cli, two_cities, shared_data):
    a, b = two_cities
    hub_cli("import", "nyc-csv", str(shared_data / NYC5), "--tenant", a.id)
    listed = json.loads(hub_cli("requests", "list", "--tenant", a.id, "--json").stdout)
    request_id = listed["requests"][0]["id"]

    result = hub_cli("requests", "show", request_id, "--tenant", b.id, "--purpose", "staff.review")
    assert result.exit_code == 2
    assert f"service request {request_id} not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_requests_find_only_own_tenant(hub_cli, two_cities, engine):
    a, b = two_cities
    ids = {}
    for tenant in (a, b):
        ctx = TenantContext(tenant.id, actor="test")
        with unit_of_work(ctx, engine=engine) as session:
            data = IntakeData(
                service_code="noise", lat=40.75, lon=-73.99, email="Caller@Example.org"
            )
            ids[tenant.id] = submit_request(session, ctx, tenant, data).id

    found = json.loads(
        hub_cli(
            "requests", "find", "--tenant", a.id, "--email", "caller@example.org", "--json"
        ).stdout
    )
    assert [r["id"] for r in found["requests"]] == [ids[a.id]]
    assert "caller@example.org" not in json.dumps(found).lower()

    missing = hub_cli("requests", "find", "--tenant", a.id)
    assert missing.exit_code == 2
    assert "--phone NUMBER or --email ADDRESS" in missing.stderr


def test_requests_find_is_audited(hub_cli, two_cities, engine):
    a, _ = two_cities
    _noise_request(engine, a, "caller@example.org")

    found = hub_cli(
        "--as",
        "dana",
        "requests",
        "find",
        "--tenant",
        a.id,
        "--email",
        "caller@example.org",
        "--purpose",
        "staff.callback",
        "--json",
    )
    assert found.exit_code == 0, found.stderr

    with unit_of_work(TenantContext(a.id), engine=engine, write=False) as session:
        [entry] = session.scalars(
            select(AuditEntry).where(
                AuditEntry.tenant_id == a.id, AuditEntry.action == "pii.search"
            )
        ).all()
    assert entry.actor == "cli:dana"
    assert entry.details["by"] == ["email"]
    assert entry.details["purpose"] == "staff.callback"
    assert entry.details["results"] == 1
    assert "caller" not in json.dumps(entry.details) + str(entry.subject)

    undeclared = hub_cli(
        "requests", "find", "--tenant", a.id, "--phone", "2125550100", "--purpose", "nosy"
    )
    assert undeclared.exit_code == 2
    assert "decryption purpose 'nosy' is not declared" in undeclared.stderr


def _nyc_with_broken_row(shared_data, tmp_path):
    """Write the first NYC sample row with a bad Created Date and an unknown Status."""
    with (shared_data / NYC5).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        row = next(reader)
        fields = list(row)
    row.update({"Created Date": "yesterday", "Status": "Reopened"})
    path = tmp_path / "broken.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerow(row)
    return path


def test_import_lists_every_problem_of_a_row(hub_cli, two_cities, shared_data, tmp_path):
    a, _ = two_cities
    path = _nyc_with_broken_row(shared_data, tmp_path)

    result = hub_cli("import", "nyc-csv", str(path), "--tenant", a.id, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rejected"] == 1
    assert report["rejected_by_reason"] == {"unknown_status": 1, "invalid_time": 1}
    [rejection] = report["rejections"]
    assert rejection["column"] == "Status; Created Date"
    assert rejection["reason"] == "unknown_status; invalid_time"
    assert rejection["message"].startswith("Status 'Reopened' is not one of: ")
    assert "; Created Date 'yesterday' does not match " in rejection["message"]

    text = hub_cli("import", "nyc-csv", str(path), "--tenant", a.id)
    assert text.exit_code == 0, text.stderr
    summary = " ".join(text.stdout.split())
    assert "counts under each of its reasons" in summary
    assert "unknown_status" in summary
    assert "invalid_time" in summary
    assert "'Reopened'" in summary
    assert "'yesterday'" in summary


def _noise_request(engine, tenant, email: str) -> str:
    ctx = TenantContext(tenant.id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        data = IntakeData(service_code="noise", lat=40.75, lon=-73.99, email=email)
        return submit_request(session, ctx, tenant, data).id


def test_requests_show_rejects_undeclared_purpose(hub_cli, two_cities, engine):
    a, _ = two_cities
    request_id = _noise_request(engine, a, "caller@example.org")

    result = hub_cli("requests", "show", request_id, "--tenant", a.id, "--purpose", "staff.curious")

    assert result.exit_code == 2
    assert "decryption purpose 'staff.curious' is not declared" in result.stderr
    assert "(staff.review, staff.callback)" in result.stderr
    assert "privacy.decryption_purposes" in result.stderr
    assert "caller@example.org" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    with unit_of_work(TenantContext(a.id), engine=engine, write=False) as session:
        [entry] = session.scalars(
            select(AuditEntry).where(
                AuditEntry.tenant_id == a.id, AuditEntry.action == "pii.decrypt_rejected"
            )
        ).all()
    # Without --as or HUB_OPERATOR, the OS user is the one audited.
    assert entry.actor == f"cli:{getpass.getuser()}"
    assert entry.details["purpose"] == "staff.curious"
    assert entry.details["reason"] == "undeclared_purpose"


def test_requests_show_accepts_declared_purpose(hub_cli, two_cities, engine):
    a, _ = two_cities
    request_id = _noise_request(engine, a, "caller@example.org")

    result = hub_cli(
        "requests", "show", request_id, "--tenant", a.id, "--purpose", "staff.callback", "--json"
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["personal"]["email"] == "caller@example.org"
