"""Domain errors. Each carries its HTTP status so the API maps all of them in one place."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

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

    @property
    def messages(self) -> tuple[str, ...]:
        """The messages that a client gets, one error entry each."""
        return (self.message,)

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that the error response carries, such as `Retry-After`."""
        return {}


class InvalidInput(HubError):
    status = 400
    code = "invalid"


class InvalidInputGroup(InvalidInput):
    """Several independent problems of one input, raised together like an `ExceptionGroup`.

    It is a 400 error whose `errors` are the problems in the order they were found, and an
    Open311 response lists each one as its own error entry. The errors of a nested group take
    its place in the order, and identical messages are listed once. `message` joins the
    messages for callers that show a single line.
    """

    def __init__(self, errors: Sequence[InvalidInput]):
        unique: dict[str, InvalidInput] = {}
        for error in errors:
            for item in each_error(error):
                unique.setdefault(item.message, item)
        if not unique:
            raise ValueError("an InvalidInputGroup needs at least one error")
        self.errors = tuple(unique.values())
        super().__init__("; ".join(unique), field=self.errors[0].field)

    @property
    def messages(self) -> tuple[str, ...]:
        return tuple(error.message for error in self.errors)


def merge_errors(errors: Sequence[InvalidInput]) -> InvalidInput:
    """Return one exception to raise for the errors that a check collected.

    A single error is returned as it is, so it keeps its code, and several as an
    `InvalidInputGroup`.
    """
    group = InvalidInputGroup(errors)
    return group.errors[0] if len(group.errors) == 1 else group


def each_error(error: InvalidInput) -> tuple[InvalidInput, ...]:
    """Return the errors of a group, or a single error alone, in the order they were found."""
    return error.errors if isinstance(error, InvalidInputGroup) else (error,)


class ErrorCollector:
    """The problems of independent input checks, collected to be raised together.

    `check` runs one check and records the `InvalidInput` it raises, so the checks after it
    still run. `raise_any` then raises them all through `merge_errors`.
    """

    def __init__(self, errors: Sequence[InvalidInput] = ()):
        self.errors: list[InvalidInput] = list(errors)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def add(self, error: InvalidInput) -> None:
        self.errors.append(error)

    def check(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
        """Return what `function` returns, or None after recording the InvalidInput it raised."""
        try:
            return function(*args, **kwargs)
        except InvalidInput as error:
            self.errors.append(error)
            return None

    def raise_any(self) -> None:
        """Raise the recorded problems as one exception (see `merge_errors`), if there are any."""
        if self.errors:
            raise merge_errors(self.errors)


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


class TooManyRequests(HubError):
    """A client that exceeded its rate limit; it may retry after `retry_after_seconds`."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class Unavailable(HubError):
    """A dependency (database, broker) is down; the client may retry."""

    status = 503
    code = "unavailable"


class ConfigurationError(Exception):
    """Settings or files that stop the hub from starting; the message names the value and fix."""
