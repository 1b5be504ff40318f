"""Resident-facing phrases the hub adds to alerts, per language (primary subtag)."""

from __future__ import annotations

# The phrase names the alert ("Alerta cancelada"), so it agrees in gender with the noun
# "alert" and not with the event of the headline that follows it.
_CANCELLED = {
    "en": "Cancelled",
    "es": "Alerta cancelada",
    "fr": "Alerte annulée",
    "zh": "已取消",
    "ht": "Anile",
}


def cancel_text(language: str) -> str:
    """Return the word that marks a cancelled alert in `language`, English when unknown."""
    return _CANCELLED.get(language.split("-", 1)[0].lower(), _CANCELLED["en"])


# The confirmation page behind the unsubscribe link: (title, question, button) per language.
_UNSUBSCRIBE_PAGE = {
    "en": ("Emergency alerts", "Stop receiving emergency alerts from this city?", "Unsubscribe"),
    "es": (
        "Alertas de emergencia",
        "¿Dejar de recibir alertas de emergencia de esta ciudad?",
        "Cancelar la suscripción",
    ),
    "zh": ("緊急警報", "停止接收本市的緊急警報？", "取消訂閱"),
    "fr": (
        "Alertes d'urgence",
        "Ne plus recevoir les alertes d'urgence de cette ville ?",
        "Se désabonner",
    ),
    "ht": ("Alèt ijans", "Sispann resevwa alèt ijans vil sa a?", "Dezabòne"),
}


def unsubscribe_page(languages: list[str]) -> str:
    """Return a small HTML page whose form confirms the unsubscribe with a POST.

    A GET never unsubscribes, because mail scanners and link previews fetch links on their
    own. The page shows the tenant's languages that have a translation, by primary subtag
    (`zh-Hant` shows Chinese), in the tenant's order, and English when none has one.
    """
    import html

    codes: list[str] = []
    for tag in languages:
        code = tag.split("-", 1)[0].lower()
        if code in _UNSUBSCRIBE_PAGE and code not in codes:
            codes.append(code)
    codes = codes or ["en"]
    sections = []
    for code in codes:
        _, question, button = _UNSUBSCRIBE_PAGE[code]
        sections.append(
            f'<p lang="{code}">{html.escape(question)}</p>'
            f'<form method="post"><button lang="{code}">{html.escape(button)}</button></form>'
        )
    title = " / ".join(html.escape(_UNSUBSCRIBE_PAGE[code][0]) for code in codes)
    return (
        f'<!doctype html><html lang="{codes[0]}"><meta charset="utf-8"><title>{title}</title>'
        + "".join(sections)
    )
