"""Input checks for new requests: location, text, contacts, media URLs, dates and
service-definition attributes.

Every failure raises `InvalidInput` naming the field and the rule, never the submitted value:
the value may be personal data. An undefined attribute's code is named when it looks like a code.
`check_intake` and `check_attributes` collect every problem before they raise, so that a client
learns all of them in one response. The other checks raise at the first problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from hub.core.errors import PLAIN_CODE, ErrorCollector, InvalidInput, merge_errors
from hub.requests import catalog, geo
from hub.requests.catalog import CatalogService, TenantSnapshot
from hub.requests.schemas import AttributeValue, IntakeData
from privacy.blind_index import IndexKind, normalize

MAX_DESCRIPTION_CHARS = 4000
MAX_SHORT_TEXT_CHARS = 200
MAX_MEDIA_URL_CHARS = 2000

# A tag opener such as `<b`, `</p`, `<!--` or `<?xml`, or a character reference such as
# `&lt;` or `&#60;`. HTML parsers read no tag when a space follows `<`, so "a < b" and a lone
# `&` stay allowed.
_HTML = re.compile(r"<[A-Za-z!/?]|&(#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
# C0 controls other than tab, line feed and carriage return, DEL and C1 controls, and the
# noncharacters U+FFFE and U+FFFF, which XML 1.0 cannot carry in an XML response.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
OPEN311_DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")


def check_text(field: str, value: str | None, *, max_chars: int = MAX_SHORT_TEXT_CHARS) -> None:
    """Reject over-long text, HTML markup and control characters in a free-text field."""
    if value is None:
        return
    if len(value) > max_chars:
        raise InvalidInput(
            f"{field} is {len(value)} characters long; the maximum is {max_chars}", field=field
        )
    if _HTML.search(value):
        raise InvalidInput(f"{field} must be plain text without HTML markup", field=field)
    if _CONTROL.search(value):
        raise InvalidInput(
            f"{field} contains control characters or the noncharacters U+FFFE and U+FFFF",
            field=field,
        )


def check_media_url(value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_MEDIA_URL_CHARS:
        raise InvalidInput(
            f"media_url is longer than {MAX_MEDIA_URL_CHARS} characters", field="media_url"
        )
    try:
        parts = urlsplit(value)
    except ValueError:
        # urlsplit rejects a host in brackets that is not an IPv6 address, such as `http://[x`.
        raise InvalidInput("media_url is not a valid URL", field="media_url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidInput("media_url must be an absolute http or https URL", field="media_url")
    if any(ch.isspace() for ch in value) or _CONTROL.search(value):
        raise InvalidInput("media_url must not contain spaces or control characters")


def parse_datetime(field: str, value: str) -> datetime:
    """Parse an ISO 8601 date-time that carries a UTC offset, such as `2024-01-31T09:00:00-05:00`.

    A value without an offset is ambiguous across time zones and is rejected.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"{field} is not an ISO 8601 date-time; use a form like 2024-01-31T09:00:00Z",
            field=field,
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInput(
            f"{field} has no UTC offset; add Z or an offset such as -05:00", field=field
        )
    return parsed


# Allowed keys that a message about a list attribute names; a longer list is referred to the
# service definition.
MAX_LISTED_KEYS = 10


def _allowed_keys(attribute: Mapping[str, Any]) -> list[str]:
    return [str(value.get("key")) for value in attribute.get("values") or []]


def _not_an_allowed_key(service_code: str, label: str, allowed: list[str]) -> InvalidInput:
    if len(allowed) <= MAX_LISTED_KEYS:
        keys = f"use one of {', '.join(allowed)}"
    else:
        keys = f"services/{service_code} lists the {len(allowed)} keys"
    return InvalidInput(f"{label} is not one of the service's allowed keys; {keys}", field=label)


def _check_one(
    service_code: str, code: str, datatype: str, attribute: Mapping[str, Any], value: str
) -> str:
    label = f"attribute[{code}]"
    if datatype == "number":
        try:
            number = float(value)
        except ValueError:
            raise InvalidInput(f"{label} must be a number", field=label) from None
        if not math.isfinite(number):
            raise InvalidInput(f"{label} must be a finite number", field=label)
        return value.strip()
    if datatype == "datetime":
        parse_datetime(label, value)
        return value.strip()
    if datatype == "singlevaluelist" or datatype == "multivaluelist":
        allowed = _allowed_keys(attribute)
        if value not in allowed:
            raise _not_an_allowed_key(service_code, label, allowed)
        return value
    max_chars = MAX_DESCRIPTION_CHARS if datatype == "text" else MAX_SHORT_TEXT_CHARS
    check_text(label, value, max_chars=max_chars)
    return value


