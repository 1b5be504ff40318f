"""Parsing of GeoReport v2 parameters: form fields, list filters, numbers and languages.

Messages name the parameter and the rule, never the submitted value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

from hub.core.errors import PLAIN_CODE, InvalidInput
from hub.requests.schemas import AttributeValue
from hub.requests.validation import parse_datetime
from tenants.profile import TenantProfile

MAX_IDEMPOTENCY_KEY_CHARS = 255
# Form fields accepted in one body; the GeoReport v2 POST has about 20 plus attributes.
MAX_FORM_FIELDS = 1000


def urlencoded_items(body: bytes) -> list[tuple[str, str]]:
    """Decode an `application/x-www-form-urlencoded` body as strict UTF-8.

    Raw and percent-encoded bytes must both be UTF-8, so text round-trips byte for byte and
    invalid bytes are rejected instead of being replaced.
    """
    try:
        text = body.decode("utf-8")
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise InvalidInput("the form body is not valid UTF-8; encode text as UTF-8") from None
    except ValueError:
        raise InvalidInput(f"the form body has more than {MAX_FORM_FIELDS} fields") from None


def first(items: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in items:
        if key == name:
            return value
    return None


def optional_text(items: list[tuple[str, str]], name: str) -> str | None:
    """Return the parameter's value, or None when it is absent or empty."""
    value = first(items, name)
    return value if value else None


def coordinate(items: list[tuple[str, str]], name: str) -> float | None:
    raw = optional_text(items, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a decimal number", code="invalid_location") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number", code="invalid_location")
    return value


def attributes(
    items: list[tuple[str, str]], errors: list[InvalidInput]
) -> dict[str, AttributeValue]:
    """Collect `attribute[code]=v` and flat multivalue lists `attribute[code][]=v1&...=v2`.

    A malformed parameter name is appended to `errors` and skipped. An attribute given twice
    without `[]` is appended to `errors` too, and its first value is kept.
    """
    result: dict[str, AttributeValue] = {}
    for key, value in items:
        if not key.startswith("attribute[") or "]" not in key:
            continue
        code, _, rest = key[len("attribute[") :].partition("]")
        if not code:
            errors.append(InvalidInput("attribute parameters need a code: attribute[CODE]"))
        elif rest == "[]":
            existing = result.get(code)
            values = existing if isinstance(existing, list) else []
            values.append(value)
            result[code] = values
        elif rest == "":
            if code in result:
                errors.append(_given_twice(code))
            else:
                result[code] = value
        else:
            errors.append(
                InvalidInput(
                    "attribute parameter names look like attribute[CODE] or attribute[CODE][]"
                )
            )
    return result


def _given_twice(code: str) -> InvalidInput:
    # A code that is not a plain code may be free text, so the message leaves it out.
    label = f"attribute[{code}]" if PLAIN_CODE.fullmatch(code) else "attribute[CODE]"
    return InvalidInput(f"{label} is given twice; use {label}[] for a list", field=label)


def comma_list(raw: str | None) -> list[str]:
    if not raw:
        return []
    return [part.strip() for part in raw.split(",") if part.strip()]


def statuses(raw: str | None) -> list[str]:
    values = comma_list(raw)
    for value in values:
        if value not in ("open", "closed"):
            raise InvalidInput("status must be open, closed or both (comma-separated)")
    return values


# The years a date parameter may name. Near years 1 and 9999, shifting a date by its UTC offset
# or by the 90-day query window overflows Python's datetime.
EARLIEST_YEAR = 1900
LATEST_YEAR = 2999


def date_param(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    parsed = parse_datetime(name, raw)
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        raise InvalidInput(
            f"{name} is out of range; use a year from {EARLIEST_YEAR} to {LATEST_YEAR}",
            field=name,
        )
    return parsed


def positive_int(raw: str | None, name: str, default: int, maximum: int) -> int:
    """Return the whole number in `raw` from 1 to `maximum`, or `default` when it is absent."""
    if raw is None or raw == "":
        return default
    # isascii() too, because isdigit() accepts digits such as `²` that int() rejects. The
    # length check keeps int() away from strings of thousands of digits, which it rejects too.
    valid = (
        raw.isascii()
        and raw.isdigit()
        and len(raw.lstrip("0")) <= len(str(maximum))
        and 1 <= int(raw) <= maximum
    )
    if not valid:
        raise InvalidInput(f"{name} must be a whole number from 1 to {maximum}", field=name)
    return int(raw)


@dataclass(frozen=True, slots=True)
class Language:
    """The tenant language chosen for a response, and how it was chosen."""

    tag: str
    # True when no `locale` was given. Then Accept-Language, present or not, chose the tag, so
    # a shared cache must key the response on that header.
    from_header: bool

    def headers(self) -> dict[str, str]:
        """Return the response headers that name the language and what it depends on."""
        if self.from_header:
            return {"Content-Language": self.tag, "Vary": "Accept-Language"}
        return {"Content-Language": self.tag}


def language(locale: str | None, accept_language: str | None, profile: TenantProfile) -> Language:
    """Choose the tenant language: `locale` when it is given, else by Accept-Language.

    `locale` accepts `_` for `-` (`es_MX`). A `locale` that names no tenant language gets the
    tenant default, and Accept-Language is not read.
    """
    tag = (locale or "").strip().replace("_", "-")
    if tag:
        return Language(profile.pick_language(tag), from_header=False)
    return Language(profile.negotiate_language(accept_language), from_header=True)


def idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
            code="invalid_idempotency_key",
        )
    return key
