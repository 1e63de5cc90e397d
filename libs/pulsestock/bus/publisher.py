"""Publishing a batch to JetStream with every ack awaited, for the outbox relay.

nats-py's `publish_async` gives each message its own inbox token (random bytes from the OS),
future, done-callback, semaphore wait and parsed `PubAck`. The relay only needs to know
that all of a batch's messages were stored (or that one was not), so here one subscription
takes the acks of all batches: a batch's messages share a reply subject, the acks count
down, and an ack is only looked at for an error. Messages go out on one connection in
order, so per-subject order is the outbox's order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

Outgoing = tuple[str, bytes, dict[str, str]]  # subject, payload, headers


class PublishRejected(nats.errors.Error):
    """JetStream did not store a message (no stream for the subject, a limit, ...)."""


@dataclass
class _Batch:
    waiting: int
    done: asyncio.Future[None]
    errors: list[str] = field(default_factory=list)


class BatchPublisher:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = f"{nc.new_inbox()}.relay"
        self._numbers = itertools.count()
        self._batches: dict[str, _Batch] = {}
        self._subscription: Subscription | None = None

    async def publish(self, messages: Sequence[Outgoing], timeout_s: float) -> None:
        """Publish all; return once JetStream has acknowledged each, or raise."""
        if not messages:
            return
        if self._subscription is None:
            self._subscription = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        reply = f"{self._prefix}.{next(self._numbers)}"
        batch = _Batch(len(messages), asyncio.get_running_loop().create_future())
        self._batches[reply] = batch
        try:
            for subject, data, headers in messages:
                await self.nc.publish(subject, data, reply=reply, headers=headers)
            await asyncio.wait_for(asyncio.shield(batch.done), timeout_s)
        finally:
            # A late ack of an abandoned batch finds nothing and is dropped.
            self._batches.pop(reply, None)
        if batch.errors:
            raise PublishRejected(f"{len(batch.errors)} not stored, first: {batch.errors[0]}")

    async def _on_ack(self, message: Msg) -> None:
        batch = self._batches.get(message.subject)
        if batch is None:
            return
        status = (message.headers or {}).get("Status")
        if status is not None:  # e.g. 503: no stream takes this subject
            batch.errors.append(f"status {status}")
        elif b'"error"' in message.data:
            batch.errors.append(message.data.decode(errors="replace"))
        batch.waiting -= 1
        if batch.waiting == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
