"""Pick the `info` block a subscriber reads, by their language preferences."""

from __future__ import annotations

from collections.abc import Sequence

from hub.alerts.cap.model import Info


def _primary(code: str) -> str:
    return code.split("-", 1)[0].lower()


def choose_info(infos: Sequence[Info], preferences: Sequence[str], tenant_default: str) -> int:
    """Return the index of the best `info` for a subscriber.

    Order: an exact language match for each preference in turn, then a match on the primary
    subtag (`es` for `es-MX`), then the tenant's default language the same two ways, then the
    first block. Comparison ignores case, as language tags do.
    """
    if not infos:
        raise ValueError("an alert without info blocks has nothing to deliver")
    codes = [info.effective_language.lower() for info in infos]
    for wanted in [*preferences, tenant_default]:
        wanted = wanted.lower()
        if wanted in codes:
            return codes.index(wanted)
        for index, code in enumerate(codes):
            if _primary(code) == _primary(wanted):
                return index
    return 0


def has_language(infos: Sequence[Info], tag: str) -> bool:
    """Return whether an `info` block is in language `tag`, exactly or by primary subtag."""
    return any(
        info.effective_language.lower() == tag.lower()
        or _primary(info.effective_language) == _primary(tag)
        for info in infos
    )
