"""File source (issue 16, item 3): stats exported by someone else (a third-party tracker, a
LIVE dashboard), read from CSV or JSONL text. Pure parsing: no I/O, no clock.

Each complete row becomes exactly one sample or exactly one `RowError(line_number, reason)`,
never part of one: a bad row is reported and skipped, the rows around it are kept. Only
complete lines (ending in "\\n") are read; a last line without its newline is a row still
being written, so it is left unconsumed and `ParseResult` says where to resume.

Default mapping (`ColumnMapping()`): the CSV header or JSON keys
`video_id,timestamp,views,likes,comments,shares`. Example (CSV, default mapping):

    video_id,timestamp,views,likes,comments,shares
    v123,2026-12-04T18:00:00+00:00,1500,120,8,15
    v123,1796407260,1800,130,9,17
    v123,1796407320000,2100,140,9,18

gives three `VideoSample`s of video v123 at 18:00, 18:01 and 18:02 UTC.

What each column feeds in ingest's public API (protos/pulsestock/v1/ingest.proto):

- video rows -> `PushVideoSamplesRequest.samples` (`VideoSampled`):
  `video_id` -> video_id, `timestamp` -> observed_at, `views`/`likes`/`shares`/`comments` ->
  the fields of the same name (cumulative counts). `creator_id` (optional) is not part of a
  sample: it is kept for `RegisterVideoRequest.creator_id` when the collector registers a video
  it has not seen.
- live rows (the mapping names a `live_id` column and the row's cell is not empty) ->
  `PushLiveSamplesRequest.samples` (`LiveSampled`): `live_id` -> live_id, `skus` -> skus
  (";"-separated in CSV, a list or a ";"-separated string in JSON; at least one, as ingest
  requires), `timestamp` -> observed_at, `live_viewers` -> concurrent_viewers,
  likes + comments + shares -> interactions (cumulative), `orders` -> orders_so_far (0 when
  the mapping names no orders column). A live row's views and video_id are not read.

Row rules (the same as ingest's, so a row that parses is not rejected for its shape):
ids must match `pulsestock.ids.ID_PATTERN` (JSON may give them as whole numbers); counts are
whole numbers 0 <= n < 2**63 (CSV: digits only; JSON: an integer or a string of digits); a
count that decreases is NOT an error here, ingest judges that. Timestamps: ISO 8601 with a
UTC offset ("Z" or +hh:mm; a naive time is an error, its zone unknowable), or Unix time as a
number: seconds (may have a fraction) below 10**11, whole milliseconds from 10**11 on (10**11 s
is the year 5138, 10**11 ms is 1973). Every timestamp comes out in UTC.

CSV: the first complete line is the header (column names, stripped); a row must have as many
cells as the header; quoted cells are allowed but not line breaks inside them. JSONL: one
object a line; a mapped name may be a dotted path into nested objects ("stats.views").
Blank lines are skipped in both.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from pulsestock.ids import ID_RULE, valid_id

MAX_COUNT = 2**63 - 1  # int64, as the proto fields
UNIX_MILLIS_FROM = 10**11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")  # the sign only so a negative count gets its own reason


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which source column (CSV header name, or JSON key / dotted path) holds each field.
    The optional ones are None when the source has no such column."""

    video_id: str = "video_id"
    timestamp: str = "timestamp"
    views: str = "views"
    likes: str = "likes"
    comments: str = "comments"
    shares: str = "shares"
    creator_id: str | None = None
    live_id: str | None = None
    live_viewers: str | None = None
    skus: str | None = None
    orders: str | None = None


@dataclass(frozen=True, slots=True)
class VideoSample:
    """One `VideoSampled` for ingest, with the line it came from."""

    line_number: int
    video_id: str
    observed_at: datetime
    views: int
    likes: int
    shares: int
    comments: int
    creator_id: str | None = None


@dataclass(frozen=True, slots=True)
class LiveSample:
    """One `LiveSampled` for ingest, with the line it came from."""

    line_number: int
    live_id: str
    skus: tuple[str, ...]
    observed_at: datetime
    concurrent_viewers: int
    interactions: int
    orders_so_far: int


@dataclass(frozen=True, slots=True)
class RowError:
    line_number: int
    reason: str


Sample = VideoSample | LiveSample
_Get = Callable[[str], object]  # a row's value under a mapped name, None when absent


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one read gave. Resume with the text after `consumed_chars` (`consumed_bytes` in
    UTF-8), numbering from `next_line_number`, and (CSV) passing `header` back."""

    samples: tuple[Sample, ...]
    errors: tuple[RowError, ...]
    consumed_lines: int
    consumed_chars: int
    consumed_bytes: int
    next_line_number: int
    header: tuple[str, ...] | None = None


class _BadRow(ValueError):
    """A row's one reason for being skipped."""


