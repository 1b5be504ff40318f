"""Language tags: any case passes, lookups by tag ignore case, and Accept-Language negotiation."""

from __future__ import annotations

import pytest

from tenants.languages import (
    MAX_ACCEPT_LANGUAGE_RANGES,
    canonical_tag,
    canonical_tags,
    check_language_tags,
    is_language_tag,
    localized,
    match_language,
    negotiate_language,
    parse_accept_language,
    repeated_tags,
    text_for,
)


@pytest.mark.parametrize(
    "tag", ["en", "EN", "En-US", "es-us", "es-US", "zh-Hant-TW", "FIL", "yua", "x-klingon"]
)
def test_tag_accepted_in_any_case(tag):
    assert is_language_tag(tag)


@pytest.mark.parametrize("tag", ["", "e", "english", "en_US", "1en", "en-", "en-x", "a" * 65])
def test_malformed_tag_rejected(tag):
    assert not is_language_tag(tag)


@pytest.mark.parametrize("tag", ["sp", "xq", "zz-ZZ", "en-JJ", "es-Zyxw-US", "sp-US"])
def test_unregistered_tag_rejected(tag):
    """Well formed, but a subtag is not in the IANA registry, such as `sp` for `es`."""
    assert not is_language_tag(tag)


def test_text_for_ignores_case():
    texts = {"en": "Pothole", "es-US": "Bache"}
    assert text_for(texts, "en") == "Pothole"
    assert text_for(texts, "EN") == "Pothole"
    assert text_for(texts, "ES-us") == "Bache"
    assert text_for(texts, "fr") is None


def test_localized_falls_back_in_any_case():
    texts = {"EN": "Pothole", "es": "Bache"}
    assert localized(texts, "ES-MX", "en") == "Bache"
    assert localized(texts, "fr", "en") == "Pothole"
    assert localized(texts, "en-GB", "es") == "Pothole"
    assert localized({"zh": "坑洞"}, "fr", "en") == "坑洞"
    assert localized("Pothole", "es", "en") == "Pothole"
    assert localized(None, "es", "en") is None


def test_repeated_tags_ignore_case():
    assert repeated_tags(["en", "es", "EN"]) == ["EN", "en"]
    assert repeated_tags(["en", "en"]) == ["en"]
    assert repeated_tags(["en", "es-US", "es"]) == []


@pytest.mark.parametrize(("tag", "short"), [("spa", "es"), ("eng-US", "en-US"), ("SPA", "es")])
def test_three_letter_code_of_two_letter_language(tag, short):
    with pytest.raises(ValueError, match=f"write {short!r}"):
        check_language_tags(["en", tag])


def test_three_letter_languages_without_short_code_kept():
    assert check_language_tags(["yua", "fil", "cmn"]) == ["yua", "fil", "cmn"]


def test_accept_language_order_by_q():
    ranges = parse_accept_language("fr-FR, fr;q=0.9, es;q=0.8, *;q=0.1, de;q=0")
    assert ranges.preferred == ("fr-fr", "fr", "es", "*")
    assert ranges.rejected == ("de",)


def test_accept_language_equal_q_order():
    assert parse_accept_language("en;q=0.5, es, de;q=0.5").preferred == ("es", "en", "de")


@pytest.mark.parametrize(
    "header",
    ["es;q=2", "es;q=0.1234", "es;q=abc", "es;q=", "e_s", "123", "es-toolongsubtag", ";q=1", ""],
)
def test_accept_language_skips_malformed(header):
    ranges = parse_accept_language(f"{header}, en;q=0.5")
    assert ranges.preferred == ("en",)
    assert ranges.rejected == ()


def test_accept_language_loose_parameters():
    assert parse_accept_language("ES ; Q = 0.7 , en;q=0.6").preferred == ("es", "en")
    assert parse_accept_language("es;level=1;q=1.000").preferred == ("es",)


@pytest.mark.parametrize("filler", ["x-a", "x-" + "a" * 8])
def test_accept_language_range_limit(filler):
    """Both a short header, which is cached, and a long one, which is not."""
    header = ", ".join([filler] * MAX_ACCEPT_LANGUAGE_RANGES + ["es"])
    ranges = parse_accept_language(header)
    assert ranges.preferred == (filler,) * MAX_ACCEPT_LANGUAGE_RANGES


def test_match_language_order():
    assert match_language("ES", ["en", "es"]) == "es"
    assert match_language("zh-Hant-TW", ["en", "zh-Hans", "zh-Hant"]) == "zh-Hant"
    assert match_language("es-MX", ["en", "es-US", "es"]) == "es"
    assert match_language("es-MX", ["en", "es-US"]) == "es-US"
    assert match_language("zh", ["en", "zh-Hant"]) == "zh-Hant"
    assert match_language("en-a-bbb", ["es", "en"]) == "en"
    assert match_language("fr", ["en", "es"]) is None


NEGOTIATED = [
    ("fr-FR,fr;q=0.9,es;q=0.8", "es"),
    ("en;q=0.1, es;q=0.9", "es"),
    ("es-MX", "es"),
    ("ES", "es"),
    ("en-GB,es;q=0.5", "en"),
    ("*", "en"),
    ("fr, *;q=0.5, es;q=0.4", "en"),
    ("en;q=0, *", "es"),
    ("en-GB, en;q=0, es;q=0.2", "es"),
    ("es-MX;q=0.9, es;q=0", None),
    ("fr, de", None),
    ("en;q=0, es;q=0", None),
    ("", None),
]


@pytest.mark.parametrize(("header", "expected"), NEGOTIATED)
def test_negotiate_language(header, expected):
    assert negotiate_language(header, ("en", "es")) == expected


@pytest.mark.parametrize(
    ("tag", "canonical"),
    [
        ("EN", "en"),
        ("es-us", "es-US"),
        ("ES-us", "es-US"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("ZH-HANT", "zh-Hant"),
        ("es-419", "es-419"),
        ("sl-LATN-it-ROZAJ", "sl-Latn-IT-rozaj"),
        ("de-ch-1996", "de-CH-1996"),
        ("X-Klingon", "x-klingon"),
        ("en-X-AB-Abcd", "en-x-ab-abcd"),
        ("en-US-u-CA-Buddhist", "en-US-u-ca-buddhist"),
    ],
)
def test_canonical_tag_case(tag, canonical):
    assert canonical_tag(tag) == canonical


def test_canonical_tags_drop_case_repeats():
    assert canonical_tags(["es-us", "en", "ES-US", "es"]) == ["es-US", "en", "es"]
    assert canonical_tags([]) == []
