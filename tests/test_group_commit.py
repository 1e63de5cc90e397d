"""GroupCommit: concurrent callers share one `process` call; its failure is all of theirs."""

from __future__ import annotations

import asyncio

import pytest
from pulsestock.group_commit import GroupCommit


async def test_callers_waiting_together_share_one_batch_in_order() -> None:
    seen: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        seen.append(items)
        await asyncio.sleep(0)  # a commit's round trip: others queue meanwhile
        return [item * 10 for item in items]

    commits: GroupCommit[int, int] = GroupCommit(process, max_batch=3)
    results = await asyncio.gather(*(commits.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    async def process(items: list[int]) -> list[int]:
        if 1 in items:
            raise RuntimeError("commit failed")
        return items

    commits: GroupCommit[int, int] = GroupCommit(process, max_batch=2)
    outcomes = await asyncio.gather(*(commits.submit(i) for i in range(4)), return_exceptions=True)
    assert [type(o).__name__ if isinstance(o, Exception) else o for o in outcomes] == [
        "RuntimeError",
        "RuntimeError",
        2,
        3,
    ]
    assert await commits.submit(5) == 5  # the writer goes on


async def test_a_caller_that_goes_away_leaves_its_item_in_the_batch() -> None:
    processed: list[int] = []
    release = asyncio.Event()

    async def process(items: list[int]) -> list[int]:
        await release.wait()
        processed.extend(items)
        return items

    commits: GroupCommit[int, int] = GroupCommit(process)
    leaving = asyncio.create_task(commits.submit(1))
    staying = asyncio.create_task(commits.submit(2))
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    release.set()
    assert await staying == 2
    assert processed == [1, 2]
