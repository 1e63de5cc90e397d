"""`python -m pulsestock.fakes`: serve the three fake channel APIs until SIGTERM/SIGINT.

Prints one JSON line with their base URLs once they listen."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from pulsestock.fakes import FakeAmazon, FakeShopify, FakeTikTokShop


async def serve(ports: tuple[int, int, int]) -> None:
    fakes = (FakeTikTokShop(), FakeShopify(), FakeAmazon())
    for fake, port in zip(fakes, ports, strict=True):
        await fake.start(port)
    print(json.dumps({fake.name: fake.url for fake in fakes}), flush=True)
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
    args = parser.parse_args()
    asyncio.run(serve((args.tiktok_port, args.shopify_port, args.amazon_port)))


if __name__ == "__main__":
    main()