def split_lines(text: str) -> list[str]:
    """`text` cut after each "\\n" (kept): the lines the parsers take. Unlike str.splitlines
    this breaks at nothing else, so a tailer's offsets stay those of the file."""
    lines = text.split("\n")
    complete = [line + "\n" for line in lines[:-1]]
    return complete + ([lines[-1]] if lines[-1] else [])


def parse_csv(
    text_lines: Iterable[str],
    mapping: ColumnMapping = ColumnMapping(),  # frozen: one shared default is safe
    first_line_number: int = 1,
    header: Sequence[str] | None = None,
) -> ParseResult:
    """Rows of CSV text (lines as `split_lines` gives them). Without `header`, the first
    complete non-blank line is the header."""
    columns = tuple(header) if header is not None else None
    accumulator = _Accumulator(first_line_number)
    for line in _complete_lines(text_lines, accumulator):
        if columns is None:
            # A byte-order mark some exporters write would otherwise rename the first column.
            columns = tuple(cell.strip().lstrip("\ufeff") for cell in _csv_cells(line))
            continue
        try:
            cells = _csv_cells(line)
            if len(cells) != len(columns):
                raise _BadRow(f"row has {len(cells)} fields, the header has {len(columns)}")
            record = {name: cell.strip() for name, cell in zip(columns, cells, strict=True)}
            accumulator.add(_sample(record.get, mapping, accumulator.line_number))
        except _BadRow as bad:
            accumulator.reject(str(bad))
    return accumulator.result(columns)


def parse_jsonl(
    text_lines: Iterable[str],
    mapping: ColumnMapping = ColumnMapping(),  # frozen: one shared default is safe
    first_line_number: int = 1,
) -> ParseResult:
    """Rows of JSON Lines text (lines as `split_lines` gives them)."""
    accumulator = _Accumulator(first_line_number)
    for line in _complete_lines(text_lines, accumulator):
        try:
            try:
                record = json.loads(line)
            except ValueError as error:  # JSONDecodeError, or a number too long to convert
                raise _BadRow(f"not valid JSON: {error}") from None
            if not isinstance(record, dict):
                raise _BadRow("a line must hold one JSON object")
            accumulator.add(_sample(_JsonGet(record), mapping, accumulator.line_number))
        except _BadRow as bad:
            accumulator.reject(str(bad))
    return accumulator.result(None)


class _Accumulator:
    def __init__(self, first_line_number: int) -> None:
        self.line_number = first_line_number - 1  # the line being read
        self.samples: list[Sample] = []
        self.errors: list[RowError] = []
        self.consumed_lines = 0
        self.consumed_chars = 0
        self.consumed_bytes = 0

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def reject(self, reason: str) -> None:
        self.errors.append(RowError(self.line_number, reason))

    def result(self, header: tuple[str, ...] | None) -> ParseResult:
        return ParseResult(
            samples=tuple(self.samples),
            errors=tuple(self.errors),
            consumed_lines=self.consumed_lines,
            consumed_chars=self.consumed_chars,
            consumed_bytes=self.consumed_bytes,
            next_line_number=self.line_number + 1,
            header=header,
        )


def _complete_lines(text_lines: Iterable[str], accumulator: _Accumulator) -> Iterable[str]:
    """The non-blank complete lines without their line ending, counting every complete one;
    stops at the first line with no "\\n" (still being written)."""
    for line in text_lines:
        if not line.endswith("\n"):
            return
        accumulator.line_number += 1
        accumulator.consumed_lines += 1
        accumulator.consumed_chars += len(line)
        accumulator.consumed_bytes += _utf8_length(line)
        content = line.rstrip("\r\n")
        if content.strip():
            yield content


