"""Gather single calls from concurrent steps into batches for a batch-taking model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from operators.models._ledger import CallLedger, current_ledger, using_ledger

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

    Faults stay inside their event: when a batch call fails, each item is
    tried again on its own, so only the items that fail alone get an error.
    Model attempts are noted on the right events' traces (see
    :mod:`operators.models._ledger`): the batch's own attempts go to the
    first item's event, each single call's to its own.
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
        self._ledgers: list[CallLedger | None] = []
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
        self._ledgers.append(current_ledger())
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
        items, futures, ledgers = self._items, self._futures, self._ledgers
        self._items, self._futures, self._ledgers = [], [], []
        task = asyncio.get_running_loop().create_task(self._run(items, futures, ledgers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        items: list[In],
        futures: list[asyncio.Future[Out]],
        ledgers: list[CallLedger | None],
    ) -> None:
        batch = CallLedger("batch")
        try:
            with using_ledger(batch):
                results = await self._call(items)
        except Exception as exc:
            if ledgers[0] is not None:
                ledgers[0].adopt(batch, accounted_too=True)  # no result carries their usage
            if len(items) == 1:
                _settle(futures[0], exc)
                return
            # One bad item must not fail the others: each goes again on its own.
            await asyncio.gather(
                *(
                    self._alone(item, future, ledger)
                    for item, future, ledger in zip(items, futures, ledgers, strict=True)
                )
            )
            return
        if ledgers[0] is not None:
            ledgers[0].adopt(batch, accounted_too=False)
        for future, result in zip(futures, results, strict=True):
            _settle(future, result)

    async def _alone(
        self, item: In, future: asyncio.Future[Out], ledger: CallLedger | None
    ) -> None:
        if future.done():
            return  # its step was cancelled meanwhile
        try:
            with using_ledger(ledger):
                (result,) = await self._call([item])
        except Exception as exc:
            _settle(future, exc)
            return
        _settle(future, result)

    async def _call(self, items: list[In]) -> list[Out]:
        results = list(await self._fn(items))
        if len(results) != len(items):
            raise RuntimeError(f"batch call returned {len(results)} results for {len(items)}")
        return results


def _settle(future: asyncio.Future[Out], outcome: Out | Exception) -> None:
    # A step cancelled meanwhile (timeout, shutdown) no longer wants its result.
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
