"""The Display API client against the TikTok Display fake, over real HTTP on loopback: token
refresh (ahead of expiry, and once on rejection), revoked grants, pagination, chunked stats
queries, throttling and transient failures."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pulsestock.collect.adapters.display_api import (
    DisplayApiClient,
    InMemoryTokenStore,
    ReauthorisationRequired,
    RetriesExhausted,
    RetryPolicy,
)
from pulsestock.fakes.tiktok_display import (
    LIST_PATH,
    QUERY_PATH,
    FakeTikTokDisplay,
)

REDIRECT_URI = "https://pulsestock.example/oauth/tiktok/callback"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.02, max_delay_s=0.2, timeout_s=5.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTokDisplay]:
    server = FakeTikTokDisplay()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def client_for(
    fake: FakeTikTokDisplay,
    session: aiohttp.ClientSession,
    store: InMemoryTokenStore,
    policy: RetryPolicy = FAST,
) -> DisplayApiClient:
    return DisplayApiClient(
        session, fake.client_key, fake.client_secret, store, base_url=fake.url, policy=policy
    )


async def authorised_creator(
    fake: FakeTikTokDisplay, client: DisplayApiClient, videos: int = 0
) -> str:
    """A creator who went through the consent screen; the client holds their tokens."""
    open_id = fake.add_creator()
    for index in range(videos):
        fake.add_video(open_id, posted_at=1_700_000_000 + index * 60, view_count=index)
    await client.exchange_code(fake.authorization_code(open_id), REDIRECT_URI)
    return open_id


async def test_access_token_refreshed_before_it_expires(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=3)
    issued = await store.load(open_id)
    assert issued is not None
    assert issued.access_expires_at > time.time() + 86_000
    # Five minutes left: inside the client's ten-minute margin, still valid at TikTok.
    await store.save(replace(issued, access_expires_at=time.time() + 300))

    assert len(await client.list_videos(open_id)) == 3

    assert len(fake.refreshes()) == 1
    assert fake.answered(LIST_PATH, 401) == []  # refreshed ahead, never rejected
    fresh = await store.load(open_id)
    assert fresh is not None
    assert fresh.access_token != issued.access_token
    assert fresh.refresh_token != issued.refresh_token  # the rotated one was kept
    assert fresh.access_expires_at > time.time() + 86_000
    listed = fake.answered(LIST_PATH, 200)
    assert [r.headers["Authorization"] for r in listed] == [f"Bearer {fresh.access_token}"]
    # The next call needs no refresh.
    await client.list_videos(open_id)
    assert len(fake.refreshes()) == 1


async def test_rejected_access_token_is_refreshed_once_and_the_call_retried(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=2)
    ids = [video.id for video in fake.creators[open_id].videos.values()]
    fake.expire_access_tokens(open_id)  # the client still thinks its token is good

    stats = await client.query_stats(open_id, ids)

    assert sorted(s.id for s in stats) == sorted(ids)
    assert len(fake.answered(QUERY_PATH, 401)) == 1
    assert len(fake.answered(QUERY_PATH, 200)) == 1
    assert len(fake.refreshes()) == 1
    rejected = json.loads(fake.answered(QUERY_PATH, 401)[0].answer)
    assert rejected["error"]["code"] == "access_token_invalid"


async def test_a_revoked_grant_asks_for_reauthorisation(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=1)
    fake.revoke(open_id)

    with pytest.raises(ReauthorisationRequired) as raised:
        await client.list_videos(open_id)

    assert raised.value.open_id == open_id
    assert raised.value.code == "invalid_grant"
    assert len(fake.refreshes()) == 1  # one refresh attempt, no loop
    assert len(fake.answered(LIST_PATH)) == 1
    refused = json.loads(fake.refreshes()[0].answer)
    assert refused["error"] == "invalid_grant"
    assert refused["log_id"]


async def test_a_missing_scope_asks_for_reauthorisation(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = fake.add_creator(scopes=("user.info.basic",))
    await client.exchange_code(fake.authorization_code(open_id), REDIRECT_URI)

    with pytest.raises(ReauthorisationRequired) as raised:
        await client.list_videos(open_id)

    assert raised.value.code == "scope_not_authorized"
    assert fake.refreshes() == []


async def test_pagination_collects_every_video_exactly_once(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=45)
    # Twelve more posted in the same second: the cursor must not split or drop them.
    for _ in range(12):
        fake.add_video(open_id, posted_at=1_700_000_000 + 20 * 60)
    expected = sorted(
        fake.creators[open_id].videos.values(), key=lambda v: v.posted_at_ms, reverse=True
    )

    videos = await client.list_videos(open_id)

    assert [v.id for v in videos] == [v.id for v in expected]
    assert len({v.id for v in videos}) == 57
    assert len(fake.answered(LIST_PATH, 200)) == 3  # 20 + 20 + 17


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    posted=st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=50),
)
def test_pagination_lists_any_catalogue_once(posted: list[int]) -> None:
    """Whatever the posting instants (many in the same second), listing returns each video
    once, newest first."""

    async def run() -> None:
        fake = FakeTikTokDisplay()
        await fake.start()
        try:
            async with aiohttp.ClientSession() as session:
                client = client_for(fake, session, InMemoryTokenStore())
                open_id = await authorised_creator(fake, client)
                for second in posted:
                    fake.add_video(open_id, posted_at=1_700_000_000 + second)
                videos = await client.list_videos(open_id)
                assert sorted(v.id for v in videos) == sorted(fake.creators[open_id].videos)
                assert len(videos) == len(posted)
                times = [v.create_time for v in videos]
                assert times == sorted(times, reverse=True)
        finally:
            await fake.stop()

    asyncio.run(run())


async def test_twenty_five_ids_take_two_queries(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=25)
    ids = list(fake.creators[open_id].videos)
    fake.grow(ids[24], views=1_000, likes=50, comments=5, shares=7)

    stats = await client.query_stats(open_id, ids)

    queries = fake.answered(QUERY_PATH, 200)
    assert [len(json.loads(r.body)["filters"]["video_ids"]) for r in queries] == [20, 5]
    assert queries[0].query["fields"] == (
        "id,create_time,view_count,like_count,comment_count,share_count"
    )
    by_id = {s.id: s for s in stats}
    assert set(by_id) == set(ids)
    grown = by_id[ids[24]]
    assert (grown.view_count, grown.like_count, grown.comment_count, grown.share_count) == (
        1_024,
        50,
        5,
        7,
    )
    fake.grow(ids[24], views=500)
    (again,) = await client.query_stats(open_id, [ids[24]])
    assert again.view_count == 1_524
    assert again.observed_at >= grown.observed_at


async def test_the_fake_refuses_more_than_twenty_ids(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    open_id = fake.add_creator()
    token = fake.issue_tokens(open_id)["access_token"]
    async with session.post(
        fake.url + QUERY_PATH,
        params={"fields": "id,view_count"},
        json={"filters": {"video_ids": [str(i) for i in range(21)]}},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == "invalid_params"
    assert body["error"]["log_id"]


async def test_throttled_calls_back_off_then_succeed(session: aiohttp.ClientSession) -> None:
    window_s = 0.5
    fake = FakeTikTokDisplay(rate_limit=3, rate_window_s=window_s)
    await fake.start()
    try:
        store = InMemoryTokenStore()
        policy = RetryPolicy(max_attempts=20, base_delay_s=0.05, max_delay_s=0.4)
        client = client_for(fake, session, store, policy)
        open_id = await authorised_creator(fake, client, videos=100)
        ids = list(fake.creators[open_id].videos)

        stats = await client.query_stats(open_id, ids)  # five calls, three per window

        assert len(stats) == 100
        throttled = fake.answered(QUERY_PATH, 429)
        assert len(throttled) >= 1
        assert len(throttled) == client.stats.throttled
        assert json.loads(throttled[0].answer)["error"]["code"] == "rate_limit_exceeded"
        accepted = [r.at for r in fake.answered(QUERY_PATH, 200)]
        assert len(accepted) == 5
        assert accepted[3] - accepted[0] >= window_s  # the fourth waited for the window
        # After each 429 the client waited at least the back-off it reports before asking again.
        calls = fake.answered(QUERY_PATH)
        gaps = [
            after.at - before.answered_at
            for before, after in itertools.pairwise(calls)
            if before.status == 429
        ]
        assert client.stats.delays
        assert len(gaps) == len(client.stats.delays)
        for gap, delay in zip(gaps, client.stats.delays, strict=True):
            assert gap >= delay * 0.95
        assert client.stats.waited_s == pytest.approx(sum(client.stats.delays))
        assert all(0 <= d <= policy.max_delay_s for d in client.stats.delays)
    finally:
        await fake.stop()


async def test_retry_after_is_honoured(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=1)
    fake.faults.throttle_next = 1  # answered 429 with Retry-After: 1

    assert len(await client.list_videos(open_id)) == 1

    throttled, accepted = fake.answered(LIST_PATH, 429), fake.answered(LIST_PATH, 200)
    assert throttled[0].answer_headers["Retry-After"] == "1"
    assert client.stats.delays == [1.0]
    assert accepted[0].at - throttled[0].answered_at >= 0.95


async def test_transient_server_errors_are_retried_then_given_up(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=2)
    fake.faults.fail_next, fake.faults.fail_status = 2, 503

    assert len(await client.list_videos(open_id)) == 2
    assert len(fake.answered(LIST_PATH, 503)) == 2
    assert client.stats.server_errors == 2

    fake.faults.fail_next = FAST.max_attempts
    with pytest.raises(RetriesExhausted):
        await client.list_videos(open_id)
    assert len(fake.answered(LIST_PATH, 503)) == 2 + FAST.max_attempts


async def test_concurrent_calls_share_one_refresh(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    """The fake rotates refresh tokens, so a second refresh with the old one would be refused:
    calls rejected together must wait for one refresh and reuse it."""
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    open_id = await authorised_creator(fake, client, videos=5)
    ids = list(fake.creators[open_id].videos)
    fake.expire_access_tokens(open_id)

    answers = await asyncio.gather(*(client.query_stats(open_id, ids) for _ in range(4)))

    assert all(len(stats) == 5 for stats in answers)
    assert len(fake.refreshes()) == 1
    assert len(fake.answered(QUERY_PATH, 200)) == 4


async def test_the_control_api_drives_a_creator_over_http(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    """What the dev stack uses from another process: add a creator and a video, grow it."""
    async with session.post(fake.url + "/_fake/display/creators", json={}) as response:
        creator = await response.json()
    async with session.post(
        fake.url + "/_fake/display/videos", json={"open_id": creator["open_id"]}
    ) as response:
        video = await response.json()
    async with session.post(
        fake.url + f"/_fake/display/videos/{video['id']}/grow", json={"views": 42}
    ) as response:
        assert response.status == 200
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    await client.exchange_code(creator["code"], REDIRECT_URI)

    (stats,) = await client.query_stats(creator["open_id"], [video["id"]])

    assert stats.view_count == 42
    assert stats.create_time == video["create_time"]


async def test_follower_count_needs_the_stats_scope_and_its_absence_is_not_fatal(
    fake: FakeTikTokDisplay, session: aiohttp.ClientSession
) -> None:
    store = InMemoryTokenStore()
    client = client_for(fake, session, store)
    basic = await authorised_creator(fake, client)
    fake.creators[basic].follower_count = 999
    # Without user.info.stats: unknown, and the creator stays connected (no refresh, no raise).
    assert await client.follower_count(basic) is None
    assert len(await client.list_videos(basic)) == 0
    reach = fake.add_creator(scopes=("user.info.basic", "user.info.stats", "video.list"))
    fake.creators[reach].follower_count = 250_000
    await client.exchange_code(fake.authorization_code(reach), REDIRECT_URI)
    assert await client.follower_count(reach) == 250_000
    asked = fake.answered("/v2/user/info/", 200)[-1]
    assert asked.method == "GET"
