"""XML and JSON rendering, the error format and parameter parsing of the Open311 API."""

from __future__ import annotations

import json

import pytest
from defusedxml.ElementTree import fromstring
from starlette.requests import Request

from hub.core.errors import InvalidInput
from hub.open311 import formats, params


def test_xml_lists_use_spec_child_names():
    body = formats.to_xml(
        "service_definition",
        {"service_code": "a", "attributes": [{"code": "c", "values": [{"key": "k"}]}]},
    )
    root = fromstring(body)
    assert root.find("attributes/attribute/values/value/key").text == "k"


def test_xml_booleans_and_nulls():
    root = fromstring(formats.to_xml("services", [{"metadata": True, "group": None}]))
    assert root.find("service/metadata").text == "true"
    assert root.find("service/group").text is None


def test_xml_keeps_four_byte_characters():
    body = formats.to_xml("service_requests", [{"description": "🕳️ 𝔸"}])
    assert fromstring(body).find("request/description").text == "🕳️ 𝔸"


@pytest.mark.parametrize("text", ["a\rb", "line 1\r\nline 2", "\r"])
def test_xml_keeps_carriage_returns(text):
    body = formats.to_xml("service_requests", [{"account_id": text}])
    assert fromstring(body).find("request/account_id").text == text


def test_json_is_utf8_not_escaped():
    assert formats.to_json({"a": "ñ😀"}) == '{"a":"ñ😀"}'.encode()


def _request(path: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": []})


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_error_entry_per_message(fmt):
    messages = ["first_name must be plain text", "attribute[depth] is required"]
    response = formats.render_error(
        _request(f"/open311/v2/requests.{fmt}"), 400, "invalid", messages
    )

    assert response.status_code == 400
    if fmt == "json":
        assert json.loads(response.body) == [
            {"code": 400, "description": messages[0]},
            {"code": 400, "description": messages[1]},
        ]
    else:
        errors = fromstring(response.body).findall("error")
        assert [error.find("code").text for error in errors] == ["400", "400"]
        assert [error.find("description").text for error in errors] == messages


def test_format_of_path():
    assert formats.format_of_path("/open311/v2/requests.xml") == "xml"
    assert formats.format_of_path("/open311/v2/requests.json") == "json"
    assert formats.format_of_path("/open311/v2/unknown") == "json"


def test_multivalue_attributes_collected():
    items = [
        ("attribute[tags][]", "x"),
        ("attribute[tags][]", "y"),
        ("attribute[size]", "3"),
        ("service_code", "a"),
    ]
    errors: list[InvalidInput] = []
    assert params.attributes(items, errors) == {"tags": ["x", "y"], "size": "3"}
    assert errors == []


@pytest.mark.parametrize(
    "items",
    [
        [("attribute[]", "x")],
        [("attribute[a][b]", "x")],
        [("attribute[a]", "1"), ("attribute[a]", "2")],
    ],
)
def test_malformed_attribute_names(items):
    errors: list[InvalidInput] = []
    params.attributes(items, errors)
    assert len(errors) == 1


def test_every_malformed_attribute_collected():
    items = [
        ("attribute[]", "x"),
        ("attribute[size]", "3"),
        ("attribute[a][b]", "x"),
        ("attribute[size]", "4"),
        ("attribute[kind]", "a"),
    ]
    errors: list[InvalidInput] = []

    attributes = params.attributes(items, errors)

    assert attributes == {"size": "3", "kind": "a"}
    assert [error.message for error in errors] == [
        "attribute parameters need a code: attribute[CODE]",
        "attribute parameter names look like attribute[CODE] or attribute[CODE][]",
        "attribute[size] is given twice; use attribute[size][] for a list",
    ]


def test_attribute_given_twice_omits_free_text_code():
    code = "call Ada on 555 0100"
    errors: list[InvalidInput] = []
    params.attributes([(f"attribute[{code}]", "1"), (f"attribute[{code}]", "2")], errors)

    [error] = errors
    assert error.message == "attribute[CODE] is given twice; use attribute[CODE][] for a list"


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e400", "abc"])
def test_coordinate_rejects_non_finite(raw):
    with pytest.raises(InvalidInput):
        params.coordinate([("lat", raw)], "lat")


class _Profile:
    """A profile of a tenant with English (the default) and Spanish."""

    def pick_language(self, requested):
        return "es" if requested.lower().startswith("es") else "en"

    def negotiate_language(self, header):
        return "es" if header and header.startswith("es") else "en"


def test_locale_wins_over_accept_language():
    choice = params.language("es_MX", "en", _Profile())
    assert choice == params.Language("es", from_header=False)
    assert choice.headers() == {"Content-Language": "es"}


def test_accept_language_sets_vary():
    choice = params.language(" ", "es;q=0.9", _Profile())
    assert choice == params.Language("es", from_header=True)
    assert choice.headers() == {"Content-Language": "es", "Vary": "Accept-Language"}


def test_no_language_given_varies_too():
    assert params.language(None, None, _Profile()) == params.Language("en", from_header=True)


@pytest.mark.parametrize("raw", ["abc", "0", "1001", "-1", "²", "9" * 5000, " 5"])
def test_positive_int_names_real_range(raw):
    with pytest.raises(InvalidInput, match=r"^page_size must be a whole number from 1 to 1000$"):
        params.positive_int(raw, "page_size", 1000, 1000)


def test_positive_int_accepts_range_and_default():
    assert params.positive_int(None, "page", 1, 100_000) == 1
    assert params.positive_int("", "page", 1, 100_000) == 1
    assert params.positive_int("100000", "page", 1, 100_000) == 100_000
    assert params.positive_int("0042", "page", 1, 100_000) == 42


@pytest.mark.parametrize("raw", ["", " ", "x" * 256, "tab\tkey"])
def test_bad_idempotency_keys(raw):
    with pytest.raises(InvalidInput):
        params.idempotency_key(raw)
