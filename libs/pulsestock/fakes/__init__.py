"""Faithful local fakes of the channel APIs (TikTok Shop, Shopify, Amazon SP-API): real HTTP
servers that speak the documented request and response shapes, check auth, enforce the
documented rate limits, and can be told to fail, throttle or stall. They record what they
receive. Tests and `make run` use them; nothing here talks to the real channels."""

from pulsestock.fakes.amazon import FakeAmazon
from pulsestock.fakes.base import FakeChannel, Faults
from pulsestock.fakes.shopify import FakeShopify
from pulsestock.fakes.tiktok_shop import FakeTikTokShop, tiktok_signature

__all__ = [
    "FakeAmazon",
    "FakeChannel",
    "FakeShopify",
    "FakeTikTokShop",
    "Faults",
    "tiktok_signature",
]
