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


# The confirmation page behind the unsubscribe link: (question, button) per language.
_UNSUBSCRIBE_PAGE = {
    "en": ("Stop receiving emergency alerts from this city?", "Unsubscribe"),
    "es": ("¿Dejar de recibir alertas de emergencia de esta ciudad?", "Cancelar la suscripción"),
}


def unsubscribe_page(languages: list[str]) -> str:
    """Return a small HTML page whose form confirms the unsubscribe with a POST.

    A GET never unsubscribes, because mail scanners and link previews fetch links on their
    own. The page shows the tenant's languages that have a translation, English otherwise.
    """
    import html

    # Tags ignore case, and the keys of _UNSUBSCRIBE_PAGE are lower case.
    codes = [code.lower() for code in languages if code.lower() in _UNSUBSCRIBE_PAGE] or ["en"]
    sections = []
    for code in codes:
        question, button = _UNSUBSCRIBE_PAGE[code]
        sections.append(
            f'<p lang="{code}">{html.escape(question)}</p>'
            f'<form method="post"><button lang="{code}">{html.escape(button)}</button></form>'
        )
    return '<!doctype html><meta charset="utf-8"><title>Alerts</title>' + "".join(sections)
