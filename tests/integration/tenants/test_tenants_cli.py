"""`hub tenants` commands on SQLite and PostgreSQL, driven through the real Typer app."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from hub.cli.main import app
from hub.core.db import dispose_engines, get_engine, unit_of_work
from hub.core.settings import reset_settings_cache
from hub.core.tenancy import TenantContext
from hub.requests.schemas import IntakeData
from hub.requests.service import submit_request
from privacy.models import AuditEntry
from tenants.agencies import webhook_secrets
from tenants.keys import resolve_api_key
from tenants.manifest import EXAMPLES_DIR, parse_manifest
from tenants.models import Agency
from tenants.registry import get_tenant, invalidate_cache


@pytest.fixture
def hub_cli(db_url, monkeypatch):
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    reset_settings_cache()
    invalidate_cache()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout

    yield run
    reset_settings_cache()
    dispose_engines()


@pytest.fixture
def manifest_file(make_manifest, tmp_path: Path) -> tuple[Path, dict]:
    data = make_manifest("san-francisco")
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path, data


def test_onboard_prints_key_once(hub_cli, manifest_file):
    path, data = manifest_file
    code, out = hub_cli("tenants", "onboard", str(path), "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["outcome"] == "created"
    assert first["open311_api_key"].startswith("hub_")
    assert resolve_api_key(first["open311_api_key"]).tenant_id == data["id"]

    code, out = hub_cli("tenants", "onboard", str(path), "--json")
    assert code == 0, out
    second = json.loads(out)
    assert second["outcome"] == "unchanged"
    assert second["open311_api_key"] is None


def test_onboard_warns_of_placeholder_webhooks(hub_cli, make_manifest, tmp_path):
    data = make_manifest("san-francisco")
    for agency in data["agencies"]:
        agency["webhook_url"] = "http://127.0.0.1:9/agency"
    data["agencies"][0]["webhook_url"] = "https://agency-webhooks.example.invalid/sf"
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    code, out = hub_cli("tenants", "onboard", str(path), "--json")

    assert code == 0, out
    assert json.loads(out)["placeholder_webhooks"] == [data["agencies"][0]["code"]]
    # validate, which touches no database, warns the same way.
    code, out = hub_cli("tenants", "validate", str(path))
    assert code == 0, out
    assert f"warning: agencies: {data['agencies'][0]['code']} have a placeholder" in out


def test_list_and_show(hub_cli, manifest_file):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    code, out = hub_cli("tenants", "list", "--json")
    assert code == 0, out
    assert data["id"] in [t["id"] for t in json.loads(out)]
    code, out = hub_cli("tenants", "show", data["id"], "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["jurisdiction_id"] == data["jurisdiction_id"]
    assert {s["code"] for s in shown["services"]} == {s["code"] for s in data["services"]}


def test_show_lists_agencies_without_secrets(hub_cli, make_manifest, tmp_path):
    data = make_manifest("san-francisco")
    data["agencies"][0]["webhook_url"] = "https://user:pw@hooks.example.org:8443/sf?token=t"
    data["agencies"][0]["webhook_secret"] = "given-secret-0123456789"
    data["agencies"][0]["max_deliveries_per_minute"] = 2.5
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    hub_cli("tenants", "onboard", str(path))

    code, out = hub_cli("tenants", "show", data["id"], "--json")
    assert code == 0, out
    agencies = {a["code"]: a for a in json.loads(out)["agencies"]}
    assert set(agencies) == {a["code"] for a in data["agencies"]}
    first = agencies[data["agencies"][0]["code"]]
    assert first["name"] == data["agencies"][0]["name"]
    assert first["webhook_host"] == "hooks.example.org:8443"
    assert first["webhook_secret_set"] is True
    assert all(a["webhook_secret_set"] for a in agencies.values())
    assert first["max_deliveries_per_minute"] == 2.5
    others = [a for a in agencies.values() if a is not first]
    assert others and all(a["max_deliveries_per_minute"] is None for a in others)
    assert "given-secret" not in out
    assert "token=t" not in out

    code, text = hub_cli("tenants", "show", data["id"])
    assert code == 0, text
    assert "Agencies" in text
    assert data["agencies"][0]["code"] in text
    assert "2.5" in text
    assert "no cap" in text
    assert "given-secret" not in text


def test_onboard_warns_of_replaced_manifest_secret(hub_cli, make_manifest, tmp_path, db_url):
    data = make_manifest("san-francisco")
    data["agencies"][0]["webhook_secret"] = "given-secret-0123456789"
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    hub_cli("tenants", "onboard", str(path))
    tenant, agency = data["id"], data["agencies"][0]["code"]
    code, out = hub_cli(
        "tenants", "agency-secret", "--tenant", tenant, "--agency", agency, "--rotate", "--json"
    )
    assert code == 0, out
    rotated = json.loads(out)["webhook_secret"]
    data["name"] += " (edited)"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    code, out = hub_cli("tenants", "onboard", str(path))

    assert code == 0, out
    assert f"warning: agency {agency}: the manifest's webhook_secret is the one" in out
    assert f"remove the webhook_secret line of agency {agency} from the manifest" in out
    assert "given-secret" not in out
    engine = get_engine(db_url)
    assert _stored_secrets(engine, tenant, agency) == (rotated, "given-secret-0123456789")
    code, out = hub_cli("tenants", "onboard", str(path), "--json")
    assert code == 0, out
    assert json.loads(out)["replaced_manifest_secrets"] == [agency]


def test_agency_secret_shown_and_audited(hub_cli, make_manifest, tmp_path, db_url):
    data = make_manifest("san-francisco")
    data["agencies"][0]["webhook_secret"] = "given-secret-0123456789"
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    hub_cli("tenants", "onboard", str(path))
    tenant = data["id"]
    engine = get_engine(db_url)

    def reveals() -> int:
        with engine.connect() as conn:
            return conn.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.tenant_id == tenant,
                    AuditEntry.action == "agency.webhook_secret.reveal",
                )
            )

    given, generated = data["agencies"][0]["code"], data["agencies"][1]["code"]
    code, out = hub_cli("tenants", "agency-secret", "--tenant", tenant, "--agency", given, "--json")
    assert code == 0, out
    assert json.loads(out)["webhook_secret"] == "given-secret-0123456789"
    assert reveals() == 1

    code, out = hub_cli("tenants", "agency-secret", "--tenant", tenant, "--agency", generated)
    assert code == 0, out
    stored, _ = _stored_secrets(engine, tenant, generated)
    assert stored in out.split()
    assert reveals() == 2

    code, out = hub_cli(
        "tenants", "agency-secret", "--tenant", tenant, "--agency", "NOPE", "--json"
    )
    assert code == 2
    assert json.loads(out)["error"].startswith("agency 'NOPE' not found")
    assert reveals() == 2


def _stored_secrets(engine, tenant: str, code: str) -> tuple[str | None, str | None]:
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        row = session.scalars(select(Agency).where(Agency.code == code)).one()
        stored = webhook_secrets(session, row)
        return stored.current, stored.previous


def test_agency_secret_rotate(hub_cli, manifest_file, db_url):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    tenant, agency = data["id"], data["agencies"][1]["code"]
    engine = get_engine(db_url)
    old, _ = _stored_secrets(engine, tenant, agency)

    code, out = hub_cli(
        "tenants", "agency-secret", "--tenant", tenant, "--agency", agency, "--rotate", "--json"
    )

    assert code == 0, out
    rotated = json.loads(out)
    assert rotated["webhook_secret"] != old
    assert _stored_secrets(engine, tenant, agency) == (rotated["webhook_secret"], old)
    assert rotated["previous_secret_valid_until"]
    with engine.connect() as conn:
        entries = conn.execute(
            select(AuditEntry.details).where(
                AuditEntry.tenant_id == tenant,
                AuditEntry.action == "agency.webhook_secret.rotate",
            )
        ).all()
    assert [entry.details["overlap_hours"] for entry in entries] == [24.0]
    assert old not in out.replace(rotated["webhook_secret"], "")
    code, out = hub_cli("tenants", "show", tenant, "--json")
    agencies = {a["code"]: a for a in json.loads(out)["agencies"]}
    assert agencies[agency]["previous_secret_valid_until"] == rotated["previous_secret_valid_until"]
    assert old not in out
    assert rotated["webhook_secret"] not in out

    code, out = hub_cli(
        "tenants",
        "agency-secret",
        "--tenant",
        tenant,
        "--agency",
        agency,
        "--rotate",
        "--overlap-hours",
        "0",
    )
    assert code == 0, out
    newest, previous = _stored_secrets(engine, tenant, agency)
    assert newest in out.split()
    assert previous is None
    assert "no longer signs deliveries" in out
    assert "onboarding keeps the new secret while the manifest carries the replaced one" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--overlap-hours", "2"], "--overlap-hours sets the overlap of a rotation"),
        (["--rotate", "--overlap-hours", "-1"], "invalid --overlap-hours -1.0"),
        (["--rotate", "--overlap-hours", "1000"], "invalid --overlap-hours 1000.0"),
    ],
)
def test_agency_secret_rotate_bad_options(hub_cli, manifest_file, db_url, options, message):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    tenant, agency = data["id"], data["agencies"][0]["code"]
    before = _stored_secrets(get_engine(db_url), tenant, agency)

    code, out = hub_cli(
        "tenants", "agency-secret", "--tenant", tenant, "--agency", agency, *options, "--json"
    )

    assert code == 2
    assert json.loads(out)["error"].startswith(message)
    assert _stored_secrets(get_engine(db_url), tenant, agency) == before


def test_show_names_services_in_any_case(hub_cli, make_manifest, tmp_path):
    data = make_manifest("san-francisco")
    data["languages"] = [tag.upper() for tag in data["languages"]]
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    hub_cli("tenants", "onboard", str(path))

    code, out = hub_cli("tenants", "show", data["id"], "--json")

    assert code == 0, out
    first = data["services"][0]
    names_by_code = {s["code"]: s["name"] for s in json.loads(out)["services"]}
    assert names_by_code[first["code"]] == first["names"][data["languages"][0].lower()]


def test_show_unknown_tenant(hub_cli):
    code, out = hub_cli("tenants", "show", "no-such-tenant")
    assert code == 2
    assert out == ""


def create_key(hub_cli, *args: str) -> tuple[int, str]:
    """Run `hub tenants keys create` with `args`."""
    return hub_cli("tenants", "keys", "create", *args)


def test_keys_lifecycle(hub_cli, manifest_file, make_manifest, tmp_path):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    tenant = data["id"]
    code, out = create_key(
        hub_cli, "--tenant", tenant, "--role", "agency", "--agency", "DPW_OPS", "--json"
    )
    assert code == 0, out
    created = json.loads(out)
    assert resolve_api_key(created["api_key"]).roles == frozenset({"agency"})

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant, "--json")
    listed = json.loads(out)
    assert created["key_id"] in [k["key_id"] for k in listed]
    assert all("api_key" not in k for k in listed)

    other = make_manifest("boston")
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(other, allow_unicode=True), encoding="utf-8")
    hub_cli("tenants", "onboard", str(other_path))
    code, _ = hub_cli("tenants", "keys", "revoke", "--tenant", other["id"], str(created["key_id"]))
    assert code == 2
    assert resolve_api_key(created["api_key"]) is not None

    code, out = hub_cli(
        "tenants", "keys", "revoke", "--tenant", tenant, str(created["key_id"]), "--json"
    )
    assert code == 0, out
    assert json.loads(out)["revoked_at"]
    assert resolve_api_key(created["api_key"]) is None


def test_keys_unknown_role(hub_cli, manifest_file):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    code, out = hub_cli("tenants", "keys", "create", "--tenant", data["id"], "--role", "root")
    assert code == 2
    assert out == ""


def test_keys_create_role_required(hub_cli, manifest_file, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")
    code, out = hub_cli("tenants", "keys", "create", "--help")
    assert code == 0
    # The option column comes before the type column, so other options that mention --role in
    # their help do not match.
    [line] = [row for row in out.splitlines() if "--role " in row.split("<", 1)[0]]
    assert "[required]" in line

    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    code, out = hub_cli("tenants", "keys", "create", "--tenant", data["id"], "--json")
    assert code == 2
    assert json.loads(out)["error"].startswith("Missing option '--role'")


def test_keys_post_limit_stored_and_listed(hub_cli, manifest_file):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    tenant = data["id"]

    code, out = create_key(
        hub_cli, "--tenant", tenant, "--role", "open311", "--max-posts-per-minute", "120"
    )
    assert code == 0, out
    assert "limited to 120 POST requests a minute" in out
    code, out = create_key(
        hub_cli, "--tenant", tenant, "--role", "open311", "--max-posts-per-minute", "0", "--json"
    )
    assert code == 0, out
    unlimited = json.loads(out)
    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant, "--json")
    listed = {key["key_id"]: key["max_posts_per_minute"] for key in json.loads(out)}

    assert unlimited["max_posts_per_minute"] == 0
    assert resolve_api_key(unlimited["api_key"]).max_posts_per_minute == 0
    assert sorted(listed.values(), key=str) == [0, 120, None]


def test_keys_post_limit_negative_rejected(hub_cli, manifest_file):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    code, out = create_key(
        hub_cli, "--tenant", data["id"], "--role", "open311", "--max-posts-per-minute", "-1"
    )
    _, listed = hub_cli("tenants", "keys", "list", "--tenant", data["id"], "--json")

    assert code == 2
    assert out == ""
    assert [key["max_posts_per_minute"] for key in json.loads(listed)] == [None]


def test_keys_agencies_stored_and_listed(hub_cli, manifest_file):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    tenant = data["id"]
    code, out = create_key(
        hub_cli,
        "--tenant",
        tenant,
        "--role",
        "agency",
        "--agency",
        "DPW_OPS,DPW_BSM",
        "--agency",
        "DPW_BSSR",
        "--json",
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["agencies"] == ["DPW_BSM", "DPW_BSSR", "DPW_OPS"]
    credential = resolve_api_key(created["api_key"])
    assert credential.agencies == frozenset({"DPW_BSM", "DPW_BSSR", "DPW_OPS"})

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant, "--json")
    assert code == 0, out
    agencies = {k["key_id"]: k["agencies"] for k in json.loads(out)}
    assert agencies[created["key_id"]] == ["DPW_BSM", "DPW_BSSR", "DPW_OPS"]
    # The Open311 key that onboarding created acts for no agency.
    assert sorted(agencies.values()) == [[], ["DPW_BSM", "DPW_BSSR", "DPW_OPS"]]

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant)
    assert code == 0, out
    assert "agencies" in out
    [line] = [row for row in out.splitlines() if f" {created['key_id']} " in row]
    assert "DPW_BSM,DPW_BSSR,DPW_OPS" in line


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], "an agency key needs the code of each agency it acts for; give them with --agency"),
        (
            ["--agency", "DPW_OPS,PARKS"],
            "agency 'PARKS' is not an agency of tenant {tenant}; use a code from its manifest: "
            "DPW_BSM, DPW_BSSR, DPW_OPS, ",
        ),
    ],
    ids=["missing", "unknown"],
)
def test_keys_agency_role_checks_agencies(hub_cli, manifest_file, options, expected):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    tenant = data["id"]
    code, out = hub_cli(
        "tenants", "keys", "create", "--tenant", tenant, "--role", "agency", *options, "--json"
    )
    assert code == 2
    assert json.loads(out)["error"].startswith(expected.format(tenant=tenant))

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant, "--json")
    assert [k["roles"] for k in json.loads(out)] == [["open311"]]


def test_keys_agency_needs_agency_role(hub_cli, manifest_file):
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    code, out = create_key(
        hub_cli, "--tenant", data["id"], "--role", "staff", "--agency", "DPW_OPS", "--json"
    )
    assert code == 2
    message = json.loads(out)["error"]
    assert message.startswith("a key for agencies DPW_OPS needs the agency role")
    assert "add --role agency or leave out --agency" in message


def create_held_key(hub_cli, manifest_file, holder: str) -> tuple[str, int, str]:
    """Onboard the manifest, create an emergency_manager key with `--holder` and `--json`, and
    return the tenant id, the exit code and stdout."""
    path, data = manifest_file
    hub_cli("tenants", "onboard", str(path))
    code, out = create_key(
        hub_cli, "--tenant", data["id"], "--role", "emergency_manager", "--holder", holder, "--json"
    )
    return data["id"], code, out


def test_keys_holder_listed(hub_cli, manifest_file):
    tenant, code, out = create_held_key(hub_cli, manifest_file, "alice")
    assert code == 0, out
    created = json.loads(out)
    assert created["holder"] == "alice"

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant, "--json")
    assert code == 0, out
    holders = {k["key_id"]: k["holder"] for k in json.loads(out)}
    assert holders[created["key_id"]] == "alice"
    # The Open311 key that onboarding created names no holder.
    assert list(holders.values()).count(None) == 1

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant)
    assert code == 0, out
    assert "holder" in out
    [line] = [row for row in out.splitlines() if f" {created['key_id']} " in row]
    assert "alice" in line


def test_keys_holder_invalid(hub_cli, manifest_file):
    tenant, code, out = create_held_key(hub_cli, manifest_file, "alice smith")
    assert code == 2
    message = json.loads(out)["error"]
    assert message.startswith("--holder 'alice smith' is invalid")
    assert "such as alice" in message

    code, out = hub_cli("tenants", "keys", "list", "--tenant", tenant, "--json")
    assert [k["holder"] for k in json.loads(out)] == [None]


@pytest.mark.parametrize("command", ["validate", "onboard"])
def test_json_lists_manifest_problems(hub_cli, tmp_path, command):
    path = tmp_path / "bad.yaml"
    path.write_text("id: Not A Slug\n", encoding="utf-8")
    code, out = hub_cli("tenants", command, str(path), "--json")
    assert code == 2
    document = json.loads(out)
    assert document["exit_code"] == 2
    assert document["valid"] is False
    assert document["error"].startswith(f"{path}: invalid manifest")
    problems = document["problems"]
    assert any(p.startswith("id: ") for p in problems)
    assert "jurisdiction_id: required field is missing" in problems


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_validate_impossible_date(hub_cli, tmp_path, as_json):
    text = (EXAMPLES_DIR / "boston.yaml").read_text(encoding="utf-8")
    path = tmp_path / "city.yaml"
    path.write_text(text.replace("date: 2026-11-26", "date: 2026-08-32"), encoding="utf-8")

    code, out = hub_cli("tenants", "validate", str(path), *(["--json"] if as_json else []))

    assert code == 2, out
    if as_json:
        assert json.loads(out)["problems"] == [
            "calendar.holidays[0].date: '2026-08-32' is not a day of the calendar: that month "
            "has no day 32"
        ]
    else:
        assert out == ""


def test_import_catalog_cli(hub_cli, shared_data, tmp_path):
    out_file = tmp_path / "catalog.yaml"
    source = shared_data / "open311/boston/services.json"
    code, out = hub_cli("tenants", "import-catalog", str(source), "--out", str(out_file), "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["services"] == 118
    assert len(yaml.safe_load(out_file.read_text(encoding="utf-8"))["services"]) == 118


@pytest.mark.parametrize("command", ["validate", "onboard"])
def test_manifest_folder_or_binary(hub_cli, tmp_path, command):
    binary = tmp_path / "city.yaml"
    binary.write_bytes(bytes(range(128, 256)))

    code, out = hub_cli("tenants", command, str(tmp_path), "--json")
    assert code == 2
    assert json.loads(out)["error"] == (
        f"{tmp_path} is a folder, not a manifest file; give the path of a YAML file in it"
    )

    code, out = hub_cli("tenants", command, str(binary), "--json")
    assert code == 2
    assert json.loads(out)["error"] == (
        f"{binary} is not UTF-8 text; save the manifest as a UTF-8 YAML file"
    )


def _edited_copy(data: dict, tmp_path: Path) -> tuple[Path, dict]:
    """Write `data` with a new time zone, one agency fewer and one service more."""
    edited = copy.deepcopy(data)
    edited["timezone"] = "America/Chicago"
    removed = edited["agencies"].pop()["code"]
    for service in edited["services"]:
        if service.get("agency") == removed:
            service["agency"] = edited["agencies"][0]["code"]
    routing = edited.get("routing", {})
    if routing.get("default") == removed:
        routing["default"] = edited["agencies"][0]["code"]
    for rule in routing.get("rules", []):
        if rule["agency"] == removed:
            rule["agency"] = edited["agencies"][0]["code"]
    edited["services"].append({"code": "NEWSVC", "names": {"en": "New service"}})
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(edited, allow_unicode=True), encoding="utf-8")
    return path, edited


def test_onboard_dry_run_lists_changes(hub_cli, manifest_file, tmp_path):
    path, data = manifest_file
    assert hub_cli("tenants", "onboard", str(path))[0] == 0
    edited_path, _edited = _edited_copy(data, tmp_path)

    code, out = hub_cli("tenants", "onboard", str(edited_path), "--dry-run", "--json")

    assert code == 0, out
    preview = json.loads(out)
    assert preview["dry_run"] is True
    assert preview["outcome"] == "updated"
    assert preview["manifest_version"] == 2
    changes = preview["changes"]
    assert changes["timezone"] == {"from": data["timezone"], "to": "America/Chicago"}
    assert changes["languages"] is None
    assert changes["service_area_changed"] is False
    assert changes["services"]["added"] == ["NEWSVC"]
    assert changes["agencies"]["deactivated"] == [data["agencies"][-1]["code"]]
    code, out = hub_cli("tenants", "show", data["id"], "--json")
    assert json.loads(out)["timezone"] == data["timezone"]
    assert json.loads(out)["manifest_version"] == 1


def test_onboard_update_prints_changes(hub_cli, manifest_file, tmp_path):
    path, data = manifest_file
    assert hub_cli("tenants", "onboard", str(path))[0] == 0
    edited_path, _edited = _edited_copy(data, tmp_path)

    code, out = hub_cli("tenants", "onboard", str(edited_path))

    assert code == 0, out
    assert f"time zone: {data['timezone']} -> America/Chicago" in out
    assert "services: added NEWSVC" in out
    assert f"deactivated {data['agencies'][-1]['code']}" in out
    code, out = hub_cli("tenants", "show", data["id"], "--json")
    assert json.loads(out)["timezone"] == "America/Chicago"


def test_validate_and_onboard_print_warnings(hub_cli, make_manifest, tmp_path):
    data = make_manifest("san-francisco")
    data["calendar"]["holidays"].append(dict(data["calendar"]["holidays"][0]))
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    repeated = f"calendar.holidays[{len(data['calendar']['holidays']) - 1}].date: "

    code, out = hub_cli("tenants", "validate", str(path), "--json")
    assert code == 0, out
    warnings = json.loads(out)["warnings"]
    assert any(w.startswith(repeated) for w in warnings), warnings
    assert any("no built-in notices in 'zh'" in w for w in warnings), warnings

    code, out = hub_cli("tenants", "onboard", str(path))
    assert code == 0, out
    assert f"warning: {repeated}" in out


def test_onboard_warns_of_open_requests_on_deactivated_agency(hub_cli, manifest_file, tmp_path):
    path, data = manifest_file
    assert hub_cli("tenants", "onboard", str(path))[0] == 0
    removed = data["agencies"][-1]["code"]
    manifest = parse_manifest(copy.deepcopy(data))
    service = next(
        s
        for s in manifest.services
        if manifest.agency_for(s.code) == removed and not any(a.required for a in s.attributes)
    )
    tenant = get_tenant(data["id"])
    ctx = TenantContext(data["id"], actor="test")
    with unit_of_work(ctx, engine=get_engine()) as session:
        for _ in range(2):
            submit_request(
                session,
                ctx,
                tenant,
                IntakeData(service_code=service.code, lat=37.7793, lon=-122.4193),
            )
    edited_path, _edited = _edited_copy(data, tmp_path)

    code, out = hub_cli("tenants", "onboard", str(edited_path), "--dry-run", "--json")

    assert code == 0, out
    warnings = json.loads(out)["warnings"]
    assert f"agencies: {removed} becomes inactive with 2 open request(s)" in " ".join(warnings)
    code, out = hub_cli("tenants", "onboard", str(edited_path))
    assert code == 0, out
    assert f"warning: agencies: {removed} becomes inactive with 2 open request(s)" in out
