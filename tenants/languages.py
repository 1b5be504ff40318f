"""BCP 47 language tags: their validity, and text looked up by tag.

Tags are case-insensitive (RFC 5646, section 2.1.1), so `EN`, `en` and `En` name one language.
The hub keeps each tag as written, so every lookup and comparison of tags here ignores case.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TypeVar

import langcodes

# A tag with language, script, region and a variant, such as `sl-Latn-IT-rozaj`, has 16
# characters, so a tag longer than this is a mistake.
MAX_TAG_CHARS = 64
TAG_RULE = "a BCP 47 language tag such as en or es-US"
# Letters, digits and hyphens only: the registry check alone would also take `en_US`.
_TAG_CHARACTERS = re.compile(r"^[A-Za-z0-9-]+$")

Value = TypeVar("Value")


def language_key(tag: str) -> str:
    """Return the form of `tag` in which two tags for the same language are equal strings."""
    return tag.lower()


@lru_cache(maxsize=1024)
def is_language_tag(tag: str) -> bool:
    """Return whether `tag` is a well-formed BCP 47 tag whose subtags are in the IANA
    language subtag registry, in any case. `sp` (a slip for `es`) and `zz-ZZ` are not, and
    the private-use `x-klingon` is."""
    if len(tag) > MAX_TAG_CHARS or not _TAG_CHARACTERS.match(tag):
        return False
    return bool(langcodes.tag_is_valid(tag))


def check_language_tags(tags: list[str]) -> list[str]:
    """Return `tags` unchanged, or raise ValueError naming the first invalid tag. Meant for
    pydantic field validators, which put the field's path before the message."""
    for tag in tags:
        if not is_language_tag(tag):
            raise ValueError(f"{tag!r} is not {TAG_RULE}")
        primary = tag.split("-", 1)[0]
        shorter = _two_letter_form(primary)
        if shorter is not None:
            # RFC 5646 registers the two-letter code where ISO 639-1 has one, so `spa` beside
            # `es` would be the same language under two tags that never match.
            raise ValueError(
                f"{tag!r} uses the three-letter code of a language whose tag is {shorter!r}; "
                f"write {shorter + tag[len(primary) :]!r}"
            )
    return tags


@lru_cache(maxsize=256)
def _two_letter_form(primary: str) -> str | None:
    """Return the two-letter code of a three-letter primary language subtag, or None."""
    if len(primary) != 3 or not primary.isalpha():
        return None
    standard = str(langcodes.standardize_tag(primary))
    return standard if len(standard) == 2 else None


def repeated_tags(tags: Iterable[str]) -> list[str]:
    """Return, sorted, the tags that name a language another of `tags` names too."""
    tags = list(tags)
    counts = Counter(language_key(tag) for tag in tags)
    return sorted({tag for tag in tags if counts[language_key(tag)] > 1})


def text_for(texts: Mapping[str, Value], tag: str) -> Value | None:
    """Return the value of `texts` under the language tag `tag` written in any case, or None."""
    value = texts.get(tag)
    if value is not None:
        return value
    lookup_key = language_key(tag)
    return next((v for key, v in texts.items() if language_key(key) == lookup_key), None)


def localized(text: Mapping[str, str] | str | None, language: str, fallback: str) -> str | None:
    """Pick the text for `language`, then its primary subtag, then `fallback`, then any."""
    if text is None or isinstance(text, str):
        return text
    primary = language.split("-", 1)[0]
    for tag in (language, primary, fallback):
        found = text_for(text, tag)
        if found is not None:
            return found
    return next(iter(text.values()), None)
