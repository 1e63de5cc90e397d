"""Tail stats files (issue 16, item 3): CSV (`.csv`) or JSON Lines (`.jsonl`, `.ndjson`),
read from where the last pass stopped, new complete lines applied through `StatsIntake`.

Where a file stands is stored per path (`CollectRepository.file_offset`: the byte offset, the
next line's number and, for CSV, the header) and saved only after ingest answered for the
lines before it, so a crash re-sends at most the last batch, which ingest deduplicates. A line
still being written (no "\\n" yet) is left for the next pass. A file smaller than its offset
was truncated or replaced: it is read again from its start, header included; so is a path
that now names another file (a rotation seen by this process). Bad rows are logged with the
path and line number and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol

import asyncpg
import grpc
from pulsestock.clock import Clock, utc_now
from pulsestock.collect.adapters.postgres import FileOffset
from pulsestock.collect.application.stats_intake import IntakeReport, StatsIntake
from pulsestock.collect.domain.file_source import (
    ColumnMapping,
    ParseResult,
    RowError,
    parse_csv,
    parse_jsonl,
    split_lines,
)
from pulsestock.telemetry import get_logger

log = get_logger(__name__)

READ_BYTES = 1 << 20  # one batch: at most this much of a file is read, parsed and pushed at once
LOGGED_ERRORS_PER_BATCH = 100
_START = FileOffset(byte_offset=0, next_line=1, header=None)
DEFAULT_MAPPING = ColumnMapping()  # frozen: one shared default is safe


class FileFormat(Enum):
    CSV = "csv"
    JSONL = "jsonl"


_EXTENSIONS = {".csv": FileFormat.CSV, ".jsonl": FileFormat.JSONL, ".ndjson": FileFormat.JSONL}


def file_format(path: str) -> FileFormat:
    """The format a path's extension names; ValueError for any other."""
    extension = os.path.splitext(path)[1].lower()
    try:
        return _EXTENSIONS[extension]
    except KeyError:
        raise ValueError(
            f"{path}: cannot tell the format from {extension or 'no extension'!r}"
            " (.csv, .jsonl or .ndjson)"
        ) from None


class Offsets(Protocol):
    async def file_offset(self, path: str) -> FileOffset | None: ...

    async def save_file_offset(self, path: str, offset: FileOffset, now: datetime) -> None: ...


@dataclass
class TailReport:
    """One pass over one file."""

    accepted: int = 0
    errors: list[RowError] = field(default_factory=list)
    restarted: bool = False  # read again from the start (truncated or replaced)
    missing: bool = False


@dataclass(frozen=True)
class _Chunk:
    data: bytes
    size: int  # the file's size when read
    identity: tuple[int, int]  # (device, inode)


