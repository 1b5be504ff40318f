"""Resident-facing text of the request lifecycle, per language (English and Spanish built in).

A tenant overrides texts or adds languages in its manifest under `profile.status_texts`, keyed
by language and then by a status, `closed:<resolution>` or a notice key, for example
`{es: {closed: "Cerrada"}}`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tenants.manifest import Manifest

BUILT_IN: dict[str, dict[str, str]] = {
    "en": {
        "notice.received": "Thank you. Your request has been received.",
        "notice.expected": "Thank you. Your request has been received and is expected to be "
        "addressed by {expected}.",
        "notice.token": "Thank you. Your request has been queued; use the token to look up its "
        "id shortly.",
        "submitted": "Received",
        "acknowledged": "Acknowledged by the responsible agency",
        "in_progress": "Work in progress",
        "on_hold": "On hold",
        "closed": "Closed",
        "transferred": "Transferred to the responsible jurisdiction",
        "closed:fixed": "Closed: fixed",
        "closed:duplicate": "Closed: duplicate of an existing request",
        "closed:not_ours": "Closed: not handled by this jurisdiction",
        "closed:no_action": "Closed: no action needed",
        "closed:cancelled": "Closed: cancelled",
    },
    "es": {
        "notice.received": "Gracias. Hemos recibido su solicitud.",
        "notice.expected": "Gracias. Hemos recibido su solicitud y esperamos atenderla antes "
        "del {expected}.",
        "notice.token": "Gracias. Su solicitud está en cola; use el token para consultar su "
        "número en breve.",
        "submitted": "Recibida",
        "acknowledged": "Confirmada por la agencia responsable",
        "in_progress": "En curso",
        "on_hold": "En espera",
        "closed": "Cerrada",
        "transferred": "Transferida a la jurisdicción responsable",
        "closed:fixed": "Cerrada: resuelta",
        "closed:duplicate": "Cerrada: duplicada de una solicitud existente",
        "closed:not_ours": "Cerrada: no corresponde a esta jurisdicción",
        "closed:no_action": "Cerrada: no requiere acción",
        "closed:cancelled": "Cerrada: cancelada",
    },
}


def text_for(manifest: Manifest, languages: Sequence[str], language: str | None, key: str) -> str:
    """Return the text for `key` in the best language the tenant offers.

    The order is the requested language, its primary subtag, then the tenant's languages in
    their manifest order (the first is the default), then English.
    """
    overrides = manifest.profile.status_texts
    candidates: list[str] = []
    if language:
        candidates += [language, language.split("-", 1)[0]]
    candidates += list(languages) + ["en"]
    for candidate in candidates:
        text = (overrides.get(candidate) or {}).get(key) or BUILT_IN.get(candidate, {}).get(key)
        if text:
            return text
    return key


def status_text_key(status: str, resolution: str | None) -> str:
    if status == "closed" and resolution:
        return f"closed:{resolution}"
    return status
