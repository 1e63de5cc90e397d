"""What every fake channel shares: an aiohttp server on a loopback port, recorded requests,
injected faults, a token-bucket rate limit, and a small control API so another process (the
dev stack, a test) can read the state and inject faults over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pulsestock.devstack.servers import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    """Answer the next `fail_next` calls with `fail_status`; throttle every call until
    `throttle_until` (monotonic) and the next `throttle_next` calls; add `latency_s` to each
    call; stall the next `stall_next` calls for `stall_s` (longer than any sane client
    timeout)."""

    fail_next: int = 0
    fail_status: int = 503
    throttle_until: float = 0.0
    throttle_next: int = 0
    latency_s: float = 0.0
    stall_next: int = 0
    stall_s: float = 30.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0  # 0 until answered
    at: float = field(default_factory=time.monotonic)
    # What the fake answered and when (monotonic), so a test can check how the client
    # reacted to it (e.g. Shopify's HTTP 200 THROTTLED answers).
    answer: bytes = b""
    answered_at: float = 0.0
    answer_headers: dict[str, str] = field(default_factory=dict)

    def answered(self, response: web.StreamResponse) -> web.StreamResponse:
        self.status = response.status
        self.answer_headers = dict(response.headers)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            self.answer = response.body
        self.answered_at = time.monotonic()
        return response


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.capacity = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, cost: float = 1.0) -> bool:
        self._refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def seconds_until(self, cost: float) -> float:
        self._refill()
        return max(0.0, (cost - self.tokens) / self.rate)


class FakeChannel:
    name = "fake"

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # Subclasses: the channel's routes and the quantity per our SKU.
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def quantity_of(self, sku: str) -> int | None:
        raise NotImplementedError

    def set_quantity_outside(self, sku: str, quantity: int) -> None:
        """An edit made on the channel itself (e.g. by the seller in its admin)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_inject])
        self.routes(app)
        app.router.add_get("/_fake/quantities/{sku}", self._control_quantity)
        app.router.add_post("/_fake/faults", self._control_faults)
        app.router.add_get("/_fake/requests", self._control_requests)
        return app

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        self.port = port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def writes(self) -> list[RecordedRequest]:
        """Recorded calls that changed (or tried to change) a quantity."""
        return [r for r in self.requests if self.is_write(r)]

    def is_write(self, request: RecordedRequest) -> bool:
        raise NotImplementedError

    @web.middleware
    async def _record_and_inject(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        record = RecordedRequest(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
        )
        self.requests.append(record)
        faults = self.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        if faults.stall_next > 0:
            faults.stall_next -= 1
            await asyncio.sleep(faults.stall_s)
        if faults.fail_next > 0:
            faults.fail_next -= 1
            return record.answered(
                web.json_response({"message": "injected fault"}, status=faults.fail_status)
            )
        if time.monotonic() < faults.throttle_until:
            return record.answered(
                self.throttled(retry_after=faults.throttle_until - time.monotonic())
            )
        if faults.throttle_next > 0:
            faults.throttle_next -= 1
            return record.answered(self.throttled(retry_after=1.0))
        return record.answered(await handler(request))

    def throttled(self, retry_after: float) -> web.Response:
        return web.json_response(
            {"message": "Too Many Requests"},
            status=429,
            headers={"Retry-After": f"{max(1, round(retry_after))}"},
        )

    async def _control_quantity(self, request: web.Request) -> web.Response:
        return web.json_response({"quantity": self.quantity_of(request.match_info["sku"])})

    async def _control_faults(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        if "throttle_s" in body:
            self.faults.throttle_until = time.monotonic() + float(body.pop("throttle_s"))
        for key, value in body.items():
            setattr(self.faults, key, value)
        return web.json_response({"ok": True})

    async def _control_requests(self, _request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"method": r.method, "path": r.path, "status": r.status}
                for r in self.requests[-1000:]
            ]
        )
