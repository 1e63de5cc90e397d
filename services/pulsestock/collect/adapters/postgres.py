"""The collector's tables: creators (with their grant sealed), operator mappings, the videos'
checkpoints and tailed files' offsets. Creator and mapping changes are appended as events in
the same transaction as their rows, so the tables are projections with an audit trail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from cryptography.fernet import Fernet, InvalidToken
from pulsestock.clock import timestamp
from pulsestock.collect.adapters.display_api import CreatorTokens
from pulsestock.collect.domain.polling import VideoSample
from pulsestock.collect.domain.videos import Registration
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.v1 import collect_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel


class TokenKeyMissing(Exception):
    """No COLLECT_TOKEN_KEY: grants cannot be stored (they are never stored in the clear)."""


@dataclass(frozen=True)
class Creator:
    open_id: str
    default_skus: tuple[str, ...]
    seller_id: str
    channel: int
    needs_reauthorisation: bool
    reason: str
    updated_at: datetime


@dataclass(frozen=True)
class StoredVideo:
    video_id: str
    open_id: str
    created_at: datetime
    registered_skus: tuple[str, ...] | None
    samples: tuple[VideoSample, ...]  # `at` in Unix seconds


@dataclass(frozen=True)
class FileOffset:
    byte_offset: int
    next_line: int
    header: tuple[str, ...] | None


CollectEvent = ev.CreatorConnected | ev.CreatorDisconnected | ev.VideoMapped


def _samples_json(samples: Sequence[VideoSample]) -> str:
    """[[unix_s, views, likes, shares], ...]."""
    return json.dumps([[s.at, s.views, s.likes, s.shares] for s in samples])


class CollectRepository:
    def __init__(self, store: EventStore, token_key: str | None) -> None:
        self.store = store
        self.pool: asyncpg.Pool = store.pool
        self._fernet = Fernet(token_key.encode()) if token_key else None

    # --- creators ------------------------------------------------------------------------

    async def connect_creator(
        self,
        tokens: CreatorTokens,
        default_skus: Sequence[str],
        seller_id: str,
        channel: int,
        now: datetime,
    ) -> None:
        sealed = self._seal(tokens)
        event = ev.CreatorConnected(
            open_id=tokens.open_id,
            default_skus=sorted(set(default_skus)),
            seller_id=seller_id,
            channel=Channel.ValueType(channel),
            connected_at=timestamp(now),
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO creators (open_id, default_skus, seller_id, channel, grant_sealed,"
                " needs_reauthorisation, reason, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, false, '', $6) ON CONFLICT (open_id) DO UPDATE SET"
                " default_skus = excluded.default_skus, seller_id = excluded.seller_id,"
                " channel = excluded.channel, grant_sealed = excluded.grant_sealed,"
                " needs_reauthorisation = false, reason = '', updated_at = excluded.updated_at",
                tokens.open_id,
                list(event.default_skus),
                seller_id,
                channel,
                sealed,
                now,
            )
            await self._append(conn, f"creator-{tokens.open_id}", event)

    async def disconnect_creator(self, open_id: str, reason: str, now: datetime) -> bool:
        """Mark the creator's grant as gone (once); False when it already was."""
        event = ev.CreatorDisconnected(
            open_id=open_id, reason=reason, disconnected_at=timestamp(now)
        )
        async with self.pool.acquire() as conn, conn.transaction():
            changed = await conn.fetchval(
                "UPDATE creators SET needs_reauthorisation = true, reason = $2, updated_at = $3"
                " WHERE open_id = $1 AND NOT needs_reauthorisation RETURNING true",
                open_id,
                reason,
                now,
            )
            if changed:
                await self._append(conn, f"creator-{open_id}", event)
        return bool(changed)

    async def creators(self) -> list[Creator]:
        rows = await self.pool.fetch("SELECT * FROM creators ORDER BY open_id")
        return [
            Creator(
                r["open_id"],
                tuple(r["default_skus"]),
                r["seller_id"],
                r["channel"],
                r["needs_reauthorisation"],
                r["reason"],
                r["updated_at"],
            )
            for r in rows
        ]

    # --- TokenStore -----------------------------------------------------------------------

    async def load(self, open_id: str) -> CreatorTokens | None:
        sealed = await self.pool.fetchval(
            "SELECT grant_sealed FROM creators WHERE open_id = $1", open_id
        )
        if sealed is None or self._fernet is None:
            return None
        try:
            fields = json.loads(self._fernet.decrypt(sealed))
        except InvalidToken:
            return None  # sealed under another key: the creator must authorise again
        return CreatorTokens(**fields)

    async def save(self, tokens: CreatorTokens) -> None:
        await self.pool.execute(
            "UPDATE creators SET grant_sealed = $2, updated_at = now() WHERE open_id = $1",
            tokens.open_id,
            self._seal(tokens),
        )

    def _seal(self, tokens: CreatorTokens) -> bytes:
        if self._fernet is None:
            raise TokenKeyMissing("COLLECT_TOKEN_KEY is not set: grants are never stored in clear")
        plain = {
            "open_id": tokens.open_id,
            "access_token": tokens.access_token,
            "access_expires_at": tokens.access_expires_at,
            "refresh_token": tokens.refresh_token,
            "refresh_expires_at": tokens.refresh_expires_at,
            "scope": tokens.scope,
        }
        return self._fernet.encrypt(json.dumps(plain).encode())

    # --- mappings -------------------------------------------------------------------------

    async def map_video(self, video_id: str, skus: Sequence[str], now: datetime) -> bool:
        wanted = sorted(set(skus))
        event = ev.VideoMapped(video_id=video_id, skus=wanted, mapped_at=timestamp(now))
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT skus FROM video_skus WHERE video_id = $1 FOR UPDATE", video_id
            )
            if current is not None and list(current) == wanted:
                return False
            await conn.execute(
                "INSERT INTO video_skus (video_id, skus) VALUES ($1, $2)"
                " ON CONFLICT (video_id) DO UPDATE SET skus = excluded.skus",
                video_id,
                wanted,
            )
            await self._append(conn, f"video-{video_id}", event)
        return True

    async def mappings(self, video_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        if video_ids is None:
            rows = await self.pool.fetch("SELECT video_id, skus FROM video_skus")
        else:
            rows = await self.pool.fetch(
                "SELECT video_id, skus FROM video_skus WHERE video_id = ANY($1::text[])",
                list(video_ids),
            )
        return {r["video_id"]: list(r["skus"]) for r in rows}

    # --- videos ---------------------------------------------------------------------------

    async def add_videos(self, open_id: str, videos: Sequence[tuple[str, datetime, str]]) -> None:
        """Videos seen on the creator's list (id, created_at, title); known ones unchanged."""
        if not videos:
            return
        await self.pool.execute(
            "INSERT INTO videos (video_id, open_id, created_at, title)"
            " SELECT v, $1, c, t FROM unnest($2::text[], $3::timestamptz[], $4::text[])"
            " AS x(v, c, t) ON CONFLICT (video_id) DO NOTHING",
            open_id,
            [v[0] for v in videos],
            [v[1] for v in videos],
            [v[2] for v in videos],
        )

    async def mark_registered(self, video_id: str, skus: Sequence[str]) -> None:
        await self.pool.execute(
            "UPDATE videos SET registered_skus = $2 WHERE video_id = $1", video_id, list(skus)
        )

    async def save_samples(self, checkpoints: Sequence[tuple[str, Sequence[VideoSample]]]) -> None:
        """Each video's last samples pushed, in one statement."""
        if not checkpoints:
            return
        await self.pool.execute(
            "UPDATE videos SET samples = x.s::jsonb FROM unnest($1::text[], $2::text[]) AS x(v, s)"
            " WHERE videos.video_id = x.v",
            [video_id for video_id, _ in checkpoints],
            [_samples_json(samples) for _, samples in checkpoints],
        )

    async def videos(self, open_id: str | None = None) -> list[StoredVideo]:
        rows = await self.pool.fetch(
            "SELECT * FROM videos WHERE $1::text IS NULL OR open_id = $1"
            " ORDER BY created_at, video_id",
            open_id,
        )
        return [
            StoredVideo(
                r["video_id"],
                r["open_id"],
                r["created_at"],
                tuple(r["registered_skus"]) if r["registered_skus"] is not None else None,
                tuple(
                    VideoSample(at=s[0], views=s[1], likes=s[2], shares=s[3])
                    for s in r["samples"]  # the pool decodes jsonb
                ),
            )
            for r in rows
        ]

    # --- videos known from stats files / posts ----------------------------------------------

    async def registrations(self, video_ids: Sequence[str]) -> dict[str, Registration]:
        rows = await self.pool.fetch(
            "SELECT * FROM stats_videos WHERE video_id = ANY($1::text[])", list(video_ids)
        )
        return {
            r["video_id"]: Registration(tuple(r["skus"]), r["creator_id"], r["published_at"])
            for r in rows
        }

    async def save_registration(self, video_id: str, registration: Registration) -> None:
        await self.pool.execute(
            "INSERT INTO stats_videos (video_id, skus, creator_id, published_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (video_id) DO UPDATE SET"
            " skus = excluded.skus, creator_id = excluded.creator_id,"
            " published_at = excluded.published_at",
            video_id,
            list(registration.skus),
            registration.creator_id,
            registration.published_at,
        )

    # --- files ----------------------------------------------------------------------------

    async def file_offset(self, path: str) -> FileOffset | None:
        row = await self.pool.fetchrow("SELECT * FROM file_offsets WHERE path = $1", path)
        if row is None:
            return None
        header = tuple(row["header"]) if row["header"] is not None else None
        return FileOffset(row["byte_offset"], row["next_line"], header)

    async def save_file_offset(self, path: str, offset: FileOffset, now: datetime) -> None:
        await self.pool.execute(
            "INSERT INTO file_offsets (path, byte_offset, next_line, header, updated_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (path) DO UPDATE SET"
            " byte_offset = excluded.byte_offset, next_line = excluded.next_line,"
            " header = excluded.header, updated_at = excluded.updated_at",
            path,
            offset.byte_offset,
            offset.next_line,
            list(offset.header) if offset.header is not None else None,
            now,
        )

    async def _append(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        event: CollectEvent,
    ) -> None:
        version = await self.store.stream_version(stream_id, conn=conn)
        await self.store.append(stream_id, version, [NewEvent.of(event)], conn=conn)