def check_attributes(
    service_code: str,
    definition: Sequence[Mapping[str, Any]],
    submitted: Mapping[str, AttributeValue],
) -> dict[str, AttributeValue]:
    """Validate submitted attribute values against a service definition; return the clean set.

    Informational attributes (`variable: false`) take no input. A multivaluelist takes a list
    of allowed keys; every other datatype takes one value. Unknown codes are rejected so a
    client learns about a typo instead of losing the value.

    Every problem is collected before anything is raised, one error per attribute: first each
    undefined code, then in definition order each attribute with an invalid value or missing
    when required. One problem raises its InvalidInput and several an InvalidInputGroup.
    """
    by_code = {str(item.get("code")): item for item in definition}
    errors: list[InvalidInput] = []
    for code in submitted:
        attribute = by_code.get(code)
        if attribute is None or attribute.get("variable", True) is False:
            errors.append(_undefined_attribute(service_code, code))

    clean: dict[str, AttributeValue] = {}
    for code, attribute in by_code.items():
        if attribute.get("variable", True) is False:
            continue
        datatype = str(attribute.get("datatype", "string"))
        raw = submitted.get(code)
        values = [raw] if isinstance(raw, str) else list(raw or [])
        values = [v for v in values if v != ""]
        label = f"attribute[{code}]"
        if not values:
            if attribute.get("required"):
                errors.append(
                    InvalidInput(f"{label} is required for service {service_code}", field=label)
                )
            continue
        if datatype != "multivaluelist" and len(values) > 1:
            errors.append(InvalidInput(f"{label} takes one value, not a list", field=label))
            continue
        try:
            if datatype == "multivaluelist":
                clean[code] = [
                    _check_one(service_code, code, datatype, attribute, v) for v in values
                ]
            else:
                clean[code] = _check_one(service_code, code, datatype, attribute, values[0])
        except InvalidInput as exc:
            errors.append(exc)
    if errors:
        raise merge_errors(errors)
    return clean


def _undefined_attribute(service_code: str, code: str) -> InvalidInput:
    if PLAIN_CODE.fullmatch(code):
        subject = f"attribute[{code}] is"
    else:
        subject = "an attribute code with spaces, symbols or over 64 characters is"
    return InvalidInput(
        f"{subject} not defined for service {service_code}; "
        f"see services/{service_code} for its attributes",
        field="attribute",
    )


# The free-text fields of IntakeData in the order they are checked: the name in messages, the
# attribute and the maximum length in characters. Email and phone are checked after them.
_TEXT_FIELDS = (
    ("description", "description", MAX_DESCRIPTION_CHARS),
    ("address_string", "address", MAX_SHORT_TEXT_CHARS),
    ("first_name", "first_name", MAX_SHORT_TEXT_CHARS),
    ("last_name", "last_name", MAX_SHORT_TEXT_CHARS),
    ("device_id", "device_id", MAX_SHORT_TEXT_CHARS),
    ("address_id", "address_id", 120),
    ("zipcode", "zipcode", 16),
    ("account_id", "account_id", 120),
)


def check_intake(
    tenant: TenantSnapshot, service: CatalogService, data: IntakeData
) -> tuple[dict[str, AttributeValue], str | None, str | None]:
    """Check every field of a new request and return what intake stores or indexes.

    Returns the clean attributes, and the email and phone in the normalized form that their
    blind indexes take. Every problem is collected and raised together (`ErrorCollector`), in
    this order: the form problems that the API found, the location, the text fields, email,
    phone, media_url and the attributes. Each check reports a field once, for the first rule
    that it breaks.
    """
    errors = ErrorCollector(data.form_errors)
    # The form parse reports a lat or long that is not a number, so the location is not
    # checked again.
    if all(error.code != "invalid_location" for error in data.form_errors):
        errors.check(_check_location, tenant, data)

    for name, attribute, max_chars in _TEXT_FIELDS:
        errors.check(check_text, name, getattr(data, attribute), max_chars=max_chars)

    email = errors.check(_normalized_contact, "email", data.email)
    phone = errors.check(_normalized_contact, "phone", data.phone)
    errors.check(check_media_url, data.media_url)
    attributes = errors.check(check_attributes, service.code, service.attributes, data.attributes)

    errors.raise_any()
    return attributes or {}, email, phone


def _check_location(tenant: TenantSnapshot, data: IntakeData) -> None:
    """Raise InvalidInput unless the request has lat and long inside the service area, or an
    address."""
    has_point = data.lat is not None or data.lon is not None
    if has_point:
        if data.lat is None or data.lon is None:
            raise InvalidInput("lat and long must be given together", code="invalid_location")
        geo.check_coordinates(data.lat, data.lon)
        if not catalog.in_service_area(tenant, data.lat, data.lon):
            raise InvalidInput(
                "the location is outside this jurisdiction's service area",
                code="outside_service_area",
            )
    elif not (data.address or data.address_id):
        raise InvalidInput(
            "a location is required: lat and long, address_string or address_id",
            code="missing_location",
        )


def _normalized_contact(kind: IndexKind, value: str | None) -> str | None:
    """Check an email or phone as text and return it normalized for its blind index."""
    check_text(kind, value)
    return normalize(kind, value) if value else None