def _utf8_length(line: str) -> int:
    """Bytes of `line` in the file: undecodable bytes a tailer kept with errors=
    "surrogateescape" count one each; other lone surrogates, which no decoding yields, 3."""
    try:
        return len(line.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(line.encode("utf-8", "surrogatepass"))


def _csv_cells(line: str) -> list[str]:
    try:
        return next(csv.reader([line], strict=True), [])
    except csv.Error as error:
        raise _BadRow(f"malformed CSV: {error}") from None


class _JsonGet:
    """record.get for a dotted path into nested objects."""

    def __init__(self, record: Mapping[str, object]) -> None:
        self.record = record

    def __call__(self, path: str) -> object:
        value: object = self.record
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value


class _Fields:
    """The mapped cells of one row, each read with its rule."""

    def __init__(self, get: _Get) -> None:
        self.get = get

    def raw(self, column: str | None, field: str) -> object:
        value = self.get(column) if column is not None else None
        if value is None or value == "":
            raise _BadRow(f"missing {field}" + (f" (column {column!r})" if column else ""))
        return value

    def optional(self, column: str | None) -> object:
        if column is None:
            return None
        value = self.get(column)
        return None if value == "" else value

    def identifier(self, column: str | None, field: str) -> str:
        return _identifier(self.raw(column, field), field)

    def count(self, column: str | None, field: str) -> int:
        value = self.raw(column, field)
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
            number = int(value)
        else:
            raise _BadRow(f"{field} must be a whole number, not {value!r}")
        if number < 0:
            raise _BadRow(f"{field} must not be negative ({number})")
        if number > MAX_COUNT:
            raise _BadRow(f"{field} is too large ({number} > 2**63 - 1)")
        return number


def _identifier(value: object, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # JSON exports may write numeric video ids as numbers
    if not isinstance(value, str) or not valid_id(value):
        raise _BadRow(f"malformed {field} {value!r}: {ID_RULE}")
    return value


def _sample(get: _Get, mapping: ColumnMapping, line_number: int) -> Sample:
    fields = _Fields(get)
    observed_at = parse_timestamp(fields.raw(mapping.timestamp, "timestamp"))
    live_id = fields.optional(mapping.live_id)
    if live_id is not None:
        return LiveSample(
            line_number=line_number,
            live_id=_identifier(live_id, "live_id"),
            skus=_skus(fields.raw(mapping.skus, "skus")),
            observed_at=observed_at,
            concurrent_viewers=fields.count(mapping.live_viewers, "live_viewers"),
            interactions=_interactions(
                fields.count(mapping.likes, "likes"),
                fields.count(mapping.comments, "comments"),
                fields.count(mapping.shares, "shares"),
            ),
            orders_so_far=fields.count(mapping.orders, "orders") if mapping.orders else 0,
        )
    creator_id = fields.optional(mapping.creator_id)
    return VideoSample(
        line_number=line_number,
        video_id=fields.identifier(mapping.video_id, "video_id"),
        observed_at=observed_at,
        views=fields.count(mapping.views, "views"),
        likes=fields.count(mapping.likes, "likes"),
        shares=fields.count(mapping.shares, "shares"),
        comments=fields.count(mapping.comments, "comments"),
        creator_id=None if creator_id is None else _identifier(creator_id, "creator_id"),
    )


def _interactions(likes: int, comments: int, shares: int) -> int:
    total = likes + comments + shares
    if total > MAX_COUNT:
        raise _BadRow(f"interactions (likes + comments + shares) is too large ({total})")
    return total


def _skus(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = [item.strip() for item in value.split(";") if item.strip()]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise _BadRow(f"skus must be a list or a ';'-separated string, not {value!r}")
    if not items:
        raise _BadRow("skus must list at least one SKU")
    return tuple(_identifier(item, "sku") for item in items)


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from ISO 8601 with an offset or Unix seconds / milliseconds (see
    the module docstring); ValueError with the reason otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _BadRow(f"timestamp must be ISO 8601 or Unix time, not {value!r}")
    if isinstance(value, float):
        try:
            return _unix(Decimal(value))
        except (ValueError, InvalidOperation, OverflowError):
            raise _BadRow(f"unparsable timestamp {value!r}") from None
    text = str(value).strip()
    try:
        if text.replace(".", "", 1).isdigit() and text.isascii():
            return _unix(Decimal(text))
        moment = datetime.fromisoformat(text)
    except (ValueError, InvalidOperation, OverflowError):
        raise _BadRow(f"unparsable timestamp {text!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _BadRow(f"timestamp {text!r} has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise _BadRow(f"timestamp {text!r} is out of range") from None


def _unix(number: Decimal) -> datetime:
    if not number.is_finite() or number < 0:
        raise ValueError("Unix time must be a finite number from 0 on")
    if number >= UNIX_MILLIS_FROM:
        if number != number.to_integral_value():
            raise ValueError("Unix milliseconds must be whole")
        return _EPOCH + timedelta(milliseconds=int(number))
    return _EPOCH + timedelta(microseconds=int(number * 1_000_000))
