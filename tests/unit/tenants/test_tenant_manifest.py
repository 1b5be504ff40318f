"""Manifest validation: the shipped examples pass, and each bad field is named in the error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tenants.manifest import ManifestError, example_paths, load_manifest, parse_manifest

EXAMPLES = {path.stem: path for path in example_paths()}


def _base() -> dict:
    return yaml.safe_load(EXAMPLES["san-francisco"].read_text(encoding="utf-8"))


def test_three_examples_are_shipped():
    assert set(EXAMPLES) == {"new-york-city", "boston", "san-francisco"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_validates(name):
    manifest = load_manifest(EXAMPLES[name])
    assert manifest.id == name
    assert manifest.languages[:2] == ["en", "es"]
    assert any(s.location_sensitive for s in manifest.services)
    # Placeholders that never resolve: an example onboarded as it is sends nothing anywhere.
    assert all(
        a.webhook_url.startswith("https://agency-webhooks.example.invalid/")
        for a in manifest.agencies
    )
    assert all(manifest.agency_for(s.code) for s in manifest.services)


@pytest.mark.parametrize(
    ("name", "jurisdiction", "timezone", "region"),
    [
        ("new-york-city", "nyc.gov", "America/New_York", "northeast"),
        ("boston", "boston.gov", "America/New_York", "northeast"),
        ("san-francisco", "sf.gov", "America/Los_Angeles", "bay-area"),
    ],
)
def test_example_identity(name, jurisdiction, timezone, region):
    manifest = load_manifest(EXAMPLES[name])
    assert manifest.jurisdiction_id == jurisdiction
    assert manifest.timezone == timezone
    assert manifest.region == region


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("new-york-city", (-73.9855, 40.7580), (-74.0776, 40.7282)),  # Times Square, Jersey City
        ("boston", (-71.0589, 42.3601), (-71.1212, 42.3420)),  # City Hall, Coolidge Corner
        ("san-francisco", (-122.4193, 37.7793), (-122.2711, 37.8044)),  # City Hall, Oakland
    ],
)
def test_example_service_area(name, inside, outside):
    area = load_manifest(EXAMPLES[name]).service_area
    assert area.contains(*inside)
    assert not area.contains(*outside)


def _set(data: dict, path: list, value) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()


def _problems_with(path: list, value) -> list[str]:
    """Return the problems of the San Francisco example with `value` at `path`."""
    data = copy.deepcopy(_base())
    _set(data, path, value)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    return caught.value.problems


BAD_FIELDS = [
    (["id"], "San Francisco", "id: "),
    (["jurisdiction_id"], "not a domain", "jurisdiction_id: "),
    (["jurisdiction_id"], _DELETE, "jurisdiction_id: required field is missing"),
    (["timezone"], "America/Gotham", "timezone: 'America/Gotham' is not an IANA time zone"),
    (["languages"], ["en", "Spanish"], "languages: 'Spanish' is not a BCP 47"),
    (["languages"], [], "languages: "),
    (["languages"], ["en", "es", "EN"], "languages: duplicate language(s) EN, en; tags ignore"),
    (
        ["services", 0, "names", "EN"],
        "Cans",
        "services[0] (code 001).names: language keys 'EN', 'en' name one language",
    ),
    (["region"], "Bay Area", "region: "),
    (["service_area", "type"], "Point", "service_area.type: "),
    (
        ["service_area", "coordinates"],
        [[[-122.5, 37.7], [-122.4, 37.8], [-122.4, 37.7], [-122.5, 37.8], [-122.5, 37.7]]],
        "service_area.coordinates[0]: ring crosses itself (edge 0 crosses edge 2)",
    ),
    (
        ["service_area", "coordinates", 0, -1],
        [-122.0, 37.0],
        "service_area.coordinates[0]: ring is not closed",
    ),
    (
        ["service_area", "coordinates", 0, 1],
        [37.77, -122.51],
        "service_area.coordinates[0][1]: latitude -122.51",
    ),
    (
        ["services", 3, "attributes", 0, "datatype"],
        "list",
        "services[3] (code 015).attributes[0].datatype: must be one of string, number",
    ),
    (
        ["services", 3, "attributes", 0, "values"],
        [],
        "services[3] (code 015).attributes[0].values: a multivaluelist attribute needs",
    ),
    (
        ["services", 3, "attributes", 1, "values"],
        [{"key": "1", "names": {"en": "one"}}],
        "services[3] (code 015).attributes[1].values: only list datatypes",
    ),
    (["services", 0, "code"], "has space", "services[0].code: "),
    (
        ["services", 0, "names"],
        {"es": "Botes"},
        "services[0] (code 001).names: missing the default language 'en'",
    ),
    (
        ["services", 0, "names", "fr"],
        "Poubelles",
        "services[0] (code 001).names: language 'fr' is not in languages",
    ),
    (["services", 0, "sla_hours"], -4, "services[0] (code 001).sla_hours: "),
    (
        ["services", 0, "open_data"],
        {"location": "blurred"},
        "services[0] (code 001).open_data.location: ",
    ),
    (
        ["services", 0, "open_data"],
        {"location": "h3", "h3_resolution": 16},
        "services[0] (code 001).open_data.h3_resolution: ",
    ),
    (["services", 0, "agency"], "NOPE", "services[0] (code 001).agency: unknown agency 'NOPE'"),
    (["services", 0, "colour"], "red", "services[0] (code 001).colour: unknown field"),
    (["services", 1, "code"], "001", "services[1] (code 001).code: duplicate '001'"),
    (
        ["agencies", 0, "webhook_url"],
        "ftp://127.0.0.1/x",
        "agencies[0].webhook_url: must be an http",
    ),
    (["agencies", 0, "webhook_secret"], "short", "agencies[0].webhook_secret: "),
    (["agencies", 0, "max_deliveries_per_minute"], 0, "agencies[0].max_deliveries_per_minute: "),
    (
        ["agencies", 0, "max_deliveries_per_minute"],
        -5,
        "agencies[0].max_deliveries_per_minute: ",
    ),
    (
        ["agencies", 0, "max_deliveries_per_minute"],
        1e-11,
        "agencies[0].max_deliveries_per_minute: ",
    ),
    (
        ["agencies", 0, "max_deliveries_per_minute"],
        float("inf"),
        "agencies[0].max_deliveries_per_minute: ",
    ),
    (
        ["agencies", 0, "max_deliveries_per_minute"],
        "fast",
        "agencies[0].max_deliveries_per_minute: ",
    ),
    (["open311"], {"max_posts_per_minute_per_key": 0}, "open311.max_posts_per_minute_per_key: "),
    (["open311"], {"max_posts_per_minute_per_key": 2.5}, "open311.max_posts_per_minute_per_key: "),
    (["open311"], {"max_posts_per_minute": 60}, "open311.max_posts_per_minute: "),
    (["routing", "default"], "NOPE", "routing.default: unknown agency 'NOPE'"),
    (
        ["routing", "rules", 0],
        {"agency": "DPW_OPS"},
        "routing.rules[0]: give exactly one of service_code or group",
    ),
    (["calendar", "hours", "monday"], ["17:00-09:00"], "calendar.hours.monday: "),
    (["calendar", "hours", "funday"], ["09:00-17:00"], "calendar.hours: weekday 'funday'"),
    (["calendar", "holidays", 0, "date"], "2027-02-30", "calendar.holidays[0].date: "),
    (["privacy", "k"], 1, "privacy.k: "),
    (
        ["privacy", "retention_days", "personal_data"],
        0,
        "privacy.retention_days.personal_data: retention must be at least 1 day",
    ),
    (["alerts", "rate_limits", "sms"], 0, "alerts.rate_limits.sms: rate must be greater than 0"),
    (
        ["overflow", "thresholds", "low_wait_seconds"],
        500,
        "overflow.thresholds: low_wait_seconds must be below",
    ),
    (["overflow", "centers", 0, "agents"], -1, "overflow.centers[0].agents: "),
    (
        ["profile", "group_names"],
        {"Parks": {"en": "Parks", "es": "Parques"}},
        "profile.group_names: no service has the group 'Parks'",
    ),
    (
        ["profile", "group_names"],
        {"Graffiti": {"en": " "}},
        "profile.group_names: text for language 'en' is empty",
    ),
    (
        ["privacy", "decryption_purposes", 1, "code"],
        "Staff Callback",
        "privacy.decryption_purposes[1].code: 'Staff Callback' is not a valid purpose code; "
        "use 2-64 lower-case letters",
    ),
    (
        ["privacy", "decryption_purposes", 1, "code"],
        "staff.request_view",
        "privacy.decryption_purposes[1].code: duplicate 'staff.request_view' (first at [0])",
    ),
    (
        ["privacy", "decryption_purposes", 0, "descriptions"],
        _DELETE,
        "privacy.decryption_purposes[0].descriptions: required field is missing",
    ),
    (
        ["privacy", "decryption_purposes", 0, "descriptions"],
        {"es": "Leer una solicitud."},
        "privacy.decryption_purposes[0].descriptions: missing the English text; add it under "
        "the key 'en'",
    ),
    (
        ["privacy", "decryption_purposes", 2, "descriptions", "en"],
        " ",
        "privacy.decryption_purposes[2].descriptions: text for language 'en' is empty",
    ),
    (
        ["overflow", "centers", 0, "languages"],
        ["en", "Tagalog!"],
        "overflow.centers[0].languages: 'Tagalog!' is not a BCP 47 language tag such as en or "
        "es-US",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"), BAD_FIELDS, ids=[str(c[2]).split(":")[0] for c in BAD_FIELDS]
)
def test_bad_field_is_named(path, value, expected):
    problems = _problems_with(path, value)
    assert any(p.startswith(expected) for p in problems), problems


def test_several_problems_reported_together():
    data = copy.deepcopy(_base())
    data["timezone"] = "Nowhere/Town"
    data["services"][0]["sla_hours"] = 0
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    assert len(caught.value.problems) == 2
    assert "timezone" in caught.value.message
    assert "services[0] (code 001).sla_hours" in caught.value.message


def test_feature_sections_accept_extra_keys():
    data = copy.deepcopy(_base())
    data["alerts"]["atom_feed_title"] = "SF alerts"
    manifest = parse_manifest(data)
    assert manifest.alerts.model_extra == {"atom_feed_title": "SF alerts"}


def test_defaults_for_optional_sections():
    data = copy.deepcopy(_base())
    for section in ("privacy", "alerts", "overflow", "calendar", "districts", "region"):
        data.pop(section)
    for service in data["services"]:
        if service.get("open_data", {}).get("location") == "district":
            service.pop("open_data")
    manifest = parse_manifest(data)
    assert manifest.privacy.k == 5
    assert manifest.privacy.decryption_purposes == []
    assert manifest.overflow.service_level_target_seconds == 30
    assert manifest.alerts.approval.second_approver_for_actual is True
    assert manifest.calendar.hours["monday"] == ["09:00-17:00"]
    assert "saturday" not in manifest.calendar.hours


def test_yaml_syntax_error_names_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert "not valid YAML at line" in caught.value.message


def test_missing_file_message(tmp_path: Path):
    with pytest.raises(Exception) as caught:
        load_manifest(tmp_path / "absent.yaml")
    assert "manifest file not found" in str(caught.value)


def test_stored_form_drops_webhook_secrets():
    data = copy.deepcopy(_base())
    data["agencies"][0]["webhook_secret"] = "s" * 32
    stored = parse_manifest(data).stored_form()
    assert stored["agencies"][0]["webhook_secret"] is None
    assert parse_manifest(stored).agencies[0].webhook_secret is None


def test_routing_order():
    manifest = load_manifest(EXAMPLES["new-york-city"])
    assert manifest.agency_for("HEAT_HOT_WATER") == "HPD"  # the service's own agency
    assert manifest.agency_for("NOISE_RESIDENTIAL") == "NYPD"  # group rule
    assert manifest.agency_for("UNKNOWN") is None


def test_language_tags_match_in_any_case():
    data = copy.deepcopy(_base())
    # The other services keep their names under the lower-case keys en, es and zh.
    data["languages"] = ["EN", "Es", "ZH", "fil"]
    data["services"][0]["names"] = {"en": "Cans left out", "ES": "Botes", "zh": "垃圾桶"}
    manifest = parse_manifest(data)
    assert manifest.languages == ["EN", "Es", "ZH", "fil"]
    assert manifest.default_language == "EN"
    assert manifest.services[0].names["ES"] == "Botes"


def test_center_language_tags_any_case():
    data = copy.deepcopy(_base())
    data["overflow"]["centers"][0]["languages"] = ["EN", "ES-US", "zh", "Fil"]
    manifest = parse_manifest(data)
    assert manifest.overflow.centers[0].languages == ["EN", "ES-US", "zh", "Fil"]


def _problems_of_file(tmp_path: Path, text: str) -> list[str]:
    """Load `text` as a manifest file and return the problems of its ManifestError."""
    path = tmp_path / "city.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return caught.value.problems


def _example_text(replace: str, by: str) -> str:
    text = EXAMPLES["boston"].read_text(encoding="utf-8")
    assert replace in text
    return text.replace(replace, by, 1)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("2026-08-32", "'2026-08-32' is not a day of the calendar: that month has no day 32"),
        ("2027-02-29", "'2027-02-29' is not a day of the calendar: that month has no day 29"),
        ("2026-13-01", "'2026-13-01' is not a date: there is no month 13"),
        (
            "2026-11-26 10:00",
            "'2026-11-26 10:00' is not a date; write it as YYYY-MM-DD, such as 2026-12-25",
        ),
        ("20260704", "'20260704' is not a date; write it as YYYY-MM-DD, such as 2026-12-25"),
    ],
)
def test_invalid_unquoted_date_named(tmp_path: Path, written: str, problem: str):
    text = _example_text("date: 2026-11-26", f"date: {written}")
    problems = _problems_of_file(tmp_path, text)
    assert problems == [f"calendar.holidays[0].date: {problem}"]


def test_unquoted_time_kept_as_text(tmp_path: Path):
    # YAML 1.1 reads an unquoted 13:00 as the base-60 number 780.
    text = _example_text('saturday: ["09:00-13:00"]', "saturday: [13:00]")
    problems = _problems_of_file(tmp_path, text)
    assert problems == ["calendar.hours.saturday: hours range '13:00' must look like 08:30-17:00"]


def test_unquoted_dates_still_load():
    manifest = load_manifest(EXAMPLES["boston"])
    assert str(manifest.calendar.holidays[0].date) == "2026-11-26"


def test_comparisons_run_beside_field_errors():
    data = copy.deepcopy(_base())
    data["timezone"] = "Nowhere/Town"
    data["services"][0]["names"]["fr"] = "Poubelles"
    # The same service has an invalid field, so only its valid fields can be compared.
    data["services"][1]["sla_hours"] = -4
    data["services"][1]["names"] = {"es": "Solo español"}
    data["services"][2]["agency"] = "NOPE"
    data["services"][3]["attributes"][0]["order"] = -1
    data["services"][3]["attributes"][1]["code"] = data["services"][3]["attributes"][0]["code"]
    data["agencies"][0]["webhook_url"] = "ftp://127.0.0.1/x"
    data["routing"]["default"] = "NOPE"
    data["overflow"]["thresholds"]["low_wait_seconds"] = 500
    data["overflow"]["thresholds"]["high_hold_seconds"] = -1

    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)

    problems = caught.value.problems
    expected = [
        "timezone: ",
        "services[1] (code 011).sla_hours: ",
        "services[3] (code 015).attributes[0].order: ",
        "agencies[0].webhook_url: ",
        "overflow.thresholds.high_hold_seconds: ",
        "services[0] (code 001).names: language 'fr' is not in languages",
        "services[1] (code 011).names: missing the default language 'en'",
        "services[2] (code 012).agency: unknown agency 'NOPE'",
        "services[3] (code 015).attributes: duplicate code(s)",
        "routing.default: unknown agency 'NOPE'",
        "overflow.thresholds: low_wait_seconds must be below high_wait_seconds",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems


def test_invalid_agency_code_not_reported_as_unknown():
    data = copy.deepcopy(_base())
    agency = data["agencies"][0]
    agency["code"] = agency["code"] + " X"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["agencies[0].code"], problems


def test_agency_delivery_cap_optional():
    data = copy.deepcopy(_base())
    data["agencies"][0]["max_deliveries_per_minute"] = 0.5

    manifest = parse_manifest(data)

    assert manifest.agencies[0].max_deliveries_per_minute == 0.5
    assert manifest.agencies[1].max_deliveries_per_minute is None
    data["agencies"][0]["max_deliveries_per_minute"] = 0.001
    assert parse_manifest(data).agencies[0].max_deliveries_per_minute == 0.001


def test_post_limit_default_and_off():
    data = copy.deepcopy(_base())
    assert parse_manifest(data).open311.max_posts_per_minute_per_key == 600

    data["open311"] = {"max_posts_per_minute_per_key": None}
    assert parse_manifest(data).open311.max_posts_per_minute_per_key is None

    data["open311"] = {"max_posts_per_minute_per_key": 3000}
    assert parse_manifest(data).open311.max_posts_per_minute_per_key == 3000


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_declares_staff_purposes(name):
    purposes = load_manifest(EXAMPLES[name]).privacy.decryption_purposes
    codes = [purpose.code for purpose in purposes]
    # The purpose that docs/open311.md and the staff API use by default comes first.
    assert codes[0] == "staff.request_view"
    assert len(set(codes)) == len(codes)
    assert all(purpose.descriptions["en"].strip() for purpose in purposes)


def test_purpose_descriptions_accept_regional_english():
    data = copy.deepcopy(_base())
    data["privacy"]["decryption_purposes"] = [
        {"code": "staff.request_view", "descriptions": {"en-US": "Read a request."}}
    ]
    manifest = parse_manifest(data)
    assert manifest.privacy.decryption_purposes[0].descriptions == {"en-US": "Read a request."}


def test_duplicate_key_names_both_lines(tmp_path: Path):
    text = _example_text("timezone: America/New_York", "timezone: America/New_York")
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("timezone:"))
    lines.insert(first + 1, "timezone: America/Chicago")
    problems = _problems_of_file(tmp_path, "\n".join(lines) + "\n")
    assert problems == [
        f"key 'timezone' is written twice, at line {first + 1} and at line {first + 2}; keep "
        "one of them, because YAML would silently use the last"
    ]


def test_duplicate_key_in_nested_mapping(tmp_path: Path):
    text = _example_text("sla_hours: 16", "sla_hours: 16\n    sla_hours: 24")
    problems = _problems_of_file(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith("services[")
    assert ".sla_hours" not in problems[0].split(":")[0]
    assert "key 'sla_hours' is written twice, at line " in problems[0]


SLA_HOURS_FORM = "write a number of hours greater than 0 and at most 8760, such as 48"

# Errors whose default pydantic text named neither the value nor the fix.
DEFAULT_TEXT_REWRITTEN = [
    (["services", 0, "sla_hours"], "2d", f"'2d' is not a number; {SLA_HOURS_FORM}"),
    (["services", 0, "sla_hours"], "48h", f"'48h' is not a number; {SLA_HOURS_FORM}"),
    (["services", 0, "sla_hours"], "PT48H", f"'PT48H' is not a number; {SLA_HOURS_FORM}"),
    (["services", 0, "sla_hours"], -4, f"-4 is out of range; {SLA_HOURS_FORM}"),
    (["services", 0, "sla_hours"], 10000, f"10000 is out of range; {SLA_HOURS_FORM}"),
    (
        ["services", 0, "sla_clock"],
        "calendar",
        "'calendar' is not allowed; use one of business, continuous",
    ),
    (
        ["calendar", "holidays", 0],
        "2026-12-25",
        "expected a mapping of fields, got '2026-12-25'; write each holiday as "
        "`- date: 2026-12-25`, with an optional `name: Christmas Day` on the next line",
    ),
    (["languages"], "en, es", "expected a list, got the text 'en, es'; write it as [en, es]"),
    (
        ["service_area", "type"],
        "polygon",
        "'polygon' is not allowed; use one of Polygon, MultiPolygon (case matters: write Polygon)",
    ),
    (["privacy", "k"], "five", "'five' is not a number; write a whole number at least 2"),
    (
        ["services", 0, "open_data"],
        "h3",
        "expected a mapping of fields, got 'h3'; write it as `field: value` lines with the "
        "fields location, h3_resolution",
    ),
    (["services", 0, "location_sensitive"], "maybe", "'maybe' is not true or false"),
    (
        ["services", 0, "code"],
        "has space",
        "'has space' is not valid; use 1 to 64 letters, digits, `_`, `.` or `-`",
    ),
    (
        ["services", 0, "sla"],
        24,
        "unknown field; check the spelling against docs/manifest.md; did you mean sla_hours",
    ),
    (
        ["timezon"],
        "America/Chicago",
        "unknown field; check the spelling against docs/manifest.md; did you mean timezone?",
    ),
    (["timezone"], "CST", "'CST' is a time zone abbreviation; use the city's IANA time zone"),
    (["timezone"], "EST", "'EST' is a time zone abbreviation; use the city's IANA time zone"),
    (["timezone"], "pst", "'pst' is a time zone abbreviation"),
]


@pytest.mark.parametrize(("path", "value", "expected"), DEFAULT_TEXT_REWRITTEN)
def test_error_names_value_and_fix(path, value, expected):
    problems = _problems_with(path, value)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert "Input should" not in problems[0]
    assert "Holiday" not in problems[0]


@pytest.mark.parametrize(
    ("zone", "suggestion"),
    [
        ("CST", "America/Chicago"),
        ("EST", "America/New_York"),
        ("PST", "America/Los_Angeles"),
        ("MST", "America/Denver"),
    ],
)
def test_timezone_abbreviation_suggests_zone(zone, suggestion):
    problems = _problems_with(["timezone"], zone)
    assert f"IANA time zone, {suggestion}" in problems[0]


def test_secret_value_never_quoted():
    data = copy.deepcopy(_base())
    data["agencies"][0]["webhook_secret"] = "short-secret"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    assert "short-secret" not in caught.value.message


def test_service_path_names_code():
    data = copy.deepcopy(_base())
    data["services"][3]["sla_hours"] = "2d"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    assert caught.value.problems[0].startswith("services[3] (code 015).sla_hours: '2d' ")


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            "code: REQPOTHL",
            "code: 012",
            "services[0].code: YAML read 012 as a number (10), but this field is text; "
            "quote it: '012'",
        ),
        (
            "languages: [en, es, zh]",
            "languages: [en, es, no]",
            "languages[2]: YAML read no as a boolean (False), but this field is text; "
            "quote it: 'no'",
        ),
    ],
)
def test_yaml_non_text_scalar_says_quote(tmp_path: Path, replace, by, expected):
    problems = _problems_of_file(tmp_path, _example_text(replace, by))
    assert expected in problems


def test_business_sla_longer_than_calendar_search_rejected():
    """One working hour a week gives 155 hours in the three years a deadline is searched for:
    a longer business SLA would reject every request of its service."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from tenants.calendar import sla_deadline

    data = _base()
    data["calendar"] = {"hours": {"monday": ["09:00-10:00"]}}
    for service in data["services"]:
        service.pop("sla_hours", None)
    data["services"][0]["sla_hours"] = 200
    data["services"][0]["sla_clock"] = "business"
    data["services"][1]["sla_hours"] = 155
    data["services"][1]["sla_clock"] = "business"

    with pytest.raises(ManifestError) as raised:
        parse_manifest(data)

    code = data["services"][0]["code"]
    [problem] = raised.value.problems
    assert problem.startswith(f"services[0] (code {code}).sla_hours: 200 business hours")
    assert "give at most 155 hours" in problem
    # The largest accepted value does get a deadline.
    data["services"][0]["sla_hours"] = 155
    manifest = parse_manifest(data)
    start = datetime(2026, 12, 6, tzinfo=ZoneInfo("UTC"))
    due = sla_deadline(start, 155, "business", manifest.calendar, manifest.timezone)
    assert due is not None and due - start < timedelta(days=3 * 366)


