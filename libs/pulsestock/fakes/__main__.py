"""`python -m pulsestock.fakes`: serve the three fake channel APIs and the TikTok Display API
fake until SIGTERM/SIGINT.

Prints one JSON line once they listen: their base URLs, and (`display_creator`) the grant of
a demo creator whose videos the collector can poll, one of which takes off after a while."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop
from pulsestock.fakes.base import FakeChannel
from pulsestock.fakes.tiktok_display import FakeTikTokDisplay, seed_demo_creator


async def serve(ports: tuple[int, int, int, int], surge_after_s: float) -> None:
    display = FakeTikTokDisplay()
    fakes: tuple[FakeChannel, ...] = (FakeTikTokShop(), FakeShopify(), FakeAmazon(), display)
    for fake, port in zip(fakes, ports, strict=True):
        await fake.start(port)
    urls: dict[str, object] = {fake.name: fake.url for fake in fakes}
    urls["display_creator"] = seed_demo_creator(display, surge_after_s)
    urls["display_client"] = {"key": display.client_key, "secret": display.client_secret}
    print(json.dumps(urls), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for fake in fakes:
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiktok-port", type=int, default=0)
    parser.add_argument("--shopify-port", type=int, default=0)
    parser.add_argument("--amazon-port", type=int, default=0)
    parser.add_argument("--display-port", type=int, default=0)
    parser.add_argument(
        "--surge-after", type=float, default=720.0, help="seconds until the demo video takes off"
    )
    args = parser.parse_args()
    ports = (args.tiktok_port, args.shopify_port, args.amazon_port, args.display_port)
    asyncio.run(serve(ports, args.surge_after))


if __name__ == "__main__":
    main()
