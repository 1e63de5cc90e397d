"""Where live updates come from: signal's WatchPulses stream, and the services' event streams
read as plain NATS subscriptions (no durable consumer: a page only needs to know that
something changed, and refetches the figures over gRPC). Both reconnect on their own."""

from __future__ import annotations

import asyncio
import contextlib

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pulsestock.config import NatsSettings, redact
from pulsestock.console.adapters.peers import Peers
from pulsestock.console.application.live import (
    FORECAST,
    FULFILLMENT,
    HEAT,
    LIVE,
    PULSE,
    STOCK,
    LiveEvent,
    LiveHub,
)
from pulsestock.console.domain.errors import ServiceError
from pulsestock.messages import decode_event
from pulsestock.telemetry import get_logger

log = get_logger(__name__)
# Subject prefix -> kind. signal's new pulses come from WatchPulses (the gRPC API), so
# `signal.pulse_detected` is not among them.
SUBJECTS = {
    "signal.heat_updated.>": HEAT,
    "signal.pulse_ended.>": PULSE,
    "inventory_sync.>": STOCK,
    "fulfillment.>": FULFILLMENT,
    "forecast.>": FORECAST,
    "ingest.live_sampled.>": LIVE,
}
RETRY_S = 1.0
RETRY_MAX_S = 10.0


def event_of(kind: str, headers: dict[str, str] | None, data: bytes) -> LiveEvent:
    """The SKU the event concerns, read from its payload (its `sku`, else its lines' first);
    an event that cannot be read still says that something of its kind changed."""
    event_type = (headers or {}).get("ce-type", "")
    try:
        message = decode_event(event_type, data)
    except Exception:  # an event type this console does not know: still worth a refresh
        return LiveEvent(kind)
    sku = str(getattr(message, "sku", "") or "")
    if not sku:
        for line in getattr(message, "lines", ()):
            sku = str(getattr(line, "sku", "") or "")
            if sku:
                break
    return LiveEvent(kind, sku, str(getattr(message, "live_id", "") or ""))


async def run_pulse_watch(peers: Peers, hub: LiveHub, stop: asyncio.Event) -> None:
    """New pulses from signal, the stream opened again whenever it breaks (after 1 s, up to
    RETRY_MAX_S while signal stays away); each kind of failure logged once."""
    delay, last = RETRY_S, ""
    while not stop.is_set():
        try:
            async for pulse in peers.watch_pulses():
                delay, last = RETRY_S, ""
                hub.publish(LiveEvent(PULSE, pulse.sku))
        except ServiceError as error:
            if error.code != last:
                log.info("pulse watch interrupted, reopening", error=str(error))
                last = error.code
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RETRY_MAX_S)


async def run_event_feed(settings: NatsSettings | None, hub: LiveHub, stop: asyncio.Event) -> None:
    """The services' events while `stop` is unset; without NATS settings, none (pulses still
    arrive through WatchPulses)."""
    if settings is None:
        log.info("live stock and heat updates off: NATS_URL not set")
        await stop.wait()
        return
    nc = NATS()
    where = redact(settings.url)

    def handler(kind: str):  # type: ignore[no-untyped-def]
        async def deliver(message: Msg) -> None:
            hub.publish(event_of(kind, message.headers, message.data))

        return deliver

    while not stop.is_set():
        try:
            await nc.connect(
                settings.url,
                name="console",
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                **settings.connect_options(),
            )
            break
        except (OSError, nats.errors.Error, TimeoutError) as error:
            log.warning("nats unreachable, retrying", server=where, error=str(error) or repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S * 5)
    if stop.is_set():
        return
    try:
        for subject, kind in SUBJECTS.items():
            await nc.subscribe(subject, cb=handler(kind))
        log.info("live updates from nats", server=where)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)
