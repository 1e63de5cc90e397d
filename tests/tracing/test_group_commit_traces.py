"""A group commit's batches run in a task of their own: what a batch sends on must continue
its callers' traces, not the trace of whichever caller happened to start the task."""

from __future__ import annotations

import asyncio
import uuid

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pulsestock.bus.codec import cloudevent_headers
from pulsestock.group_commit import GroupCommit
from pulsestock.telemetry import extract_trace_context, tracing_enabled, use_context


class Sender:
    """A batch process that builds an outgoing event's headers per item (as the outbox does
    inside ingest's sample commits); the first batch waits until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.batches: list[list[str]] = []
        self.traceparents: dict[str, str] = {}

    async def process(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        if len(self.batches) == 1:
            self.started.set()
            await self.release.wait()
        for item in items:
            headers = cloudevent_headers(
                event_id=str(uuid.uuid4()), event_type="t", source="/t", subject=item
            )
            self.traceparents[item] = headers["traceparent"]
        return items


async def submit_in(
    commits: GroupCommit[str, str], item: str, traceparent: str | None
) -> asyncio.Task[str]:
    """Submit `item` from a task running in the trace `traceparent` names (or in a span of
    a trace of its own)."""

    queued = asyncio.Event()

    async def call() -> str:
        if traceparent is not None:
            with use_context(extract_trace_context({"traceparent": traceparent})):
                queued.set()  # seen once this task waits in submit, its item queued
                return await commits.submit(item)
        with trace.get_tracer("test").start_as_current_span(f"caller {item}"):
            queued.set()
            return await commits.submit(item)

    task = asyncio.create_task(call())
    await queued.wait()
    return task


def trace_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


async def two_batches(
    commits: GroupCommit[str, str], sender: Sender, traceparents: dict[str, str | None]
) -> None:
    """ "a" alone in the first batch (which starts the drain task), "b" and "c" queued behind
    it and committed together."""
    first = await submit_in(commits, "a", traceparents["a"])
    await sender.started.wait()
    rest = [await submit_in(commits, item, traceparents[item]) for item in ("b", "c")]
    sender.release.set()
    assert await asyncio.gather(first, *rest) == ["a", "b", "c"]
    assert sender.batches == [["a"], ["b", "c"]]


async def test_each_batch_continues_its_callers_traces(spans: InMemorySpanExporter) -> None:
    sender = Sender()
    commits: GroupCommit[str, str] = GroupCommit(sender.process)
    await two_batches(commits, sender, dict.fromkeys("abc"))

    callers = {s.name.removeprefix("caller "): s for s in spans.get_finished_spans()}
    caller_traces = {item: format(callers[item].context.trace_id, "032x") for item in "abc"}
    assert len(set(caller_traces.values())) == 3
    # "a"'s batch is in "a"'s trace; "b" and "c"'s is in "b"'s (its first caller), not "a"'s.
    sent = {item: trace_of(tp) for item, tp in sender.traceparents.items()}
    assert sent == {"a": caller_traces["a"], "b": caller_traces["b"], "c": caller_traces["b"]}

    batches = [s for s in spans.get_finished_spans() if s.name == "group commit"]
    assert len(batches) == 2
    for batch, members in zip(batches, (["a"], ["b", "c"]), strict=True):
        assert batch.parent is not None
        assert batch.parent.span_id == callers[members[0]].context.span_id
        assert [link.context.span_id for link in batch.links] == [
            callers[m].context.span_id for m in members
        ]
        assert (batch.attributes or {})["pulsestock.batch.size"] == len(members)
        # The headers were built inside the batch span.
        for member in members:
            assert sender.traceparents[member].split("-")[2] == format(
                batch.context.span_id, "016x"
            )


async def test_without_recording_spans_the_callers_trace_still_passes_on() -> None:
    """No SDK installed (the default without an OTLP endpoint): nothing is recorded, but a
    trace that arrived from upstream is what the batch sends on."""
    assert not tracing_enabled()
    upstream = {
        item: f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for item in ("a", "b", "c")
    }
    sender = Sender()
    commits: GroupCommit[str, str] = GroupCommit(sender.process)
    await two_batches(commits, sender, dict(upstream))
    assert sender.traceparents == {"a": upstream["a"], "b": upstream["b"], "c": upstream["b"]}
