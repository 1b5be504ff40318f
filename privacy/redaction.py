"""Best-effort redaction of personal data in free text, for `--free-text redacted` exports.

`redact_text` replaces what its patterns find in English and Spanish text with `[redacted]`.
The patterns cover e-mail addresses, phone numbers, street addresses, flat and unit numbers,
licence plates, and names after an introducing phrase, title or relation word. The record's
own personal values are replaced too. Patterns cannot find a name that nothing introduces
("Tom saw it"), a health detail ("she uses a wheelchair"), an address without a street word or
house number, an obfuscated e-mail ("ana at example dot org") or text in other languages. So a
redacted export can still contain personal data, and withholding free text is the safe choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTION = "[redacted]"

# Run first, so that no other replacement splits an address and leaves its domain behind.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Seven or more digits with optional separators, with or without a leading + or an area code
# in brackets. The brackets of "(617) 555-0142" go with the number, and those around
# "(617-555-0142)" stay balanced.
_PHONE = re.compile(r"\+?(?:\(\d{1,4}\)[\s.-]*)?\d(?:[\s().-]*\d){6,}")
_STREET_SUFFIX = (
    r"st|street|ave|avenue|rd|road|blvd|boulevard|dr|drive|ln|lane|way|ct|court|pl|place|"
    r"pkwy|parkway|hwy|highway|ter|terrace|sq|square"
)
# A house number followed by up to four words and a street suffix ("1234 North Main St").
_ADDRESS = re.compile(
    rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[\w'.-]+\s+){{0,4}}(?:{_STREET_SUFFIX})\b\.?", re.IGNORECASE
)
# A Spanish street word, then a name of up to four capitalized words or numbers, which may be
# joined by de, del, la, las, los, el or y, then an optional house number. Examples: "calle
# Tremont 45", "Av. Insurgentes Sur 1602", "45 calle de la Paz", "500 El Camino Real" and
# "Calle 5 de Mayo #12". The name must start with a capital or a digit, so "la calle está
# sucia" stays as it is.
_SPANISH_STREET_WORD = (
    r"calle|c/|avenida|avda\.|av\.|avd\.|paseo|camino|carrera|cra\.|calzada|bulevar|"
    r"plaza|pasaje|callej[oó]n|carretera|ronda|traves[ií]a"
)
_JOINED_WORD = r"(?:(?:de|del|la|las|los|el|y)\s+)*[A-ZÁÉÍÓÚÑÜ0-9][\w'.-]*"
_SPANISH_ADDRESS = re.compile(
    rf"(?:\b\d{{1,6}}[A-Za-z]?\s+(?:(?i:el|la|los|las)\s+)?)?\b(?i:{_SPANISH_STREET_WORD})(?:(?<=[./])\s*|\s+)"
    rf"{_JOINED_WORD}(?:\s+{_JOINED_WORD}){{0,3}}"
    r"(?:,?\s*(?:(?i:n[º°o]\.?|n[uú]m\.?|n[uú]mero)\s*|#\s*)?\d{1,6}[A-Za-z]?\b)?"
)
# A flat, unit or suite number after its word, or after "#": "Apt 5", "apto. 3B", "Unit C",
# "depto #12", "piso 4", "#7". The number must contain a digit or be a single capital letter,
# so "la puerta y la ventana" stays as it is.
_UNIT_WORD = (
    r"apt|apts|apartment|unit|suite|ste|apto|apartamento|depto|dpto|departamento|piso|puerta"
)
_UNIT = re.compile(
    rf"(?:\b(?i:{_UNIT_WORD})(?:\.?\s*(?:#|(?i:n[º°o])\.?)\s*|\.\s*|\s+)|(?<!\w)#\s*)"
    r"(?:\d{1,5}(?:-?[A-Za-z])?|[A-Z]\d{0,4})\b"
)
# A licence plate after a word that introduces one ("plate 7abc123", "placa ABC 1234"). The
# plate must contain a digit, so "the plate is missing" stays as it is.
_PLATE_WORD = r"plates?|licen[cs]e(?:\s+plates?)?|placas?|matr[ií]culas?|patentes?"
_INTRODUCED_PLATE = re.compile(
    rf"\b(?i:{_PLATE_WORD})\b(?:\s+(?i:no\.?|number|n[uú]mero))?\s*[:#]?\s*"
    r"([A-Za-z]{1,4}\s\d[A-Za-z0-9]{0,4}|(?=[A-Za-z-]*\d)[A-Za-z0-9]{1,8}(?:-[A-Za-z0-9]{1,5})?)\b"
)
# A plate-like token on its own: 5 to 9 upper-case letters and digits, with at least one of
# each and at most one hyphen ("7ABC123", "ABC-1234"). Road numbers such as "I-280" or
# "US-101" and lower-case words never match, but upper-case codes such as "COVID19" or "F-150"
# do.
_PLATE = re.compile(
    r"\b(?!(?:I|US|SR)-\d)(?=[A-Z0-9-]{5,9}\b)(?=[A-Z-]*\d)(?=[0-9-]*[A-Z])"
    r"[A-Z0-9]+(?:-[A-Z0-9]+)?\b"
)
# Plate shapes in any case: letters between digits in 6 to 8 characters ("6ktn173",
# "8k43845"), or three letters and four digits ("abc1234"). Times such as "10h30" are shorter,
# and "covid19" or "100lbs" have another shape.
_ANY_CASE_PLATE = re.compile(
    r"\b(?:(?=[A-Za-z0-9]{6,8}\b)\d{1,2}[A-Za-z]{1,4}\d{2,5}|[A-Za-z]{3}\d{4})\b"
)
# Names introduced by a phrase or title, in English and Spanish. The phrase and the name are
# matched in any case, so a lower-case word after "this is" is redacted too.
_NAME = re.compile(
    r"\b(?:my name is|this is|i am|i'm|me llamo|mi nombre es|soy|"
    r"mr|mrs|ms|miss|dr|sr|sra|srta)\.?\s+"
    r"([A-ZÁÉÍÓÚÑ][\w'-]+(?:\s+[A-ZÁÉÍÓÚÑ][\w'-]+)?)",
    re.IGNORECASE,
)
# Names after a relation word ("neighbor Tom Brady", "mi vecina Ana"). The name must be
# capitalized here, because "my neighbor has a dog" is common text.
_RELATION_WORD = (
    r"neighbou?rs?|landlord|landlady|tenant|roommate|named|called|"
    r"vecin[oa]s?|due[ñn][oa]|caser[oa]|inquilin[oa]|llamad[oa]|se[ñn]or|se[ñn]ora|doña"
)
_RELATED_NAME = re.compile(
    rf"\b(?i:{_RELATION_WORD})\s+([A-ZÁÉÍÓÚÑ][\w'-]+(?:\s+[A-ZÁÉÍÓÚÑ][\w'-]+)?)"
)
# Redactions next to each other, such as an address and its flat number, become one.
_ADJACENT_REDACTIONS = re.compile(rf"{re.escape(REDACTION)}(?:[\s,]*{re.escape(REDACTION)})+")

OWN_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "address_id",
    "account_id",
)
_MIN_OWN_TOKEN = 3
# Two-letter name words ("Li", "Wu", "Al") count too, but match only in the case written, so
# the Spanish word "al" and the like stay.
_MIN_OWN_NAME_WORD = 2


def own_values(record: dict[str, Any]) -> list[str]:
    """Return the record's own personal values, and name words, longest first."""
    values = set()
    for name in OWN_FIELDS:
        value = record.get(name)
        if not value:
            continue
        text = str(value).strip()
        if len(text) >= _MIN_OWN_TOKEN:
            values.add(text)
        if name in ("first_name", "last_name"):
            values.update(t for t in text.split() if len(t) >= _MIN_OWN_NAME_WORD)
    return sorted(values, key=len, reverse=True)


