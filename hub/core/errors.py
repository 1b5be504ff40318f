"""Domain errors. Each carries its HTTP status so the API maps all of them in one place."""

from __future__ import annotations

import re

# A value that error messages, logs and headers may repeat as it is: up to 64 ASCII letters,
# digits, `_`, `-`, `.` and `:`, as service codes, jurisdiction ids and request ids are. Other
# values may be free text or personal data, so messages leave them out.
PLAIN_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def shown(value: str) -> str:
    """Return ` 'value'` for an error message when `value` is a `PLAIN_CODE`, else an empty
    string."""
    return f" {value!r}" if PLAIN_CODE.fullmatch(value) else ""


class HubError(Exception):
    """Base for errors that reach a client: a status, a stable code and a safe message.

    The message must never contain personal data or echo the request body.
    """

    status: int = 400
    code: str = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(HubError):
    status = 400
    code = "invalid"


class PayloadTooLarge(HubError):
    """A request body over the configured size limit."""

    status = 413
    code = "too_large"


class Unauthorized(HubError):
    status = 403
    code = "forbidden"


class Forbidden(HubError):
    status = 403
    code = "forbidden"


class NotFound(HubError):
    """Also used for another tenant's object: it answers 404, never 403."""

    status = 404
    code = "not_found"


class Conflict(HubError):
    status = 409
    code = "conflict"


class Unavailable(HubError):
    """A dependency (database, broker) is down; the client may retry."""

    status = 503
    code = "unavailable"


class ConfigurationError(Exception):
    """Settings or files that stop the hub from starting; the message names the value and fix."""
