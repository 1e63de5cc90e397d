"""What an operator asks of the collector over gRPC: connect a creator who authorised the app,
map a video to the SKUs it features, and see what is being collected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pulsestock.collect.adapters.display_api import CreatorTokens, DisplayApiError
from pulsestock.collect.adapters.postgres import (
    CollectRepository,
    Creator,
    StoredVideo,
    TokenKeyMissing,
)
from pulsestock.collect.application.collector import Collector
from pulsestock.collect.domain.videos import check_skus
from pulsestock.errors import PreconditionFailed, Unavailable, Validator
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1.common_pb2 import Channel

ExchangeCode = Callable[[str, str], Awaitable[CreatorTokens]]


@dataclass(frozen=True)
class VideoView:
    video: StoredVideo
    skus: list[str]
    interval_minutes: float
    rising: bool
    pulse_active: bool


class CollectCommands:
    def __init__(
        self,
        repository: CollectRepository,
        collector: Collector,
        exchange_code: ExchangeCode | None,
        reload: asyncio.Event,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repository = repository
        self.collector = collector
        self.exchange_code = exchange_code
        self.reload = reload
        self.clock = clock

    async def connect_creator(
        self,
        code: str,
        redirect_uri: str,
        default_skus: Sequence[str],
        seller_id: str,
        channel: int,
    ) -> str:
        v = Validator()
        v.check(bool(code), "code", "is required (the code TikTok's redirect brought)")
        v.check(bool(redirect_uri), "redirect_uri", "is required (the one the code was issued to)")
        check_skus(v, default_skus, "default_skus", required=False)
        v.check(not seller_id or valid_id(seller_id), "seller_id", f"{ID_RULE} (or empty)")
        v.check(channel in Channel.values(), "channel", "unknown channel (unset: TikTok Shop)")
        v.raise_if_invalid()
        if self.exchange_code is None:
            raise PreconditionFailed("the TikTok Display API is not configured (TIKTOK_CLIENT_KEY)")
        try:
            tokens = await self.exchange_code(code, redirect_uri)
        except DisplayApiError as refused:
            if refused.status == 0 or refused.status >= 500 or refused.status == 429:
                raise Unavailable(f"TikTok's token endpoint: {refused.code}") from None
            raise PreconditionFailed(f"TikTok refused the code: {refused.code}") from None
        try:
            await self.repository.connect_creator(
                tokens,
                default_skus,
                seller_id,
                channel or Channel.CHANNEL_TIKTOK_SHOP,
                self.clock(),
            )
        except TokenKeyMissing as missing:
            raise PreconditionFailed(str(missing)) from None
        self.reload.set()
        return tokens.open_id

    async def map_video(self, video_id: str, skus: Sequence[str]) -> bool:
        v = Validator()
        v.check(valid_id(video_id), "video_id", ID_RULE)
        check_skus(v, skus, "skus", required=True)
        v.raise_if_invalid()
        changed = await self.repository.map_video(video_id, skus, self.clock())
        await self.collector.mapping_changed(video_id, skus)
        return changed

    async def list(self, open_id: str) -> tuple[list[Creator], list[VideoView]]:
        creators = [
            c for c in await self.repository.creators() if not open_id or c.open_id == open_id
        ]
        views = []
        for video in await self.repository.videos(open_id or None):
            scheduler = self.collector.scheduler_of(video.open_id)
            interval, rising = 0.0, False  # not polled: no SKU, or the creator is gone
            if scheduler is not None and scheduler.follows(video.video_id):
                interval = scheduler.interval_of(video.video_id) * self.collector.minutes_per_tick
                rising = scheduler.is_rising(video.video_id)
            views.append(
                VideoView(
                    video,
                    self.collector.skus_of(video.video_id),
                    interval,
                    rising,
                    self.collector.pulse_active(video.video_id),
                )
            )
        return creators, views