def _redact_group(match: re.Match[str]) -> str:
    """Return the match's text up to its first group, followed by `[redacted]`."""
    return match.group(0)[: match.start(1) - match.start(0)] + REDACTION


def redact_text(text: str | None, own: Iterable[str] = ()) -> str | None:
    """Replace the personal data that the module's patterns find, and the record's own values
    `own`, in `text` with `[redacted]`.

    This is best effort. The module docstring lists what it misses.
    """
    if text is None:
        return None
    text = _EMAIL.sub(REDACTION, text)
    text = _SPANISH_ADDRESS.sub(REDACTION, text)
    text = _ADDRESS.sub(REDACTION, text)
    text = _UNIT.sub(REDACTION, text)
    text = _PHONE.sub(REDACTION, text)
    text = _INTRODUCED_PLATE.sub(_redact_group, text)
    text = _PLATE.sub(REDACTION, text)
    text = _ANY_CASE_PLATE.sub(REDACTION, text)
    text = _NAME.sub(_redact_group, text)
    text = _RELATED_NAME.sub(_redact_group, text)
    # The record's own values go last, because a replaced first name would hide the rest of
    # the name from the name patterns. A value matches only as whole words, so "Ted" leaves
    # "[redacted]" and "tedious" alone. A value shorter than three characters matches only in
    # its own case.
    for value in own:
        case = re.IGNORECASE if len(value) >= _MIN_OWN_TOKEN else 0
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", REDACTION, text, flags=case)
    return _ADJACENT_REDACTIONS.sub(REDACTION, text)
