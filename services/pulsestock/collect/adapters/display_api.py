"""TikTok Display API v2 client: a creator's videos (`/v2/video/list/`) and their counts
(`/v2/video/query/`), on the creator's OAuth tokens.

Tokens are refreshed shortly before they expire, and once more if the API still calls one
invalid (then the call is retried); a refresh the token endpoint refuses (`invalid_grant`: the
creator revoked the app, or the refresh token ran out) raises `ReauthorisationRequired`.
Throttling (429) and transient failures (5xx, connection errors, timeouts) are retried with
exponential back-off and full jitter, or after `Retry-After` when the answer carries one.
The shapes and codes used are listed, with their documentation, in
`pulsestock.fakes.tiktok_display`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp

DEFAULT_BASE_URL = "https://open.tiktokapis.com"
TOKEN_PATH = "/v2/oauth/token/"
LIST_PATH = "/v2/video/list/"
QUERY_PATH = "/v2/video/query/"
USER_INFO_PATH = "/v2/user/info/"
USER_FIELDS = "open_id,display_name,follower_count"
MAX_IDS_PER_QUERY = 20  # documented ceiling of /v2/video/query/ and of list's max_count
LIST_FIELDS = "id,create_time,title,share_url"
STATS_FIELDS = "id,create_time,view_count,like_count,comment_count,share_count"


@dataclass(frozen=True)
class CreatorTokens:
    """One creator's grant; instants are wall-clock Unix seconds."""

    open_id: str
    access_token: str
    access_expires_at: float
    refresh_token: str
    refresh_expires_at: float
    scope: str = ""

    @classmethod
    def from_token_response(cls, body: dict[str, Any], now: float) -> CreatorTokens:
        return cls(
            open_id=str(body["open_id"]),
            access_token=str(body["access_token"]),
            access_expires_at=now + float(body["expires_in"]),
            refresh_token=str(body["refresh_token"]),
            refresh_expires_at=now + float(body["refresh_expires_in"]),
            scope=str(body.get("scope", "")),
        )


class TokenStore(Protocol):
    """Where creators' tokens live (a table with encrypted columns, a mounted secret, ...)."""

    async def load(self, open_id: str) -> CreatorTokens | None: ...

    async def save(self, tokens: CreatorTokens) -> None: ...


class InMemoryTokenStore:
    def __init__(self, tokens: Iterable[CreatorTokens] = ()) -> None:
        self._tokens = {t.open_id: t for t in tokens}

    async def load(self, open_id: str) -> CreatorTokens | None:
        return self._tokens.get(open_id)

    async def save(self, tokens: CreatorTokens) -> None:
        self._tokens[tokens.open_id] = tokens


@dataclass(frozen=True)
class Video:
    id: str
    create_time: int  # Unix seconds
    title: str
    share_url: str


@dataclass(frozen=True)
class VideoStats:
    id: str
    create_time: int
    view_count: int
    like_count: int
    comment_count: int
    share_count: int
    observed_at: float  # client's wall clock when the answer arrived


class DisplayApiError(Exception):
    """An answer the client cannot turn into a result by waiting or refreshing."""

    def __init__(self, status: int, code: str, message: str, log_id: str = "") -> None:
        super().__init__(f"{status} {code}: {message} (log_id {log_id or '-'})")
        self.status, self.code, self.message, self.log_id = status, code, message, log_id


class ReauthorisationRequired(DisplayApiError):
    """The creator's grant is gone (revoked, expired, or lacks a scope): they must authorise
    the app again; retrying will not help."""

    def __init__(
        self, open_id: str, status: int, code: str, message: str, log_id: str = ""
    ) -> None:
        super().__init__(status, code, message, log_id)
        self.open_id = open_id


