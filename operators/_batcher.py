"""Gather single calls from concurrent steps into batches for a batch-taking model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Collect items submitted one by one and call ``fn`` once per batch.

    A batch goes when it holds ``max_size`` items, or ``max_wait`` seconds
    after its first item arrived. Steps running under map_async each submit
    one item and await their own result, so the step keeps its per-event trace
    record while the model sees batches (one sklearn call per 32 texts instead
    of 32 calls).
    """

    def __init__(
        self,
        fn: Callable[[list[In]], Awaitable[Sequence[Out]]],
        *,
        max_size: int,
        max_wait: float,
    ) -> None:
        """Create a batcher.

        Args:
            fn: takes a batch, returns one result per item in order.
            max_size: most items per call.
            max_wait: longest wait for a batch to fill, in seconds.
        """
        self._fn = fn
        self._max_size = max_size
        self._max_wait = max_wait
        self._items: list[In] = []
        self._futures: list[asyncio.Future[Out]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: In) -> Out:
        """Add ``item`` to the next batch and wait for its result.

        Raises:
            Exception: whatever ``fn`` raised for the batch.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        task = asyncio.get_running_loop().create_task(self._run(items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[In], futures: list[asyncio.Future[Out]]) -> None:
        try:
            results = list(await self._fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"batch call returned {len(results)} results for {len(items)}")
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            # A step cancelled meanwhile (timeout, shutdown) no longer wants its result.
            if not future.done():
                future.set_result(result)
