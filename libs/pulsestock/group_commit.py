"""Group commit: callers that want the same kind of transaction at the same moment share one.

Each caller submits an item and awaits its own result; a drain task hands every item waiting
at that moment to `process` at once, so N concurrent callers pay for one transaction (one
BEGIN/COMMIT, one WAL flush, one lock round) instead of N. The drain task starts on demand
and ends when the queue is empty: nothing to start or stop with the service.

A caller waits for its batch, so a fast producer is held back by the commits (backpressure).
If `process` raises, every item of that batch gets the error: callers retry, which is why
what is submitted must be idempotent.

Each item keeps its caller's trace context: the drain task is not the caller (it inherited
the context of whichever caller started it, long gone for later batches), so each batch
runs as a "group commit" span continuing its first caller's trace and linked to every
caller's, and what the batch sends on (outbox headers) continues a caller's trace.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry.context import Context
from pulsestock.errors import Unavailable
from pulsestock.telemetry import batch_span, capture_context

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 64,
    ) -> None:
        self._process = process
        self.max_batch = max_batch
        self._waiting: deque[tuple[Item, asyncio.Future[Result], Context]] = deque()
        self._name = getattr(process, "__qualname__", "process")
        self._drain: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        # Its error is read here even when the caller has gone (no "never retrieved" noise).
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._waiting.append((item, future, capture_context()))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_waiting())
        # Shielded: a caller that goes away (a cancelled stream) leaves its item in the batch.
        return await asyncio.shield(future)

    async def _drain_waiting(self) -> None:
        while self._waiting:
            count = min(self.max_batch, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(count)]
            try:
                with batch_span(
                    "group commit",
                    [context for _, _, context in batch],
                    {"code.function": self._name, "pulsestock.batch.size": count},
                ):
                    results = await self._process([item for item, _, _ in batch])
            except asyncio.CancelledError:  # the process is stopping: nobody is left waiting
                _fail([*batch, *self._waiting], Unavailable("shutting down; retry"))
                self._waiting.clear()
                raise
            except Exception as error:  # the batch's transaction failed: all of it did
                _fail(batch, error)
                continue
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _fail(
    waiting: Sequence[tuple[object, asyncio.Future[Result], Context]], error: Exception
) -> None:
    for _, future, _ in waiting:
        if not future.done():
            future.set_exception(error)
