"""Resident-facing phrases the hub adds to alerts, per language (primary subtag)."""

from __future__ import annotations

_CANCELLED = {
    "en": "Cancelled",
    "es": "Cancelada",
    "fr": "Annulée",
    "zh": "已取消",
    "ht": "Anile",
}


def cancel_text(language: str) -> str:
    """Return the word that marks a cancelled alert in `language`, English when unknown."""
    return _CANCELLED.get(language.split("-", 1)[0].lower(), _CANCELLED["en"])