class RetriesExhausted(DisplayApiError):
    """Still throttled or failing after the policy's attempts."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # per call, counting the first
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    refresh_margin_s: float = 600.0  # refresh this long before the access token expires
    timeout_s: float = 30.0


@dataclass
class ClientStats:
    """What the client did, for tests and metrics."""

    requests: int = 0
    throttled: int = 0
    server_errors: int = 0
    retries: int = 0
    waited_s: float = 0.0
    refreshes: int = 0
    delays: list[float] = field(default_factory=list)


class DisplayApiClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        client_key: str,
        client_secret: str,
        tokens: TokenStore,
        base_url: str = DEFAULT_BASE_URL,
        policy: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._client_key, self._client_secret = client_key, client_secret
        self._tokens = tokens
        self._base_url = base_url.rstrip("/")
        self.policy = policy
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self.stats = ClientStats()

    # --- public API -----------------------------------------------------------------------

    async def exchange_code(self, code: str, redirect_uri: str) -> CreatorTokens:
        """The authorisation callback's code for the creator's first token pair (stored)."""
        status, body = await self._send(
            TOKEN_PATH,
            data={
                "client_key": self._client_key,
                "client_secret": self._client_secret,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
            },
        )
        if status != 200 or "access_token" not in body:
            raise _oauth_error(status, body)
        tokens = CreatorTokens.from_token_response(body, self._clock())
        await self._tokens.save(tokens)
        return tokens

    async def list_videos(self, open_id: str) -> list[Video]:
        """Every public video of the creator, newest first, following the cursor to the end."""
        videos: list[Video] = []
        cursor: int | None = None
        while True:
            body: dict[str, Any] = {"max_count": MAX_IDS_PER_QUERY}
            if cursor is not None:
                body["cursor"] = cursor
            data = await self._call(open_id, LIST_PATH, LIST_FIELDS, body)
            videos.extend(
                Video(
                    id=str(v["id"]),
                    create_time=int(v.get("create_time", 0)),
                    title=str(v.get("title", "")),
                    share_url=str(v.get("share_url", "")),
                )
                for v in data.get("videos", [])
            )
            if not data.get("has_more"):
                return videos
            next_cursor = int(data["cursor"])
            if next_cursor == cursor:  # a cursor that does not move would loop forever
                raise DisplayApiError(200, "cursor_stuck", f"cursor stayed at {cursor}")
            cursor = next_cursor

    async def query_stats(self, open_id: str, video_ids: Sequence[str]) -> list[VideoStats]:
        """Counts of the given videos, asked 20 at a time; videos that are no longer the
        creator's (deleted, made private) are absent from the result."""
        found: list[VideoStats] = []
        for start in range(0, len(video_ids), MAX_IDS_PER_QUERY):
            chunk = list(video_ids[start : start + MAX_IDS_PER_QUERY])
            data = await self._call(
                open_id, QUERY_PATH, STATS_FIELDS, {"filters": {"video_ids": chunk}}
            )
            observed_at = self._clock()
            found.extend(
                VideoStats(
                    id=str(v["id"]),
                    create_time=int(v.get("create_time", 0)),
                    view_count=int(v.get("view_count", 0)),
                    like_count=int(v.get("like_count", 0)),
                    comment_count=int(v.get("comment_count", 0)),
                    share_count=int(v.get("share_count", 0)),
                    observed_at=observed_at,
                )
                for v in data.get("videos", [])
            )
        return found

    async def follower_count(self, open_id: str) -> int | None:
        """The creator's followers (`/v2/user/info/`, scope `user.info.stats`); None when the
        creator did not grant that scope (their videos are still collected)."""
        try:
            data = await self._call(open_id, USER_INFO_PATH, USER_FIELDS, None)
        except ReauthorisationRequired as refused:
            if refused.code == "scope_not_authorized":
                return None
            raise
        user = data.get("user")
        count = user.get("follower_count") if isinstance(user, dict) else None
        return int(count) if isinstance(count, int) and count >= 0 else None

    # --- tokens -----------------------------------------------------------------------------

    async def _usable_tokens(self, open_id: str) -> CreatorTokens:
        tokens = await self._tokens.load(open_id)
        if tokens is None:
            raise ReauthorisationRequired(open_id, 0, "no_tokens", "creator never authorised")
        if tokens.access_expires_at - self.policy.refresh_margin_s > self._clock():
            return tokens
        return await self._refresh(open_id, stale_access_token=tokens.access_token)

    async def _refresh(self, open_id: str, stale_access_token: str) -> CreatorTokens:
        lock = self._refresh_locks.setdefault(open_id, asyncio.Lock())
        async with lock:
            tokens = await self._tokens.load(open_id)
            if tokens is None:
                raise ReauthorisationRequired(open_id, 0, "no_tokens", "creator never authorised")
            if tokens.access_token != stale_access_token:
                return tokens  # another call refreshed while this one waited for the lock
            if tokens.refresh_expires_at <= self._clock():
                raise ReauthorisationRequired(
                    open_id, 0, "refresh_token_expired", "refresh token ran out"
                )
            self.stats.refreshes += 1
            status, body = await self._send(
                TOKEN_PATH,
                data={
                    "client_key": self._client_key,
                    "client_secret": self._client_secret,
                    "grant_type": "refresh_token",
                    "refresh_token": tokens.refresh_token,
                },
            )
            if status == 200 and "access_token" in body:
                fresh = CreatorTokens.from_token_response(body, self._clock())
                # TikTok may hand back a new refresh token: always keep what came back.
                fresh = replace(fresh, open_id=open_id)
                await self._tokens.save(fresh)
                return fresh
            error = _oauth_error(status, body)
            if error.code == "invalid_grant":
                raise ReauthorisationRequired(
                    open_id, status, error.code, error.message, error.log_id
                )
            raise error

    # --- calls ------------------------------------------------------------------------------

    async def _call(
        self, open_id: str, path: str, fields: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """POST with a JSON body, or GET when `body` is None."""
        tokens = await self._usable_tokens(open_id)
        refreshed_after_rejection = False
        while True:
            status, answer = await self._send(
                path,
                method="GET" if body is None else "POST",
                params={"fields": fields},
                json=body,
                headers={"Authorization": f"Bearer {tokens.access_token}"},
            )
            found = answer.get("error")
            error: dict[str, Any] = found if isinstance(found, dict) else {}
            code = str(error.get("code", ""))
            if status == 200 and code in ("ok", ""):
                data = answer.get("data")
                return data if isinstance(data, dict) else {}
            message, log_id = str(error.get("message", "")), str(error.get("log_id", ""))
            if code == "access_token_invalid" and not refreshed_after_rejection:
                refreshed_after_rejection = True
                tokens = await self._refresh(open_id, stale_access_token=tokens.access_token)
                continue
            if code == "scope_not_authorized":
                raise ReauthorisationRequired(open_id, status, code, message, log_id)
            raise DisplayApiError(status, code or "http_error", message, log_id)

    async def _send(
        self,
        path: str,
        *,
        method: str = "POST",
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST until the answer is neither throttled nor transient (or attempts run out)."""
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            self.stats.requests += 1
            try:
                async with self._session.request(
                    method,
                    self._base_url + path,
                    params=params,
                    json=json,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
                ) as response:
                    status = response.status
                    try:
                        answer = await response.json(content_type=None)
                    except ValueError:
                        answer = None
                    if not isinstance(answer, dict):
                        answer = {}
                    retry_after = _seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as failure:
                status, answer = 0, {"error": {"code": "transport", "message": repr(failure)}}
            transient = status == 0 or status == 429 or status >= 500
            if not transient:
                return status, answer
            if status == 429:
                self.stats.throttled += 1
            elif status >= 500:
                self.stats.server_errors += 1
            if attempt >= self.policy.max_attempts:
                error = answer.get("error")
                code = str(error.get("code", "")) if isinstance(error, dict) else ""
                raise RetriesExhausted(
                    status, code or "retries_exhausted", f"{path} after {attempt} attempts"
                )
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            self.stats.retries += 1
            self.stats.delays.append(delay)
            self.stats.waited_s += delay
            await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        ceiling = min(self.policy.max_delay_s, self.policy.base_delay_s * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)


def _seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds (the HTTP-date form is not used by TikTok; ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _oauth_error(status: int, body: dict[str, Any]) -> DisplayApiError:
    return DisplayApiError(
        status,
        str(body.get("error", "")) or "oauth_error",
        str(body.get("error_description", "")),
        str(body.get("log_id", "")),
    )
