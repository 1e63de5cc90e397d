"""TikTok Shop Partner API request signing (used by every client of the API)."""

from __future__ import annotations

import hashlib
import hmac


def sign(app_secret: str, path: str, query: dict[str, str], body: bytes) -> str:
    """The Partner API request signature. Written here independently of the fake's check,
    so that a mistake in either shows up as a refused request in the tests."""
    signed_params = sorted((k, v) for k, v in query.items() if k not in ("sign", "access_token"))
    message = path + "".join(key + value for key, value in signed_params)
    wrapped = app_secret.encode() + message.encode() + body + app_secret.encode()
    return hmac.new(app_secret.encode(), wrapped, hashlib.sha256).hexdigest()