@pytest.mark.parametrize("rule", ["h3", "exact"])
def test_sensitive_resolution_capped(rule):
    data = copy.deepcopy(_base())
    data["services"][0]["location_sensitive"] = True
    data["services"][0]["open_data"] = {"location": rule, "h3_resolution": 9}

    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)

    code = data["services"][0]["code"]
    assert caught.value.problems == [
        f"services[0] (code {code}).open_data.h3_resolution: 9 is finer than a "
        "location-sensitive service may publish; use 8 or lower"
    ]


def test_sensitive_resolution_at_cap_accepted():
    data = copy.deepcopy(_base())
    data["services"][0]["location_sensitive"] = True
    data["services"][0]["open_data"] = {"location": "h3", "h3_resolution": 8}

    assert parse_manifest(data).services[0].open_data.h3_resolution == 8


def test_fine_resolution_allowed_without_sensitivity():
    data = copy.deepcopy(_base())
    data["services"][0]["location_sensitive"] = False
    data["services"][0]["open_data"] = {"location": "h3", "h3_resolution": 15}

    assert parse_manifest(data).services[0].open_data.h3_resolution == 15


def test_stored_manifest_skips_resolution_cap():
    data = copy.deepcopy(_base())
    data["services"][0]["location_sensitive"] = True
    data["services"][0]["open_data"] = {"location": "h3", "h3_resolution": 12}

    assert parse_manifest(data, stored=True).services[0].open_data.h3_resolution == 12


