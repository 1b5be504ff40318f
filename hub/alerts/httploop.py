"""One event loop thread and one pooled aiohttp session per worker process.

Every batch the process runs, from any task thread, sends through this session, so the
connections to providers stay open between batches and one connection limit covers the
whole process. A forked child starts its own loop and session on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import structlog

log = structlog.get_logger(__name__)

# Connections per worker process, to all providers together. The token buckets set the rate,
# and this limit only bounds the sockets one process keeps open.
MAX_CONNECTIONS = 200
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a uvloop event loop, or asyncio's own where uvloop is not installed.

    uvloop comes with `uvicorn[standard]` on Linux and macOS. It runs aiohttp's client with
    less CPU time per request than asyncio's loop.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HttpLoop:
    """An event loop running in a daemon thread, with the aiohttp session that lives on it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._serve, name="alerts-http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _http(self) -> aiohttp.ClientSession:
        # Called on the loop thread only, so no lock is needed.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS)
            self._session = aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT)
        return self._session

    def run(self, work: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, T]]) -> T:
        """Run `work(session)` on the loop and block the calling thread until it returns."""

        async def with_session() -> T:
            return await work(self._http())

        return asyncio.run_coroutine_threadsafe(with_session(), self.loop).result()

    def close(self) -> None:
        """Close the session, then stop the loop and its thread."""
        if self.loop.is_closed():
            return
        if self._session is not None and not self._session.closed:
            session = self._session
            try:
                asyncio.run_coroutine_threadsafe(session.close(), self.loop).result(10)
            except (TimeoutError, RuntimeError) as exc:
                log.warning("alerts_http_close_failed", error=type(exc).__name__)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


_lock = threading.Lock()
_current: HttpLoop | None = None
# Loops a forked child inherited from its parent. Their sessions belong to the parent, so the
# child neither uses nor closes them, and keeps them referenced: collected, an open session
# is reported as "Unclosed client session".
_inherited: list[HttpLoop] = []
# Allocations between young-generation collections (Python's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def _tune_garbage_collector() -> None:
    """Make garbage collection cheaper in a process that sends alerts.

    Most objects alive at the first batch (modules, engine, settings) live as long as the
    process. Frozen, they are left out of full collections, which otherwise scanned them
    several times per batch. Each request also allocates many short-lived objects, most of
    which reference counting frees, so rarer young collections find less to scan. In a profile
    of `fanout.deliver_batch` on a 2-core machine, collections took about a fifth of the
    worker's CPU time before, and about a twentieth after. It affects the whole process.
    """
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(max(_young, GC_YOUNG_THRESHOLD), middle, old)


def process_loop() -> HttpLoop:
    """Return this process's loop, starting it on first use and again after a fork."""
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid() or _current.loop.is_closed():
            if _current is not None and _current.pid != os.getpid():
                _inherited.append(_current)
            _current = HttpLoop()
            _tune_garbage_collector()
        return _current


def close_process_loop() -> None:
    """Close this process's session and loop, if it started them (before the process exits)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None and current.pid == os.getpid():
        current.close()


atexit.register(close_process_loop)
