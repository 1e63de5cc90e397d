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
_CONNECTION_CHECK_S = 0.25  # how often a batch waiting for acks looks at the connection


class PublishRejected(nats.errors.Error):
    """JetStream did not store a message (no stream for the subject, a limit, ...)."""


class NotConnected(nats.errors.Error):
    """The connection to NATS is down (or went down before every ack came): nothing is
    buffered for later, the caller keeps its messages and tries again."""


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
        """Publish all; return once JetStream has acknowledged each, or raise.

        While the client is reconnecting nothing is published (nats-py would buffer it, and a
        caller retrying every second would fill the buffer with copies); a batch whose
        connection drops before all its acks came fails at once rather than at `timeout_s`
        (the server that would have acked it may be gone; the caller re-publishes, and
        JetStream drops what it had stored as duplicates of the same `Nats-Msg-Id`)."""
        if not messages:
            return
        if not self.nc.is_connected:
            raise NotConnected("not connected to NATS")
        if self._subscription is None:
            self._subscription = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        reply = f"{self._prefix}.{next(self._numbers)}"
        batch = _Batch(len(messages), asyncio.get_running_loop().create_future())
        self._batches[reply] = batch
        reconnects = self.nc.stats["reconnects"]
        try:
            for subject, data, headers in messages:
                await self.nc.publish(subject, data, reply=reply, headers=headers)
            await self._acks(batch, timeout_s, reconnects)
        finally:
            # A late ack of an abandoned batch finds nothing and is dropped.
            self._batches.pop(reply, None)
        if batch.errors:
            raise PublishRejected(f"{len(batch.errors)} not stored, first: {batch.errors[0]}")

    async def _acks(self, batch: _Batch, timeout_s: float, reconnects: int) -> None:
        """Wait for the batch's acks; stop waiting once the connection has dropped."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"{batch.waiting} acks missing after {timeout_s}s")
            done, _ = await asyncio.wait([batch.done], timeout=min(left, _CONNECTION_CHECK_S))
            if done:
                return
            if not self.nc.is_connected or self.nc.stats["reconnects"] != reconnects:
                raise NotConnected(f"NATS connection lost with {batch.waiting} acks outstanding")

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