class FileTailer:
    def __init__(
        self,
        intake: StatsIntake,
        offsets: Offsets,
        mapping: ColumnMapping = DEFAULT_MAPPING,
        clock: Clock = utc_now,
        read_bytes: int = READ_BYTES,
    ) -> None:
        self.intake = intake
        self.offsets = offsets
        self.mapping = mapping
        self.clock = clock
        self.read_bytes = read_bytes
        self._identity: dict[str, tuple[int, int]] = {}

    async def poll(self, path: str, stop: asyncio.Event | None = None) -> TailReport:
        """Apply what was appended to `path` since the last pass, batch by batch, saving the
        offset after each; a set `stop` ends the pass after the batch in hand."""
        fmt = file_format(path)
        report = TailReport()
        offset = await self.offsets.file_offset(path) or _START
        while stop is None or not stop.is_set():
            try:
                chunk = await asyncio.to_thread(_read, path, offset.byte_offset, self.read_bytes)
            except FileNotFoundError:
                report.missing = True
                return report
            seen = self._identity.get(path)
            self._identity[path] = chunk.identity
            replaced = seen is not None and seen != chunk.identity
            if offset.byte_offset and (chunk.size < offset.byte_offset or replaced):
                log.warning(
                    "stats file truncated or replaced: reading it again from the start",
                    path=path,
                    size=chunk.size,
                    offset=offset.byte_offset,
                )
                report.restarted = True
                offset = _START
                continue
            if not chunk.data:
                return report
            parsed = _parse(fmt, chunk.data, offset, self.mapping)
            if parsed.consumed_bytes == 0:
                if len(chunk.data) < self.read_bytes:
                    return report  # only a line still being written
                skipped = await self._overlong(path, offset, chunk.size)
                if skipped is None:
                    return report
                parsed = skipped
            applied = await self.intake.apply(parsed)
            self._log(path, applied)
            report.accepted += applied.accepted
            report.errors.extend(applied.errors)
            offset = FileOffset(
                byte_offset=offset.byte_offset + parsed.consumed_bytes,
                next_line=parsed.next_line_number,
                header=parsed.header if fmt is FileFormat.CSV else None,
            )
            await self.offsets.save_file_offset(path, offset, self.clock())
        return report

    async def _overlong(self, path: str, offset: FileOffset, size: int) -> ParseResult | None:
        """A line longer than a batch: reported and skipped once its end is written."""
        end = await asyncio.to_thread(_newline_after, path, offset.byte_offset, size)
        if end is None:
            return None
        error = RowError(offset.next_line, f"line longer than {self.read_bytes} bytes")
        return ParseResult(
            samples=(),
            errors=(error,),
            consumed_lines=1,
            consumed_chars=0,
            consumed_bytes=end + 1 - offset.byte_offset,
            next_line_number=offset.next_line + 1,
            header=offset.header,
        )

    @staticmethod
    def _log(path: str, applied: IntakeReport) -> None:
        for error in applied.errors[:LOGGED_ERRORS_PER_BATCH]:
            log.warning("stats row skipped", path=path, line=error.line_number, reason=error.reason)
        if applied.rejected > LOGGED_ERRORS_PER_BATCH:
            log.warning(
                "more stats rows skipped",
                path=path,
                unlogged=applied.rejected - LOGGED_ERRORS_PER_BATCH,
                through_line=applied.errors[-1].line_number,
            )
        if applied.accepted or applied.rejected:
            log.info(
                "stats file applied", path=path, accepted=applied.accepted, skipped=applied.rejected
            )


def _parse(fmt: FileFormat, data: bytes, offset: FileOffset, mapping: ColumnMapping) -> ParseResult:
    # surrogateescape: an undecodable byte spoils only its row, and counts one byte (the
    # parser's consumed_bytes expects exactly this decoding).
    lines = split_lines(data.decode("utf-8", "surrogateescape"))
    if fmt is FileFormat.CSV:
        return parse_csv(lines, mapping, offset.next_line, offset.header)
    return parse_jsonl(lines, mapping, offset.next_line)


def _read(path: str, at: int, limit: int) -> _Chunk:
    with open(path, "rb") as file:
        status = os.fstat(file.fileno())
        data = b""
        if status.st_size >= at:
            file.seek(at)
            data = file.read(limit)
    return _Chunk(data, status.st_size, (status.st_dev, status.st_ino))


def _newline_after(path: str, at: int, size: int) -> int | None:
    """The position of the first "\\n" from `at` in the file's first `size` bytes."""
    with open(path, "rb") as file:
        file.seek(at)
        position = at
        while position < size:
            block = file.read(min(READ_BYTES, size - position))
            if not block:
                return None
            found = block.find(b"\n")
            if found >= 0:
                return position + found
            position += len(block)
    return None


async def run_file_tailer(
    intake: StatsIntake,
    repository: Offsets,
    paths: Sequence[str],
    mapping: ColumnMapping,
    poll_seconds: float,
    stop: asyncio.Event,
    clock: Clock = utc_now,
) -> None:
    """Poll every path each `poll_seconds` until `stop`. A failing pass (ingest or the database
    away, a file unreadable) is logged and tried again at the next poll from the saved offset."""
    for path in paths:
        file_format(path)  # an unknown extension fails now, not at every poll
    tailer = FileTailer(intake, repository, mapping, clock)
    missing: set[str] = set()
    while not stop.is_set():
        for path in paths:
            if stop.is_set():
                break
            try:
                report = await tailer.poll(path, stop)
            except (grpc.aio.AioRpcError, OSError, asyncpg.PostgresError, TimeoutError) as error:
                log.warning("stats file pass failed", path=path, error=repr(error))
                continue
            if report.missing and path not in missing:
                log.warning("stats file not found (yet)", path=path)
            missing = missing - {path} if not report.missing else missing | {path}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_seconds)
