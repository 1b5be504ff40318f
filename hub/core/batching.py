"""Coalescing of concurrent calls into batches, for the API's hottest database paths.

Calls that wait at the same time in one event loop are grouped by a key (a tenant) and handed
to one batch function. A batch starts on the next turn of the loop, or as soon as one of the
`max_in_flight` batch slots is free. Under load, each batch therefore carries every call that
arrived while the one before ran, and at low load a call waits for no other. With
`linger_seconds`, a batch under load also waits, at most that long, until as many calls wait as
the last batch took.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")

# A batch function returns one result or one exception per item, in the items' order. An
# exception fails that item's call alone.
BatchFunction = Callable[[Key, list[Item]], Awaitable[list[Result | Exception]]]


class Coalescer(Generic[Key, Item, Result]):
    """Gather the calls that wait at the same time into batches of one key each."""

    def __init__(
        self,
        run_batch: BatchFunction[Key, Item, Result],
        *,
        max_in_flight: int,
        max_batch: int,
        linger_seconds: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._waiting: dict[Key, list[tuple[Item, asyncio.Future[Result]]]] = {}
        # When the first waiting call of each key arrived, on the loop's clock.
        self._waiting_since: dict[Key, float] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        # The size of each key's last batch, the number of calls its next batch waits for.
        self._last_batch_size: dict[Key, int] = {}

    async def call(self, key: Key, item: Item) -> Result:
        """Return the result of `item`, run in a batch with the calls waiting for `key`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        if key not in self._waiting:
            self._waiting[key] = []
            self._waiting_since[key] = loop.time()
        self._waiting[key].append((item, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled or not self._waiting or len(self._in_flight) >= self._max_in_flight:
            return
        _key, delay = self._next_batch(loop)
        if delay > 0:
            if self._timer is None:
                self._timer = loop.call_later(delay, self._send, loop)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._scheduled = True
        loop.call_soon(self._send, loop)

    def _next_batch(self, loop: asyncio.AbstractEventLoop) -> tuple[Key, float]:
        """Return the key whose batch goes next and how long it should still wait for calls.

        With `linger_seconds`, a key's batch waits until as many calls wait as its last batch
        took, or until its first call waited that long. Under load the calls of one batch come
        back spread out, and without the wait the first of them would start a batch of its own
        while the rest wait for it. At low load the last batch had one call, so none waits. A
        key that has its calls goes before one that still waits, in arrival order otherwise.
        """
        if not self._linger:
            return next(iter(self._waiting)), 0.0
        first_key, first_delay = None, math.inf
        for key, calls in self._waiting.items():
            if len(calls) >= min(self._last_batch_size.get(key, 1), self._max_batch):
                return key, 0.0
            delay = self._waiting_since[key] + self._linger - loop.time()
            if delay <= 0:
                return key, 0.0
            if delay < first_delay:
                first_key, first_delay = key, delay
        assert first_key is not None, "called with no call waiting"
        return first_key, first_delay

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        self._timer = None
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            key, delay = self._next_batch(loop)
            if delay > 0:
                self._timer = loop.call_later(delay, self._send, loop)
                return
            calls = self._waiting[key]
            batch, rest = calls[: self._max_batch], calls[self._max_batch :]
            if rest:
                self._waiting[key] = rest
                self._waiting_since[key] = loop.time()
            else:
                del self._waiting[key]
                del self._waiting_since[key]
            self._last_batch_size[key] = len(batch)
            task = loop.create_task(self._run(key, batch))
            self._in_flight.add(task)
            task.add_done_callback(lambda done: self._finished(done, loop))

    def _finished(self, task: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> None:
        self._in_flight.discard(task)
        self._schedule(loop)

    async def _run(self, key: Key, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        futures = [future for _item, future in batch]
        try:
            results = await self._run_batch(key, [item for item, _future in batch])
            if len(results) != len(futures):
                # Without this check the calls left over would wait forever.
                raise RuntimeError(
                    f"the batch function returned {len(results)} results for {len(futures)} calls"
                )
        except BaseException as exc:
            for future in futures:
                _settle(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in zip(futures, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    if future.done():
        return  # its caller went away
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    elif isinstance(outcome, BaseException):
        future.cancel()
    else:
        future.set_result(outcome)
