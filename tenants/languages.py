"""BCP 47 language tags: their syntax, and text looked up by tag.

Tags are case-insensitive (RFC 5646, section 2.1.1), so `EN`, `en` and `En` name one language.
The hub keeps each tag as written, so every lookup and comparison of tags here ignores case.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TypeVar

# BCP 47 language tag in its common form: language, then optional script, region or variant.
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")

Value = TypeVar("Value")


def language_key(tag: str) -> str:
    """Return the form of `tag` in which two tags for the same language are equal strings."""
    return tag.lower()


def check_language_tags(tags: list[str]) -> list[str]:
    """Return `tags` unchanged, or raise ValueError naming the first malformed tag. Meant for
    pydantic field validators, which put the field's path before the message."""
    for tag in tags:
        if not LANGUAGE_TAG.match(tag):
            raise ValueError(f"{tag!r} is not a BCP 47 language tag such as en or es-US")
    return tags


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
