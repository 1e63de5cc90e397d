"""Live updates for the pages: what happened (a kind and the SKU it concerns) fanned out to
every open page. Each page's queue is bounded; a page that falls behind is told to reload
its regions once (`resync`) instead of growing memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

QUEUE_SIZE = 2000
# Kinds a page can listen to (its data-live attribute names them).
HEAT, PULSE, STOCK, FULFILLMENT, FORECAST, LIVE, RESYNC = (
    "heat",
    "pulse",
    "stock",
    "fulfillment",
    "forecast",
    "live",
    "resync",
)
WAKE = "wake"


@dataclass(frozen=True)
class LiveEvent:
    kind: str
    sku: str = ""  # "" when the event names none (the page decides whether it cares)
    key: str = ""  # e.g. a live session's id


class Listener:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[LiveEvent] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

    def offer(self, event: LiveEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next_batch(
        self, window_s: float, idle_s: float | None = None, most: int = 200
    ) -> list[LiveEvent]:
        """The next event, and what else arrives within `window_s` of it (deduplicated, at
        most `most`; more, or a queue that overflowed, becomes one `resync`). Nothing within
        `idle_s`: an empty list."""
        try:
            first = await asyncio.wait_for(self.queue.get(), idle_s)
        except TimeoutError:
            return []
        batch = {first: None}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                break
            batch[event] = None
        while not self.queue.empty():
            batch[self.queue.get_nowait()] = None
        if self.overflowed or len(batch) > most:
            self.overflowed = False
            return [LiveEvent(RESYNC)]
        return list(batch)


class LiveHub:
    def __init__(self) -> None:
        self._listeners: set[Listener] = set()
        self.published = 0

    def publish(self, event: LiveEvent) -> None:
        self.published += 1
        for listener in self._listeners:
            listener.offer(event)

    @contextlib.contextmanager
    def listen(self) -> Iterator[Listener]:
        listener = Listener()
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    def wake_all(self) -> None:
        """Every listener returns from its wait (an empty event): the console is stopping."""
        for listener in self._listeners:
            listener.offer(LiveEvent(WAKE))

    @property
    def listeners(self) -> int:
        return len(self._listeners)
