"""docs/agency-webhooks.md against what the hub sends: the body's fields, their types and nulls,
the example body and the headers, so the contract page cannot drift from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from doc_tables import JSON_TYPES, field_table, section, table_rows, type_errors
from pipeline_support import add_duplicate_pair, add_request, add_service, add_tenant
from sqlalchemy import Engine

from hub.cli.demo.receiver import AgencyReceiver
from hub.core.db import unit_of_work
from hub.core.tenancy import TenantContext
from hub.requests.tasks import route
from tenants.agencies import rotate_webhook_secret

CONTRACT = Path(__file__).resolve().parents[3] / "docs" / "agency-webhooks.md"


def _section(title: str) -> str:
    """Return the text of the `## title` section of the contract page."""
    return section(CONTRACT, title)


def _documented_fields() -> dict[str, tuple[str, bool]]:
    return field_table(_section("Body"))


def _documented_headers() -> dict[str, str]:
    return {row[0].strip("`"): row[1] for row in table_rows(_section("The request"))}


def _type_errors(body: dict[str, Any]) -> list[str]:
    return type_errors(_documented_fields(), body)


def test_documented_fields_have_known_types() -> None:
    fields = _documented_fields()

    assert len(fields) > 20
    assert {json_type for json_type, _ in fields.values()} <= set(JSON_TYPES)


def test_example_body_matches_fields() -> None:
    (example,) = re.findall(r"```json\n(.*?)```", _section("Body"), re.DOTALL)

    body = json.loads(example)

    assert set(body) == set(_documented_fields())
    assert _type_errors(body) == []


def test_sent_body_matches_fields(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    add_service(configured_db, tenant_id, {"en": "Pothole"})
    original, duplicate = add_duplicate_pair(configured_db, tenant_id, ["dpw"])

    route(original, tenant_id=tenant_id)
    route(duplicate, tenant_id=tenant_id)

    bodies = [item.payload for item in receiver.snapshot()]
    assert len(bodies) == 2
    for body in bodies:
        assert set(body) == set(_documented_fields())
        assert _type_errors(body) == []


def test_sent_headers_match_doc(configured_db: Engine, receiver: AgencyReceiver) -> None:
    tenant_id = add_tenant(configured_db, receiver, ["dpw"])
    ctx = TenantContext(tenant_id=tenant_id, actor="test")
    with unit_of_work(ctx, engine=configured_db) as session:
        rotate_webhook_secret(session, ctx, "dpw", overlap_hours=1)
    request_id = add_request(configured_db, tenant_id, ["dpw"])

    route(request_id, tenant_id=tenant_id)

    (item,) = receiver.snapshot()
    documented = _documented_headers()
    sent = {name.lower(): value for name, value in item.headers.items()}
    for name in documented:
        assert name.lower() in sent, name
    hub_headers = {name for name in sent if name.startswith("x-hub-")}
    assert hub_headers == {name.lower() for name in documented if name.startswith("X-Hub-")}
    assert f"`{sent['content-type']}`" == documented["Content-Type"]
    assert f"`{sent['user-agent']}`" == documented["User-Agent"]
    assert sent["x-hub-delivery-id"] == item.payload["delivery_id"]
