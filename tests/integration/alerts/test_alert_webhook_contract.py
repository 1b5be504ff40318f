"""The "Resident webhooks" section of docs/alerts.md against what the hub sends: the body's
fields, their types and nulls, the example body, the headers and the signature check, so the
contract that city apps build on cannot drift from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from alerts_support import NYC_POINT, HttpReceiver, add_resident, add_tenant, cap_alert
from doc_tables import JSON_TYPES, field_table, section, table_rows, type_errors
from sqlalchemy import Engine
from test_alert_fanout import approve, compose, run_batches, send

# The receiver listens on 127.0.0.1, which residents' webhooks may use only with this setting.
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")

CONTRACT = Path(__file__).resolve().parents[3] / "docs" / "alerts.md"


def _part(title: str) -> str:
    """Return the `### title` part of the page's "Resident webhooks" section."""
    webhooks = section(CONTRACT, "Resident webhooks")
    start = webhooks.index(f"\n### {title}\n")
    end = webhooks.find("\n### ", start + 1)
    return webhooks[start : end if end != -1 else len(webhooks)]


def _documented_fields() -> dict[str, tuple[str, bool]]:
    return field_table(_part("Body"))


def _documented_headers() -> dict[str, str]:
    return {row[0].strip("`"): row[1] for row in table_rows(_part("The request"))}


def _code_block(text: str, language: str) -> str:
    (block,) = re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)
    return block


def _deliver(engine: Engine, receiver: HttpReceiver) -> tuple[str, list[dict[str, Any]]]:
    """Send an Alert, an Update and a Cancel without info (with a note) to one resident;
    return the tenant and what the receiver got, in that order."""
    tenant = add_tenant(
        engine,
        alerts={"rate_limits": {"webhook": 1000}, "public_base_url": "https://hub.example.org"},
    )
    add_resident(engine, tenant, NYC_POINT, {"webhook": receiver.url("/app")})
    first = cap_alert("CONTRACT-1")
    update = cap_alert(
        "CONTRACT-2",
        msg_type="Update",
        references=f"{first.sender},{first.identifier},{first.sent.isoformat()}",
    )
    cancel = cap_alert(
        "CONTRACT-3",
        msg_type="Cancel",
        references=f"{update.sender},{update.identifier},{update.sent.isoformat()}",
        with_info=False,
    )
    cancel.note = "Sent in error."
    for cap in (first, update, cancel):
        [row] = compose(engine, tenant, cap)
        approve(engine, tenant, row.id, "em2")
        send(engine, [row])
        run_batches(engine, tenant, row.id)
    entries = list(receiver.received.bodies.values())
    order = {"Alert": 0, "Update": 1, "Cancel": 2}
    return tenant, sorted(entries, key=lambda e: order[e["body"]["msg_type"]])


def test_documented_fields_have_known_types() -> None:
    fields = _documented_fields()

    assert len(fields) > 15
    assert {json_type for json_type, _ in fields.values()} <= set(JSON_TYPES)


def test_example_body_matches_fields() -> None:
    body = json.loads(_code_block(_part("Body"), "json"))

    assert set(body) == set(_documented_fields())
    assert type_errors(_documented_fields(), body) == []


def test_sent_bodies_match_fields(engine: Engine, webhook_receiver: HttpReceiver) -> None:
    _tenant, entries = _deliver(engine, webhook_receiver)

    assert [e["body"]["msg_type"] for e in entries] == ["Alert", "Update", "Cancel"]
    for entry in entries:
        body = entry["body"]
        assert set(body) == set(_documented_fields())
        assert type_errors(_documented_fields(), body) == []
    alert, update, cancel = (entry["body"] for entry in entries)
    assert (alert["severity"], alert["urgency"], alert["certainty"]) == (
        "Severe",
        "Expected",
        "Likely",
    )
    assert alert["references"] is None
    assert alert["sent"].endswith("-00:00")
    assert update["references"].startswith(f"{alert['sender']},{alert['identifier']},")
    # A Cancel without info takes the earlier message's values, and gives its note as the
    # reason instead of the earlier description and instruction.
    assert cancel["severity"] == "Severe"
    assert cancel["headline"] == f"Cancelled: {update['headline']}"
    assert (cancel["description"], cancel["instruction"]) == ("Sent in error.", "")
    assert cancel["unsubscribe_url"].startswith("https://hub.example.org/alerts/")


def test_sent_headers_match_doc(engine: Engine, webhook_receiver: HttpReceiver, cli) -> None:
    tenant, entries = _deliver(engine, webhook_receiver)
    key = json.loads(cli("webhook-key", "--tenant", tenant, "--json").stdout)["webhook_key"]
    # The receiver code that the page gives city apps.
    recipe: dict[str, Any] = {}
    exec(_code_block(_part("Checking the signature"), "python"), recipe)  # noqa: S102

    documented = _documented_headers()
    for entry in entries:
        sent = {name.lower(): value for name, value in entry["headers"].items()}
        hub_headers = {name for name in sent if name.startswith("x-hub-")}
        assert hub_headers == {name.lower() for name in documented if name.startswith("X-Hub-")}
        assert f"`{sent['content-type']}`" == documented["Content-Type"]
        assert sent["x-hub-delivery-id"] == entry["body"]["delivery_key"]
        assert recipe["signature_ok"](key, entry["raw"], sent["x-hub-signature-256"])
        assert not recipe["signature_ok"](key, entry["raw"] + b" ", sent["x-hub-signature-256"])
