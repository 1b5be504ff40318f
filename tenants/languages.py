"""BCP 47 language tags: their validity, text looked up by tag, and Accept-Language.

Tags are case-insensitive (RFC 5646, section 2.1.1), so `EN`, `en` and `En` name one language.
The hub keeps each tag as written, so every lookup and comparison of tags here ignores case.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


def canonical_tag(tag: str) -> str:
    """Return `tag` in the case convention of RFC 5646, section 2.1.1: `es-US`, `zh-Hant-TW`.

    Subtags are lower case, except that a two-letter subtag (a region) is upper case and a
    four-letter one (a script) is title case when neither starts the tag nor follows a
    singleton such as `x` or `u`. Only the case changes, so `language_key` of the result
    equals that of `tag`.
    """
    first, *rest = tag.split("-")
    subtags = [first.lower()]
    after_singleton = len(first) == 1
    for subtag in rest:
        if len(subtag) == 1:
            after_singleton = True
        if after_singleton:
            subtags.append(subtag.lower())
        elif len(subtag) == 2:
            subtags.append(subtag.upper())
        elif len(subtag) == 4 and subtag.isalpha():
            subtags.append(subtag.title())
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


def canonical_tags(tags: Iterable[str]) -> list[str]:
    """Return `tags` in canonical case, in their order, without the repeats that differed only
    in case."""
    return list(dict.fromkeys(canonical_tag(tag) for tag in tags))


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


def primary_subtag(tag: str) -> str:
    """Return the primary language subtag of `tag` in lower case: `es` for `es-MX`."""
    return tag.split("-", 1)[0].lower()


def match_language(tag: str, languages: Sequence[str]) -> str | None:
    """Return the language of `languages` that `tag` names, or None. Case is ignored.

    As in the lookup scheme of RFC 4647, the tag itself is tried first and then shorter
    forms of it, so `zh-Hant-TW` matches `zh-Hant` before `zh`. Then the first language with
    the same primary subtag matches, so `zh` also matches `zh-Hant` and `es-MX` matches `es-US`.
    """
    lookup_key = language_key(tag)
    while lookup_key:
        for language in languages:
            if language_key(language) == lookup_key:
                return language
        lookup_key = _shorter_range(lookup_key)
    primary = primary_subtag(tag)
    for language in languages:
        if primary_subtag(language) == primary:
            return language
    return None


def _shorter_range(key: str) -> str:
    """Return `key` without its last subtag, and without a single-character subtag (such as
    the `x` of a private-use part) that would then end it, or "" when nothing is left."""
    key = key.rpartition("-")[0]
    prefix, _, last = key.rpartition("-")
    return prefix if len(last) == 1 else key


def localized(text: Mapping[str, str] | str | None, language: str, fallback: str) -> str | None:
    """Pick the text for `language`, then its primary subtag, then `fallback`, then any."""
    if text is None or isinstance(text, str):
        return text
    for tag in (language, primary_subtag(language), fallback):
        found = text_for(text, tag)
        if found is not None:
            return found
    return next(iter(text.values()), None)


# --- Accept-Language (RFC 9110) ---------------------------------------------------------------

# Ranges read from one header. A browser sends a handful, so the rest of a longer header is
# ignored, which bounds the work a request can cause.
MAX_ACCEPT_LANGUAGE_RANGES = 32
# Headers up to this length are parsed once and cached. Longer ones are parsed on each call,
# so the cache contains at most 512 short strings.
MAX_CACHED_HEADER_CHARS = 256
# `language-range` of RFC 4647, section 2.1: `*`, or up to 8 letters and then subtags of up to
# 8 letters or digits.
_LANGUAGE_RANGE = re.compile(r"^(?:\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*)$")
# `qvalue` of RFC 9110: 0 to 1 with at most three decimals.
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


@dataclass(frozen=True, slots=True)
class LanguageRanges:
    """The language ranges of an Accept-Language header, in lower case."""

    # Acceptable ranges (q above 0), highest q first and in header order among equal q.
    preferred: tuple[str, ...]
    # Ranges with q=0, which the client does not accept.
    rejected: tuple[str, ...]

    def rejects(self, language: str) -> bool:
        """Return whether a q=0 range covers `language`: the same tag or a prefix of it
        (RFC 4647 basic filtering, so `es;q=0` covers `es-MX`)."""
        key = language_key(language)
        return any(key == rejected or key.startswith(rejected + "-") for rejected in self.rejected)


def parse_accept_language(header: str) -> LanguageRanges:
    """Parse an Accept-Language header, skipping malformed elements instead of failing."""
    if len(header) > MAX_CACHED_HEADER_CHARS:
        return _parse_accept_language(header)
    return _parse_cached(header)


@lru_cache(maxsize=512)
def _parse_cached(header: str) -> LanguageRanges:
    return _parse_accept_language(header)


def _parse_accept_language(header: str) -> LanguageRanges:
    weighted: list[tuple[float, str]] = []
    rejected: list[str] = []
    for element in header.split(",", MAX_ACCEPT_LANGUAGE_RANGES)[:MAX_ACCEPT_LANGUAGE_RANGES]:
        language_range, *parameters = element.split(";")
        language_range = language_range.strip().lower()
        if not _LANGUAGE_RANGE.match(language_range):
            continue
        weight = _weight(parameters)
        if weight is None:
            continue
        if weight == 0:
            rejected.append(language_range)
        else:
            weighted.append((weight, language_range))
    # sorted() is stable, so ranges of equal weight keep their order in the header.
    ordered = sorted(weighted, key=lambda pair: -pair[0])
    return LanguageRanges(tuple(name for _, name in ordered), tuple(rejected))


def _weight(parameters: list[str]) -> float | None:
    """Return the q value of a range's parameters, 1 without one, or None when it is invalid."""
    for parameter in parameters:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if _QVALUE.match(value) else None
    return 1.0


def negotiate_language(header: str, languages: Sequence[str]) -> str | None:
    """Return the language of `languages` that an Accept-Language header prefers, or None.

    This is the lookup scheme of RFC 4647 over the header's ranges in order of q and
    then position. Each range matches a language as `match_language` does, `*` matches the
    first of `languages` (a tenant's default), and a language that a q=0 range covers is
    skipped. None means that no range matched, and the caller uses its default.
    """
    ranges = parse_accept_language(header)
    for language_range in ranges.preferred:
        if language_range == "*":
            candidates: Sequence[str] = languages
        else:
            found = match_language(language_range, languages)
            candidates = () if found is None else (found,)
        for candidate in candidates:
            if not ranges.rejects(candidate):
                return candidate
    return None
