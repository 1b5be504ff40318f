"""Whether intake is degraded: the pipeline behind it cannot keep up or cannot publish.

While degraded, POST requests returns a token instead of the request id, as the Open311 spec
allows for requests that are not processed at once. The composition root builds the
check with its own relay-health signal, so this package never depends on the API runtime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from sqlalchemy.engine import Engine

from hub.core.outbox import backlog

log = structlog.get_logger(__name__)

# Due, unpublished outbox rows above which intake counts as degraded: at the relay's default of
# 500 rows per round this is about 10 rounds behind.
DEFAULT_BACKLOG_THRESHOLD = 5000
# How long one backlog count is reused, in seconds, so the hot path rarely counts rows.
DEFAULT_CACHE_SECONDS = 2.0


class IntakeDegradedCheck:
    """Callable that returns True while the relay is unhealthy or the outbox backlog is high."""

    def __init__(
        self,
        relay_healthy: Callable[[], bool],
        *,
        backlog_threshold: int = DEFAULT_BACKLOG_THRESHOLD,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        engine: Engine | None = None,
        count_backlog: Callable[[], int] | None = None,
        run_count: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._relay_healthy = relay_healthy
        self._threshold = backlog_threshold
        self._cache_seconds = cache_seconds
        self._count = count_backlog or (lambda: backlog(engine))
        # Runs a count off the caller's thread. Tests pass one that runs it at once.
        self._run_count = run_count or _in_thread
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._counting = False
        self._backlog = 0

    def backlog(self) -> int:
        """Return the last counted backlog, and start a new count when that one is older than
        the cache time.

        The count runs on its own thread, never on the caller's: POST requests calls this on
        the event loop, where a slow database would stall every request of the process. So
        a call returns the count before the one it starts.
        """
        now = time.monotonic()
        with self._lock:
            if self._counting or now - self._checked_at < self._cache_seconds:
                return self._backlog
            self._counting = True
            self._checked_at = now
        self._run_count(self._refresh)
        with self._lock:
            return self._backlog

    def _refresh(self) -> None:
        try:
            count = self._count()
        except Exception as exc:  # noqa: BLE001 - an unreadable backlog must not fail intake
            log.warning("intake_backlog_read_failed", error=type(exc).__name__)
            count = None
        with self._lock:
            if count is not None:
                self._backlog = count
            self._counting = False

    def __call__(self) -> bool:
        if not self._relay_healthy():
            return True
        return self.backlog() > self._threshold


def _in_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="intake-backlog-count", daemon=True).start()
