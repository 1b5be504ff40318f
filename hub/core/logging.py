"""Structured logging: keyword events, ids bound from context, JSON in production.

Log events carry ids (`request_id`, `task_id`, `tenant_id`), never personal data: callers pass
ids and counts only. `bind_ids` puts ids on every event logged in the current context.
"""

from __future__ import annotations

import logging
import sys

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
