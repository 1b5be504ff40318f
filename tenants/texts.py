"""Built-in resident-facing texts, which a manifest overrides under `profile.status_texts`."""

from __future__ import annotations

import difflib
import string

# Resident-facing status texts per language. Keys are request states, or `closed:<resolution>`
# for a closed request with that resolution.
DEFAULT_STATUS_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "submitted": "Received",
        "acknowledged": "Received and assigned",
        "in_progress": "In progress",
        "on_hold": "On hold",
        "closed": "Closed",
        "closed:fixed": "Closed: fixed",
        "closed:duplicate": "Closed: already reported",
        "closed:not_ours": "Closed: referred to another agency",
        "closed:no_action": "Closed: no action needed",
        "closed:cancelled": "Closed: cancelled",
    },
    "es": {
        "submitted": "Recibida",
        "acknowledged": "Recibida y asignada",
        "in_progress": "En curso",
        "on_hold": "En espera",
        "closed": "Cerrada",
        "closed:fixed": "Cerrada: resuelta",
        "closed:duplicate": "Cerrada: ya reportada",
        "closed:not_ours": "Cerrada: remitida a otra agencia",
        "closed:no_action": "Cerrada: no requiere acción",
        "closed:cancelled": "Cerrada: cancelada",
    },
    "zh": {
        "submitted": "已收到",
        "acknowledged": "已收到並已指派",
        "in_progress": "處理中",
        "on_hold": "暫停處理",
        "closed": "已結案",
        "closed:fixed": "已結案：已修復",
        "closed:duplicate": "已結案：已有人報告",
        "closed:not_ours": "已結案：已轉交其他機構",
        "closed:no_action": "已結案：無需處理",
        "closed:cancelled": "已結案：已取消",
    },
}


# Resident-facing notices of intake (`service_notice`) per language.
BUILT_IN_NOTICES: dict[str, dict[str, str]] = {
    "en": {
        "notice.received": "Thank you. Your request has been received.",
        "notice.expected": "Thank you. Your request has been received and is expected to be "
        "addressed by {expected}.",
        "notice.token": "Thank you. Your request has been queued; use the token to look up its "
        "id shortly.",
    },
    "es": {
        "notice.received": "Gracias. Hemos recibido su solicitud.",
        "notice.expected": "Gracias. Hemos recibido su solicitud y esperamos atenderla antes "
        "del {expected}.",
        "notice.token": "Gracias. Su solicitud está en cola; use el token para consultar su "
        "número en breve.",
    },
}

# The placeholders that the hub fills in each text, by key. Other texts are shown as written,
# so they take none: intake fills `{expected}` with the local date and time by which the
# service should be addressed, such as `2026-07-06 17:00 EDT`.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {"notice.expected": ("expected",)}

# Every key that the hub reads from `profile.status_texts`.
TEXT_KEYS: tuple[str, ...] = (*DEFAULT_STATUS_TEXTS["en"], *BUILT_IN_NOTICES["en"])


def unknown_key_problem(key: str) -> str | None:
    """Return why `key` is not a text key that the hub reads, with the closest keys, or None
    when it is one."""
    if key in TEXT_KEYS:
        return None
    message = f"unknown text key {key!r}; known keys are {', '.join(TEXT_KEYS)}"
    close = difflib.get_close_matches(key, TEXT_KEYS, n=2, cutoff=0.6)
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    return message


def template_problem(key: str, text: str) -> str | None:
    """Return why `text` cannot be the template of `key`, or None when the hub can show it.

    A text with placeholders in `PLACEHOLDERS` is a `str.format` template: it may use only
    those placeholders, written `{name}`, and writes a literal brace as `{{` or `}}`. Other
    texts are shown as written, so a brace in them is most likely a placeholder by mistake.
    """
    allowed = PLACEHOLDERS.get(key, ())
    if not allowed:
        if "{" in text or "}" in text:
            return (
                f"{text!r} has a brace, but {key} takes no placeholders and is shown as "
                "written; remove the braces"
            )
        return None
    fix = f"use only {', '.join('{' + name + '}' for name in allowed)}, and write a literal "
    fix += "brace as {{ or }}"
    try:
        fields = [
            (name, conversion, spec)
            for _, name, spec, conversion in string.Formatter().parse(text)
            if name is not None
        ]
    except ValueError as exc:
        return f"{text!r} has malformed braces ({exc}); {fix}"
    for name, conversion, spec in fields:
        if name not in allowed:
            return f"{text!r} uses the placeholder {{{name}}}, which the hub does not fill; {fix}"
        if conversion or spec:
            return f"{text!r} formats the placeholder {{{name}}}; write it as {{{name}}} only"
    return None
