"""Clients of the channels' inventory APIs: TikTok Shop, Shopify, Amazon SP-API."""