def test_unknown_retention_class_rejected():
    data = _base()
    data.setdefault("privacy", {})["retention_days"] = {"personal-data": 30}

    with pytest.raises(ManifestError) as raised:
        parse_manifest(data)

    assert raised.value.problems == [
        "privacy.retention_days: 'personal-data' is not a data class with a retention period; "
        "did you mean personal_data? the classes are personal_data, requests, audit"
    ]
    # A tenant stored before the check keeps loading.
    assert parse_manifest(data, stored=True).privacy.retention_days == {"personal-data": 30}


@pytest.mark.parametrize("timezone", ["EST5EDT", "EST", "HST"])
def test_stored_legacy_zone_still_loads(timezone):
    """A zone name such as EST5EDT is valid IANA and was accepted before the abbreviation
    check, so a tenant stored with it must keep loading (`stored=True`)."""
    data = _base()
    data["timezone"] = timezone

    with pytest.raises(ManifestError):
        parse_manifest(data)
    assert parse_manifest(data, stored=True).timezone == timezone


def test_stored_long_business_sla_still_loads():
    """A tenant stored before the SLA-against-calendar check must keep loading: only intake
    of that one service fails, not every lookup of the tenant."""
    data = _base()
    data["calendar"] = {"hours": {"monday": ["09:00-10:00"]}}
    for service in data["services"]:
        service.pop("sla_hours", None)
    data["services"][0]["sla_hours"] = 200
    data["services"][0]["sla_clock"] = "business"

    with pytest.raises(ManifestError):
        parse_manifest(data)
    assert parse_manifest(data, stored=True).services[0].sla_hours == 200
