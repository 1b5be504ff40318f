"""Best-effort redaction of free text in English and Spanish."""

from __future__ import annotations

import pytest

from privacy.redaction import REDACTION, own_values, redact_text


def test_email_redacted_whole_before_own_names():
    out = redact_text("Write to lucia.serrano@example.net today", ["Lucia", "Serrano"])
    assert out == f"Write to {REDACTION} today"


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        ("vivo en 27 calle Olmo, apto 4, sin agua", ["27", "Olmo", "apto", "4"]),
        ("vivo en calle Olmo 27, apto 4B", ["27", "Olmo", "4B"]),
        ("oficina en Av. Reforma 222 piso 3", ["Reforma", "222", "piso 3"]),
        ("basura en avenida de la Paz 15", ["Paz", "15"]),
        ("frente a Calle 5 de Mayo #12", ["Mayo", "#12"]),
        ("19 Cedar Ave Apt 6 has no heat", ["19", "Cedar", "Apt", "6"]),
        ("leak above Unit C on the left", ["Unit C"]),
        ("the door of #14 is open", ["#14"]),
    ],
)
def test_addresses_and_units_redacted(text, secrets):
    out = redact_text(text)
    assert REDACTION in out
    for secret in secrets:
        assert secret not in out


def test_address_and_unit_become_one_redaction():
    assert redact_text("55 Birch Rd Apt 7") == REDACTION
    assert redact_text("calle Olmo 27, apto 4") == REDACTION


@pytest.mark.parametrize(
    ("text", "plate"),
    [
        ("a truck with plate 5TRW881 blocks the lane", "5TRW881"),
        ("licence plate: ab 4711 since Monday", "ab 4711"),
        ("coche con placa xyz-987 en la acera", "xyz-987"),
        ("8ZXC410 parked on the hydrant", "8ZXC410"),
        ("the van KLM-4410 was abandoned", "KLM-4410"),
        ("grey sedan 7kqd410 on the sidewalk", "7kqd410"),
        ("old truck zmf3597 left for weeks", "zmf3597"),
    ],
)
def test_licence_plates_redacted(text, plate):
    out = redact_text(text)
    assert plate not in out
    assert REDACTION in out


def test_phone_in_brackets_leaves_no_bracket():
    out = redact_text("(he is on oxygen). (617) 555-0123")
    assert "555" not in out
    assert f"({REDACTION}" not in out
    assert out.endswith(REDACTION)


def test_phone_inside_brackets_keeps_both():
    assert redact_text("call us (617-555-0123).") == f"call us ({REDACTION})."


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Neighbor Joe Pesci at 4 Ash St left debris", "Pesci"),
        ("my landlord Victor Hale never fixes it", "Hale"),
        ("mi vecina Ana Robles tiene la llave", "Robles"),
    ],
)
def test_name_after_relation_word_redacted(text, name):
    out = redact_text(text)
    assert name not in out
    assert REDACTION in out


def test_own_first_name_does_not_hide_last_name():
    out = redact_text("Neighbor Joe Pesci left debris", ["Joe"])
    assert "Pesci" not in out
    assert "Joe" not in out


def test_own_short_name_matches_in_its_case():
    record = {"first_name": "Al", "last_name": "Wu"}
    out = redact_text("Al Wu says the light al lado del parque is out", own_values(record))
    assert out == f"{REDACTION} says the light al lado del parque is out"


def test_own_account_id_redacted():
    out = redact_text("account acct7731q was billed twice", own_values({"account_id": "acct7731q"}))
    assert "acct7731q" not in out


def test_own_value_matches_whole_words():
    out = redact_text("Ted here, tedious wait at the corner", ["Ted"])
    assert out == f"{REDACTION} here, tedious wait at the corner"


@pytest.mark.parametrize(
    "text",
    [
        "the plate is missing from the sign",
        "la calle está sucia y la puerta y la ventana rotas",
        "my neighbor has a dog and the landlord never answers",
        "pisos mojados en el apartamento",
        "the AC unit is broken on the second floor",
        "Pothole near the bus stop, 3 feet wide, open since 10am",
        "#potholes everywhere on Plaza street",
        "debris on the I-280 ramp and on US-101",
        "la cuadrilla llega a las 10h30",
        "covid19 testing site, a 100lbs bag left at the curb",
    ],
)
def test_ordinary_text_unchanged(text):
    assert redact_text(text) == text
