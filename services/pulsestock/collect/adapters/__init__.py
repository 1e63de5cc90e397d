"""The collector's adapters to the outside: content-signal sources such as TikTok's Display API."""
