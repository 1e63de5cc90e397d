"""Sessions and CSRF tokens, signed with HMAC-SHA256: pure functions of a key and `now`.

A session is `<payload>.<signature>` (URL-safe base64): a random nonce, whether the operator
signed in, and when it expires. Every visitor has one (signed out until the token is given),
so every POST, the sign-in included, carries a CSRF token bound to its nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    nonce: str
    signed_in: bool
    expires: float  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, purpose: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{purpose}|{payload}".encode(), hashlib.sha256).digest())


def new_session(signed_in: bool, now: float, lifetime_s: float) -> Session:
    return Session(secrets.token_urlsafe(18), signed_in, now + lifetime_s)


def encode_session(key: bytes, session: Session) -> str:
    payload = _b64(
        json.dumps(
            {"n": session.nonce, "s": session.signed_in, "e": session.expires},
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{_sign(key, 'session', payload)}"


def decode_session(key: bytes, value: str | None, now: float) -> Session | None:
    """The session the cookie holds; None when absent, tampered with, malformed or expired."""
    if not value or value.count(".") != 1:
        return None
    payload, signature = value.split(".")
    # Bytes, so a cookie of non-ASCII text is merely invalid (str digests must be ASCII).
    expected = _sign(key, "session", payload).encode()
    if not hmac.compare_digest(signature.encode(), expected):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = Session(str(data["n"]), bool(data["s"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now else None


def csrf_token(key: bytes, session: Session) -> str:
    return _sign(key, "csrf", session.nonce)


def csrf_valid(key: bytes, session: Session | None, token: str | None) -> bool:
    if session is None or not token:
        return False
    return hmac.compare_digest(token.encode(), csrf_token(key, session).encode())


def token_matches(expected: str | None, given: str | None) -> bool:
    """The operator's sign-in token, compared in constant time; no token configured: never."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
