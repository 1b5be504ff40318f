"""Language tags: any case passes, and lookups by tag ignore case."""

from __future__ import annotations

import pytest

from tenants.languages import (
    check_language_tags,
    is_language_tag,
    localized,
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
