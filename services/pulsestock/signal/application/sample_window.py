"""A video's recent samples, kept with their snapshot bytes alongside.

Every processed batch snapshots each touched video's window. Re-encoding the whole window
(JSON, as before) cost more than the rest of folding a sample; here a sample is packed once
when it arrives and dropped from the front when it ages out, so a snapshot is a byte copy.
Layout: per sample five big-endian int64s (microseconds since the epoch, views, likes,
shares, comments), what PostgreSQL's int8send writes, so SQL can produce it as well.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from pulsestock.signal.domain.metrics import WINDOW, Sample

PACKED = struct.Struct(">qqqqq")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class SampleWindow:
    def __init__(self, samples: list[Sample] | None = None) -> None:
        self.samples: list[Sample] = []
        self._packed = bytearray()
        for sample in samples or []:
            self.add(sample)

    def add(self, sample: Sample) -> None:
        """Append a sample newer than all others; drop the ones it pushes out of WINDOW."""
        self.samples.append(sample)
        self._packed += PACKED.pack(
            (sample.at - EPOCH) // MICROSECOND,
            sample.views,
            sample.likes,
            sample.shares,
            sample.comments,
        )
        expired = 0
        while sample.at - self.samples[expired].at > WINDOW:
            expired += 1
        if expired:
            del self.samples[:expired]
            del self._packed[: expired * PACKED.size]

    def packed(self) -> bytes:
        return bytes(self._packed)

    @classmethod
    def unpack(cls, data: bytes) -> SampleWindow:
        window = cls()
        window.samples = [
            Sample(EPOCH + micros * MICROSECOND, views, likes, shares, comments)
            for micros, views, likes, shares, comments in PACKED.iter_unpack(data)
        ]
        window._packed = bytearray(data)
        return window
