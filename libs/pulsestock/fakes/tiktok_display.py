"""TikTok Display API v2 and Login Kit OAuth v2: the token endpoint, `/v2/video/list/` and
`/v2/video/query/`, with token expiry, revoked authorisations and the per-endpoint rate limit.

What the documentation says (and this fake does):

- Token endpoint, https://developers.tiktok.com/doc/oauth-user-access-token-management:
  `POST /v2/oauth/token/`, `application/x-www-form-urlencoded` body with `client_key`,
  `client_secret`, `grant_type` (`authorization_code` with `code` and `redirect_uri`, or
  `refresh_token` with `refresh_token`). Answer: `open_id`, `scope` (comma-separated),
  `access_token`, `expires_in`, `refresh_token`, `refresh_expires_in`, `token_type` ("Bearer").
  The access token lives 24 hours (86400 s), the refresh token 365 days after its first
  issuance (https://developers.tiktok.com/doc/minis-oauth states both lifetimes).
- OAuth errors, https://developers.tiktok.com/doc/oauth-error-handling: a body of `error`,
  `error_description`, `log_id`; `invalid_grant` when the code or refresh token "is invalid,
  expired, revoked ..."; `invalid_client`, `invalid_request`, `unsupported_grant_type`.
- List, https://developers.tiktok.com/doc/tiktok-api-v2-video-list: `POST /v2/video/list/
  ?fields=...`, `Authorization: Bearer <token>`, JSON body `{max_count (default 10, max 20),
  cursor}`; the user's public videos sorted by `create_time` descending; answer `{data: {videos,
  cursor, has_more}, error}`. The cursor is a UTC timestamp in milliseconds: the next page holds
  the videos posted before it. Scope `video.list`.
- Query, https://developers.tiktok.com/doc/tiktok-api-v2-video-query: `POST /v2/video/query/
  ?fields=...`, body `{filters: {video_ids: [...]}}`, "up to 20 video IDs"; only the videos that
  belong to the user come back.
- Video object, https://developers.tiktok.com/doc/tiktok-api-v2-video-object: id, create_time
  (seconds), title, like_count, comment_count, share_count, view_count, ...
- Errors, https://developers.tiktok.com/doc/tiktok-api-v2-error-handling: `error: {code, message,
  log_id}` with code `ok` on success; `access_token_invalid` 401, `scope_not_authorized` 401,
  `invalid_params` 400, `rate_limit_exceeded` 429, `internal_error` 500.
- User info, https://developers.tiktok.com/doc/tiktok-api-v2-get-user-info: `GET
  /v2/user/info/?fields=...`, `Authorization: Bearer <token>`; answer `{data: {user: {...}},
  error}`; `follower_count` (and the other counts) need scope `user.info.stats`, the rest
  `user.info.basic`.
- Rate limits, https://developers.tiktok.com/doc/tiktok-api-v2-rate-limit: 600 requests per
  endpoint over a one-minute sliding window; beyond it HTTP 429 with `rate_limit_exceeded`.

What the documentation does not say (and this fake assumes):

- Which key the rate limit counts by: here per authorised user (the token's `open_id`) and
  endpoint, so refreshing a token does not reset the window. The window and the limit are
  constructor arguments (tests shrink them). No `Retry-After` header is documented; by default
  none is sent (`retry_after_header=True` sends the seconds until the window frees).
- HTTP status of OAuth errors: RFC 6749 §5.2 (400, 401 for `invalid_client`).
- Whether a refresh rotates the refresh token: here it does (the old one stops working) and the
  new one keeps the first issuance's expiry, so a client that does not store what it gets back
  fails loudly.
- `max_count` above 20, more than 20 (or no) video ids, a missing or unknown field: 400
  `invalid_params`. The cursor sorts at millisecond precision; the fake keeps each video's
  posting instant unique to the millisecond so a page boundary never splits a tie.
- An access token of a user who revoked the app is `access_token_invalid`, like an expired one.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest

TOKEN_PATH = "/v2/oauth/token/"
LIST_PATH = "/v2/video/list/"
QUERY_PATH = "/v2/video/query/"
USER_INFO_PATH = "/v2/user/info/"
USER_FIELDS = frozenset(
    {"open_id", "union_id", "avatar_url", "display_name", "bio_description", "follower_count",
     "following_count", "likes_count", "video_count"}
)  # fmt: skip
ACCESS_TTL_S = 86_400
REFRESH_TTL_S = 365 * 86_400
MAX_VIDEOS_PER_CALL = 20
VIDEO_FIELDS = frozenset(
    {
        "id",
        "create_time",
        "cover_image_url",
        "share_url",
        "video_description",
        "duration",
        "height",
        "width",
        "title",
        "embed_html",
        "embed_link",
        "like_count",
        "comment_count",
        "share_count",
        "view_count",
    }
)


@dataclass(frozen=True)
class ViewScript:
    """Views a video gains by itself, in wall-clock time (for `make run` and end-to-end
    tests): `base_per_minute` from `start`; from `surge_after_s` the rate ramps linearly over
    `ramp_s` to `surge_multiplier` times the base, then decays back towards the base with
    `half_life_s`. Likes, shares and comments follow at 1/12, 1/60 and 1/90 of the views."""

    start: float
    base_per_minute: float
    surge_after_s: float | None = None
    surge_multiplier: float = 50.0
    ramp_s: float = 300.0
    half_life_s: float = 3600.0

    def rate_per_second(self, t: float) -> float:
        base = self.base_per_minute / 60
        if self.surge_after_s is None or t < self.start + self.surge_after_s:
            return base
        since = t - self.start - self.surge_after_s
        extra = (self.surge_multiplier - 1) * base
        if since < self.ramp_s:
            return base + extra * since / self.ramp_s
        return base + extra * float(0.5 ** ((since - self.ramp_s) / self.half_life_s))


@dataclass
class FakeVideo:
    id: str
    posted_at_ms: int
    title: str = ""
    view_count: int = 0
    like_count: int = 0
    comment_count: int = 0
    share_count: int = 0
    script: ViewScript | None = None
    _scripted_views: float = 0.0
    _scripted_until: float = 0.0

    def advance(self, now: float) -> None:
        """Add the views the script gave since the last read (1-second steps)."""
        script = self.script
        if script is None:
            return
        t = max(self._scripted_until, script.start)
        gained = 0.0
        while t < now:
            step = min(1.0, now - t)
            gained += script.rate_per_second(t + step / 2) * step
            t += step
        self._scripted_until = max(t, self._scripted_until)
        before = int(self._scripted_views)
        self._scripted_views += gained
        new_views = int(self._scripted_views) - before
        total = int(self._scripted_views)
        self.view_count += new_views
        self.like_count += total // 12 - before // 12
        self.share_count += total // 60 - before // 60
        self.comment_count += total // 90 - before // 90

    def as_object(self, fields: list[str]) -> dict[str, Any]:
        everything: dict[str, Any] = {
            "id": self.id,
            "create_time": self.posted_at_ms // 1000,
            "cover_image_url": f"https://p16.fake.tiktokcdn.com/{self.id}.jpeg",
            "share_url": f"https://www.tiktok.com/@fake/video/{self.id}",
            "video_description": self.title,
            "duration": 15,
            "height": 1920,
            "width": 1080,
            "title": self.title,
            "embed_html": "",
            "embed_link": f"https://www.tiktok.com/embed/v2/{self.id}",
            "like_count": self.like_count,
            "comment_count": self.comment_count,
            "share_count": self.share_count,
            "view_count": self.view_count,
        }
        return {name: everything[name] for name in fields}


@dataclass
class FakeCreator:
    open_id: str
    scopes: frozenset[str]
    videos: dict[str, FakeVideo] = field(default_factory=dict)
    revoked: bool = False
    follower_count: int = 0


@dataclass
class _Grant:
    open_id: str
    expires_at: float  # wall clock, like the lifetimes TikTok hands out


class FakeTikTokDisplay(FakeChannel):
    name = "tiktok_display"

    def __init__(
        self,
        client_key: str = "fake-display-client-key",
        client_secret: str = "fake-display-client-secret",
        access_ttl_s: float = ACCESS_TTL_S,
        refresh_ttl_s: float = REFRESH_TTL_S,
        rate_limit: int = 600,
        rate_window_s: float = 60.0,
        retry_after_header: bool = False,
    ) -> None:
        super().__init__()
        self.client_key, self.client_secret = client_key, client_secret
        self.access_ttl_s, self.refresh_ttl_s = access_ttl_s, refresh_ttl_s
        self.rate_limit, self.rate_window_s = rate_limit, rate_window_s
        self.retry_after_header = retry_after_header
        self.creators: dict[str, FakeCreator] = {}
        self._codes: dict[str, str] = {}  # authorization code -> open_id
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        # Accepted calls per (open_id, path), monotonic instants within the sliding window.
        self._window: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._next_video = 7_300_000_000_000_000_000

    # --- what a test (or the dev stack) controls -----------------------------------------

    def add_creator(
        self,
        open_id: str | None = None,
        scopes: tuple[str, ...] = ("user.info.basic", "video.list"),
    ) -> str:
        """A creator on TikTok; returns their open_id."""
        open_id = open_id or f"fake-open-{uuid.uuid4().hex[:12]}"
        self.creators[open_id] = FakeCreator(open_id, frozenset(scopes))
        return open_id

    def authorization_code(self, open_id: str) -> str:
        """What the authorize redirect would hand the app once the creator consents."""
        code = f"code.{secrets.token_hex(8)}"
        self._codes[code] = open_id
        self.creators[open_id].revoked = False
        return code

    def issue_tokens(self, open_id: str) -> dict[str, Any]:
        """A fresh token pair, as the token endpoint answers (skips the redirect dance)."""
        self.creators[open_id].revoked = False
        return self._issue(open_id, refresh_expires_at=time.time() + self.refresh_ttl_s)

    def add_video(
        self,
        open_id: str,
        video_id: str | None = None,
        posted_at: float | None = None,
        title: str = "",
        view_count: int = 0,
        script: ViewScript | None = None,
    ) -> FakeVideo:
        creator = self.creators[open_id]
        if video_id is None:
            self._next_video += 1
            video_id = str(self._next_video)
        posted_ms = int((time.time() if posted_at is None else posted_at) * 1000)
        taken = {video.posted_at_ms for video in creator.videos.values()}
        while posted_ms in taken:  # unique to the ms: see the module docstring
            posted_ms -= 1
        video = FakeVideo(video_id, posted_ms, title=title, view_count=view_count, script=script)
        creator.videos[video_id] = video
        return video

    def video(self, video_id: str) -> FakeVideo:
        for creator in self.creators.values():
            if video_id in creator.videos:
                return creator.videos[video_id]
        raise KeyError(video_id)

    def grow(
        self, video_id: str, views: int = 0, likes: int = 0, comments: int = 0, shares: int = 0
    ) -> FakeVideo:
        video = self.video(video_id)
        video.view_count += views
        video.like_count += likes
        video.comment_count += comments
        video.share_count += shares
        return video

    def revoke(self, open_id: str) -> None:
        """The creator removes the app's access: every token they granted stops working."""
        self.creators[open_id].revoked = True
        for grants in (self._access, self._refresh):
            for token in [t for t, g in grants.items() if g.open_id == open_id]:
                del grants[token]

    def expire_access_tokens(self, open_id: str) -> None:
        """Let the creator's access tokens run out now (the refresh token still works)."""
        for grant in self._access.values():
            if grant.open_id == open_id:
                grant.expires_at = time.time() - 1

    def answered(self, path: str, status: int | None = None) -> list[RecordedRequest]:
        """Calls to `path` (answered with `status`, if given), oldest first."""
        return [
            r
            for r in self.requests
            if r.path == path and r.status != 0 and (status is None or r.status == status)
        ]

    def refreshes(self) -> list[RecordedRequest]:
        return [r for r in self.answered(TOKEN_PATH) if b"grant_type=refresh_token" in r.body]

    # --- FakeChannel ----------------------------------------------------------------------

    def quantity_of(self, sku: str) -> int | None:
        return None  # no stock here: the Display API only reads content

    def is_write(self, request: RecordedRequest) -> bool:
        return False

    def throttled(self, retry_after: float) -> web.Response:
        """Injected throttling (Faults) answers in the documented shape too."""
        return self._api_error(
            429,
            "rate_limit_exceeded",
            "The API rate limit was exceeded. Please try again later.",
            headers={"Retry-After": f"{max(1, math.ceil(retry_after))}"},
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(LIST_PATH, self.video_list)
        app.router.add_post(QUERY_PATH, self.video_query)
        app.router.add_get(USER_INFO_PATH, self.user_info)
        app.router.add_post("/_fake/display/creators", self._control_add_creator)
        app.router.add_post("/_fake/display/videos", self._control_add_video)
        app.router.add_post("/_fake/display/videos/{video_id}/grow", self._control_grow)
        app.router.add_post("/_fake/display/creators/{open_id}/revoke", self._control_revoke)

    # --- OAuth ------------------------------------------------------------------------------

    def _issue(self, open_id: str, refresh_expires_at: float) -> dict[str, Any]:
        now = time.time()
        access, refresh = f"act.{secrets.token_hex(16)}", f"rft.{secrets.token_hex(16)}"
        self._access[access] = _Grant(open_id, now + self.access_ttl_s)
        self._refresh[refresh] = _Grant(open_id, refresh_expires_at)
        return {
            "access_token": access,
            "expires_in": round(self.access_ttl_s),
            "open_id": open_id,
            "refresh_expires_in": max(0, round(refresh_expires_at - now)),
            "refresh_token": refresh,
            "scope": ",".join(sorted(self.creators[open_id].scopes)),
            "token_type": "Bearer",
        }

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> web.Response:
        return web.json_response(
            {"error": error, "error_description": description, "log_id": _log_id()},
            status=status,
        )

    async def token(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return self._oauth_error(400, "invalid_request", "Content-Type must be form-encoded")
        form = await request.post()
        if (
            form.get("client_key") != self.client_key
            or form.get("client_secret") != self.client_secret
        ):
            return self._oauth_error(401, "invalid_client", "Client key or secret is invalid")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            code = str(form.get("code", ""))
            if not form.get("redirect_uri"):
                return self._oauth_error(400, "invalid_request", "redirect_uri is required")
            open_id = self._codes.pop(code, None)  # a code is good once
            if open_id is None or self.creators[open_id].revoked:
                return self._oauth_error(400, "invalid_grant", "Authorization code is invalid")
            return web.json_response(
                self._issue(open_id, refresh_expires_at=time.time() + self.refresh_ttl_s)
            )
        if grant_type == "refresh_token":
            grant = self._refresh.pop(str(form.get("refresh_token", "")), None)
            if grant is None or grant.expires_at <= time.time():
                return self._oauth_error(
                    400, "invalid_grant", "Refresh token is invalid, expired or revoked"
                )
            return web.json_response(self._issue(grant.open_id, grant.expires_at))
        return self._oauth_error(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

    # --- Display API --------------------------------------------------------------------

    @staticmethod
    def _api_error(
        status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            {"data": {}, "error": {"code": code, "message": message, "log_id": _log_id()}},
            status=status,
            headers=headers,
        )

    @staticmethod
    def _ok(data: dict[str, Any]) -> web.Response:
        return web.json_response(
            {"data": data, "error": {"code": "ok", "message": "", "log_id": _log_id()}}
        )

    def _authorise(
        self, request: web.Request, scope: str = "video.list"
    ) -> FakeCreator | web.Response:
        header = request.headers.get("Authorization", "")
        grant = (
            self._access.get(header.removeprefix("Bearer "))
            if header.startswith("Bearer ")
            else None
        )
        if grant is None or grant.expires_at <= time.time():
            return self._api_error(
                401,
                "access_token_invalid",
                "The access token is invalid or not found in the request.",
            )
        creator = self.creators[grant.open_id]
        if scope not in creator.scopes:
            return self._api_error(
                401,
                "scope_not_authorized",
                "The user did not authorize the scope required for completing this request.",
            )
        window = self._window[(creator.open_id, request.path)]
        now = time.monotonic()
        while window and window[0] <= now - self.rate_window_s:
            window.popleft()
        if len(window) >= self.rate_limit:
            wait = window[0] + self.rate_window_s - now
            return self._api_error(
                429,
                "rate_limit_exceeded",
                "The API rate limit was exceeded. Please try again later.",
                headers={"Retry-After": f"{max(1, math.ceil(wait))}"}
                if self.retry_after_header
                else None,
            )
        window.append(now)
        return creator

    @staticmethod
    def _fields(request: web.Request) -> list[str] | None:
        fields = [f for f in request.query.get("fields", "").split(",") if f]
        if not fields or any(f not in VIDEO_FIELDS for f in fields):
            return None
        return fields

    async def _json_body(self, request: web.Request) -> dict[str, Any] | None:
        if request.content_type != "application/json":
            return None
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def video_list(self, request: web.Request) -> web.Response:
        found = self._authorise(request)
        if isinstance(found, web.Response):
            return found
        fields, body = self._fields(request), await self._json_body(request)
        if fields is None or body is None:
            return self._api_error(400, "invalid_params", "fields or body is invalid")
        try:
            max_count = int(body.get("max_count", 10))
            cursor = int(body.get("cursor") or time.time() * 1000 + 1)
        except (TypeError, ValueError):
            return self._api_error(400, "invalid_params", "max_count or cursor is invalid")
        if not 1 <= max_count <= MAX_VIDEOS_PER_CALL:
            return self._api_error(400, "invalid_params", "max_count must be 1-20")
        older = sorted(
            (v for v in found.videos.values() if v.posted_at_ms < cursor),
            key=lambda v: v.posted_at_ms,
            reverse=True,
        )
        page = older[:max_count]
        for video in page:
            video.advance(time.time())
        return self._ok(
            {
                "videos": [video.as_object(fields) for video in page],
                "cursor": page[-1].posted_at_ms if page else cursor,
                "has_more": len(older) > max_count,
            }
        )

    async def video_query(self, request: web.Request) -> web.Response:
        found = self._authorise(request)
        if isinstance(found, web.Response):
            return found
        fields, body = self._fields(request), await self._json_body(request)
        if fields is None or body is None:
            return self._api_error(400, "invalid_params", "fields or body is invalid")
        filters = body.get("filters")
        ids = filters.get("video_ids") if isinstance(filters, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return self._api_error(400, "invalid_params", "filters.video_ids is required")
        if len(ids) > MAX_VIDEOS_PER_CALL:
            return self._api_error(
                400, "invalid_params", f"at most {MAX_VIDEOS_PER_CALL} video_ids per request"
            )
        now = time.time()
        videos = []
        for video_id in ids:
            video = found.videos.get(video_id)
            if video is not None:
                video.advance(now)
                videos.append(video.as_object(fields))
        return self._ok({"videos": videos})

    async def user_info(self, request: web.Request) -> web.Response:
        """`GET /v2/user/info/?fields=...`; follower_count needs scope user.info.stats."""
        fields = [f for f in request.query.get("fields", "").split(",") if f]
        if not fields or any(f not in USER_FIELDS for f in fields):
            return self._api_error(400, "invalid_params", "fields is invalid")
        stats = {"follower_count", "following_count", "likes_count", "video_count"}
        scope = "user.info.stats" if stats & set(fields) else "user.info.basic"
        found = self._authorise(request, scope)
        if isinstance(found, web.Response):
            return found
        everything: dict[str, Any] = {
            "open_id": found.open_id,
            "union_id": f"union-{found.open_id}",
            "avatar_url": f"https://p16.fake.tiktokcdn.com/{found.open_id}.jpeg",
            "display_name": found.open_id,
            "bio_description": "",
            "follower_count": found.follower_count,
            "following_count": 0,
            "likes_count": 0,
            "video_count": len(found.videos),
        }
        return self._ok({"user": {name: everything[name] for name in fields}})

    # --- control API (for the dev stack, over HTTP) -------------------------------------

    async def _control_add_creator(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        open_id = self.add_creator(body.get("open_id"))
        return web.json_response(
            {"open_id": open_id, "code": self.authorization_code(open_id)}
            | {"tokens": self.issue_tokens(open_id)}
        )

    async def _control_add_video(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        video = self.add_video(
            body["open_id"],
            body.get("video_id"),
            body.get("posted_at"),
            body.get("title", ""),
            int(body.get("view_count", 0)),
        )
        return web.json_response({"id": video.id, "create_time": video.posted_at_ms // 1000})

    async def _control_grow(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        video = self.grow(
            request.match_info["video_id"],
            int(body.get("views", 0)),
            int(body.get("likes", 0)),
            int(body.get("comments", 0)),
            int(body.get("shares", 0)),
        )
        return web.json_response(video.as_object(["id", "view_count", "like_count"]))

    async def _control_revoke(self, request: web.Request) -> web.Response:
        self.revoke(request.match_info["open_id"])
        return web.json_response({"ok": True})


def _log_id() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:18].upper()


DEMO_CREATOR = "fake-open-demo-creator"


def seed_demo_creator(fake: FakeTikTokDisplay, surge_after_s: float = 720.0) -> dict[str, Any]:
    """A creator for `make run`: one video that stays cold and one that takes off
    `surge_after_s` after now (50x its base rate over 5 minutes, fading with a 1 h half-life).
    Returns what the collector's COLLECT_CREATORS_FILE holds for them."""
    now = time.time()
    fake.add_creator(DEMO_CREATOR, scopes=("user.info.basic", "user.info.stats", "video.list"))
    fake.creators[DEMO_CREATOR].follower_count = 250_000
    run = str(int(now))  # fresh ids each start: the fake forgets its counts when it stops
    fake.add_video(
        DEMO_CREATOR,
        video_id=f"73{run}01",
        posted_at=now - 60,
        title="unboxing the demo mug",
        script=ViewScript(now, base_per_minute=120.0),
    )
    fake.add_video(
        DEMO_CREATOR,
        video_id=f"73{run}02",
        posted_at=now - 30,
        title="this mug keeps coffee hot for 12 hours #tiktokmademebuyit",
        script=ViewScript(now, base_per_minute=240.0, surge_after_s=surge_after_s),
    )
    return {"tokens": fake.issue_tokens(DEMO_CREATOR), "issued_at": now}
