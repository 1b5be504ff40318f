"""The coalescer that turns concurrent calls into batches."""

from __future__ import annotations

import asyncio

import pytest

from hub.core.batching import Coalescer


class Recorder:
    """A batch function that records its batches and returns each item doubled."""

    def __init__(self, *, fail_items=(), raise_for=None, short=False) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.fail_items = set(fail_items)
        self.raise_for = raise_for
        self.short = short

    async def __call__(self, key: str, items: list[int]) -> list[int | Exception]:
        self.batches.append((key, list(items)))
        await asyncio.sleep(0.01)
        if self.raise_for in items:
            raise LookupError("the batch failed")
        results = [ValueError(item) if item in self.fail_items else item * 2 for item in items]
        return results[:-1] if self.short else results


def _run(recorder: Recorder, calls: list[tuple[str, int]], *, max_in_flight=1, max_batch=10):
    async def main():
        coalescer = Coalescer(recorder, max_in_flight=max_in_flight, max_batch=max_batch)
        return await asyncio.gather(
            *(coalescer.call(key, item) for key, item in calls), return_exceptions=True
        )

    return asyncio.run(main())


def test_waiting_calls_share_batches_per_key():
    recorder = Recorder()
    calls = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5)]
    results = _run(recorder, calls)

    assert results == [2, 4, 6, 8, 10]
    assert recorder.batches == [("a", [1, 3, 4]), ("b", [2, 5])]


def test_batches_hold_at_most_max_batch_calls():
    recorder = Recorder()
    results = _run(recorder, [("a", n) for n in range(7)], max_batch=3)

    assert results == [n * 2 for n in range(7)]
    assert [items for _key, items in recorder.batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_calls_arriving_during_a_batch_join_the_next():
    recorder = Recorder()

    async def main():
        coalescer = Coalescer(recorder, max_in_flight=1, max_batch=10)
        first = asyncio.ensure_future(coalescer.call("a", 1))
        await asyncio.sleep(0.001)  # the first batch is running now
        later = [coalescer.call("a", n) for n in (2, 3, 4)]
        return await asyncio.gather(first, *later)

    assert asyncio.run(main()) == [2, 4, 6, 8]
    assert recorder.batches == [("a", [1]), ("a", [2, 3, 4])]


def test_batches_run_in_parallel():
    recorder = Recorder()
    results = _run(recorder, [("a", 1), ("b", 2), ("c", 3)], max_in_flight=3)

    assert results == [2, 4, 6]
    assert len(recorder.batches) == 3


def test_exception_result_fails_its_call_only():
    results = _run(Recorder(fail_items={3}), [("a", 1), ("a", 3), ("a", 5)])

    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 10


def test_raising_batch_fails_each_of_its_calls():
    results = _run(Recorder(raise_for=3), [("a", 1), ("a", 3), ("b", 5)])

    assert isinstance(results[0], LookupError)
    assert isinstance(results[1], LookupError)
    assert results[2] == 10


def test_missing_results_fail_the_batch():
    results = _run(Recorder(short=True), [("a", 1), ("a", 2)])

    assert all(isinstance(result, RuntimeError) for result in results)


def test_cancelled_caller_leaves_others_served():
    recorder = Recorder()

    async def main():
        coalescer = Coalescer(recorder, max_in_flight=1, max_batch=10)
        cancelled_call = asyncio.ensure_future(coalescer.call("a", 1))
        served_call = asyncio.ensure_future(coalescer.call("a", 2))
        await asyncio.sleep(0.001)
        cancelled_call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled_call
        return await served_call

    assert asyncio.run(main()) == 4


# Far longer than any of these tests runs: a call that waited for it would fail `wait_for`.
LONG_LINGER = 30.0


def test_linger_waits_for_last_batch_size():
    recorder = Recorder()

    async def main():
        coalescer = Coalescer(recorder, max_in_flight=1, max_batch=10, linger_seconds=LONG_LINGER)
        first = [asyncio.ensure_future(coalescer.call("a", n)) for n in (1, 2, 3)]
        # The first batch runs after 1 ms and has ended 20 ms later.
        await asyncio.sleep(0.001)
        second = [asyncio.ensure_future(coalescer.call("a", 4))]
        await asyncio.sleep(0.02)
        # Call 4 waits for two more calls, as the last batch had three.
        assert len(recorder.batches) == 1
        second += [asyncio.ensure_future(coalescer.call("a", n)) for n in (5, 6)]
        return await asyncio.wait_for(asyncio.gather(*first, *second), timeout=5)

    assert asyncio.run(main()) == [2, 4, 6, 8, 10, 12]
    assert recorder.batches == [("a", [1, 2, 3]), ("a", [4, 5, 6])]


def test_linger_expires_to_smaller_batch():
    recorder = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        coalescer = Coalescer(recorder, max_in_flight=1, max_batch=10, linger_seconds=0.05)
        first = await asyncio.gather(*(coalescer.call("a", n) for n in (1, 2, 3)))
        started = loop.time()
        last = await asyncio.wait_for(coalescer.call("a", 4), timeout=5)
        return first + [last], loop.time() - started

    results, waited = asyncio.run(main())
    assert results == [2, 4, 6, 8]
    assert recorder.batches == [("a", [1, 2, 3]), ("a", [4])]
    # The lone call waited for the linger (then the batch function's 0.01 s).
    assert waited >= 0.05


def test_linger_per_key():
    recorder = Recorder()

    async def main():
        coalescer = Coalescer(recorder, max_in_flight=1, max_batch=10, linger_seconds=LONG_LINGER)
        await asyncio.gather(*(coalescer.call("a", n) for n in (1, 2, 3)))
        lingering = asyncio.ensure_future(coalescer.call("a", 4))
        await asyncio.sleep(0.001)
        other = await asyncio.wait_for(coalescer.call("b", 5), timeout=5)
        assert not lingering.done()
        rest = [asyncio.ensure_future(coalescer.call("a", n)) for n in (6, 7)]
        return [other, *await asyncio.wait_for(asyncio.gather(lingering, *rest), timeout=5)]

    assert asyncio.run(main()) == [10, 8, 12, 14]
    assert recorder.batches == [("a", [1, 2, 3]), ("b", [5]), ("a", [4, 6, 7])]


def test_linger_skipped_at_low_load():
    recorder = Recorder()

    async def main():
        coalescer = Coalescer(recorder, max_in_flight=1, max_batch=10, linger_seconds=LONG_LINGER)
        return [await asyncio.wait_for(coalescer.call("a", n), timeout=5) for n in (1, 2)]

    assert asyncio.run(main()) == [2, 4]
    assert recorder.batches == [("a", [1]), ("a", [2])]
