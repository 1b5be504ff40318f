from pathlib import Path

import pytest
import yaml

from failover.manifest import load_partner_manifest, parse_partner_manifest
from hub.core.errors import InvalidInput

EXAMPLES = Path(__file__).resolve().parents[3] / "failover" / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_are_valid(path):
    manifest = load_partner_manifest(path)
    assert manifest.agreements


def test_language_tags_any_case_accepted():
    data = base()
    data["center"]["languages"] = ["EN", "Es-US"]
    data["agreements"][0]["languages"] = ["ES"]
    manifest = parse_partner_manifest(data)
    assert manifest.center.languages == ["EN", "Es-US"]
    assert manifest.agreements[0].languages == ["ES"]


def base():
    return yaml.safe_load((EXAMPLES / "northeast-answering.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["agreements"][0].update(share_cap=1.5), "agreements[0].share_cap"),
        (lambda d: d["agreements"][0].update(data_level="everything"), "agreements[0].data_level"),
        (
            lambda d: d["agreements"][0].update(valid_until="2025-01-01"),
            "valid_until must be after valid_from",
        ),
        (
            lambda d: d["agreements"][1].update(tenant="boston"),
            "tenant 'boston' has two agreements",
        ),
        (lambda d: d["center"].update(timezone="Mars/Olympus"), "center.timezone"),
        (
            lambda d: d["center"].update(hours={"funday": ["09:00-17:00"]}),
            "unknown weekday 'funday'",
        ),
        (
            lambda d: d["center"].update(hours={"monday": ["17:00-09:00"]}),
            "must end after it starts",
        ),
        (lambda d: d["agreements"][0].update(channels=["fax"]), "agreements[0].channels[0]"),
        (lambda d: d["agreements"][0].update(languages=["Spanish"]), "not a BCP 47 language tag"),
        (lambda d: d["agreements"][0].update(cost_weight=0), "agreements[0].cost_weight"),
        (lambda d: d.update(agreements=[]), "agreements"),
        (lambda d: d["center"].update(extra_field=1), "center.extra_field"),
    ],
    ids=[
        "share-cap",
        "data-level",
        "dates",
        "duplicate-tenant",
        "timezone",
        "weekday",
        "hours-order",
        "channel",
        "language",
        "cost-weight",
        "no-agreements",
        "unknown-field",
    ],
)
def test_invalid_manifest_names_the_field(change, message):
    data = base()
    change(data)
    with pytest.raises(InvalidInput) as excinfo:
        parse_partner_manifest(data, source="partner.yaml")
    assert message in excinfo.value.message
    assert excinfo.value.message.startswith("partner.yaml is invalid")
