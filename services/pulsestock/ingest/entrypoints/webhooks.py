"""HTTP endpoints of ingest (aiohttp). Channel order webhooks are added here by their issue;
for now the server answers its health probe."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pulsestock.runtime import ServiceContext


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app() -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/healthz", healthz)
    return app


async def serve_http(context: ServiceContext, stop: asyncio.Event) -> None:
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, context.settings.grpc_host, context.settings.http_port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
