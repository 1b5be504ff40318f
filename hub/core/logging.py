"""Structured logging: keyword events, ids bound from context, JSON in production.

Log events carry ids (`request_id`, `task_id`, `tenant_id`), never personal data: callers pass
ids and counts only. `bind_ids` puts ids on every event logged in the current context.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import structlog

from hub.core.settings import Settings, get_settings

_configured = False


class _StderrLogger:
    """Write each rendered event to the current `sys.stderr`.

    `sys.stderr` is looked up per event rather than bound once, so a replaced stream (pytest's
    capture, a daemon's redirect) never leaves cached loggers writing to a closed file.
    """

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_logger_factory(*_args: object) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(settings: Settings | None = None, *, force: bool = False) -> None:
    global _configured
    if _configured and not force:
        return
    settings = settings or get_settings()
    as_json = settings.log_json if settings.log_json is not None else settings.is_production
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)

    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    if level > logging.DEBUG:
        # Libraries that log a line per migration step or per task at INFO: the hub logs its
        # own event for each, so their lines show only at DEBUG.
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
    _configured = True


CHATTY_LOGGERS = (
    "alembic",
    "celery.worker.strategy",
    "celery.app.trace",
    "celery.worker.consumer.connection",
)


def bind_ids(**ids: str | int | None) -> None:
    """Bind ids to every event logged in this context (request, task, tenant)."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def clear_ids() -> None:
    structlog.contextvars.clear_contextvars()


class RepeatLimiter:
    """Log an event at most once per `interval_seconds` per key, and count the repeats.

    The first occurrence of a key is logged at once. Repeats within the interval are dropped
    and counted, and the next occurrence logged after the interval carries the count as
    `repeats_suppressed`. A count is reported only when the event occurs again, so the
    repeats after the last logged line of an outage stay uncounted in the log.
    """

    # Maximum keys kept. A new key beyond it makes the limiter forget the oldest key; callers
    # key by error class, so a handful of keys is usual.
    MAX_KEYS = 1000

    def __init__(
        self, interval_seconds: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # Key to (clock time of the last logged occurrence, repeats dropped since).
        self._state: dict[Hashable, tuple[float, int]] = {}

    def admit(self, key: Hashable) -> int | None:
        """Return the repeats dropped since the key was last logged when it may be logged now,
        or None when this occurrence is dropped."""
        now = self._clock()
        with self._lock:
            state = self._state.get(key)
            if state is not None and now - state[0] < self.interval_seconds:
                self._state[key] = (state[0], state[1] + 1)
                return None
            if state is None and len(self._state) >= self.MAX_KEYS:
                del self._state[next(iter(self._state))]
            self._state[key] = (now, 0)
            return state[1] if state is not None else 0

    def log(
        self, method: Callable[..., Any], event: str, *, key: Hashable = None, **fields: Any
    ) -> None:
        """Call `method(event, **fields)`, a logger's level method, unless the event with this
        key was logged less than `interval_seconds` ago."""
        suppressed = self.admit((event, key))
        if suppressed is None:
            return
        if suppressed:
            fields["repeats_suppressed"] = suppressed
        method(event, **fields)
