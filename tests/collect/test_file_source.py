"""File source parsing (issue 16, item 3): good rows parse, each bad row is reported with its
line number and skipped, and a file read in arbitrary chunks while it is written gives every
row exactly once."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestock.collect.domain import file_source
from pulsestock.collect.domain.file_source import (
    ColumnMapping,
    LiveSample,
    ParseResult,
    RowError,
    VideoSample,
    parse_csv,
    parse_jsonl,
    split_lines,
)

HEADER = "video_id,timestamp,views,likes,comments,shares\n"
GOOD = "v1,2026-12-04T18:00:00Z,100,10,1,2\n"
LIVE_MAPPING = ColumnMapping(
    live_id="live", live_viewers="viewers", skus="skus", orders="orders", creator_id="creator"
)


def at(hour: int, minute: int, second: float = 0) -> datetime:
    whole = int(second)
    return datetime(2026, 12, 4, hour, minute, whole, round((second - whole) * 1e6), tzinfo=UTC)


def csv_of(*rows: str) -> list[str]:
    return split_lines(HEADER + "".join(rows))


def test_the_documented_example_parses_with_the_default_mapping() -> None:
    doc = file_source.__doc__ or ""
    block = doc.split("Example (CSV, default mapping):\n\n", 1)[1].split("\n\n", 1)[0]
    result = parse_csv(split_lines(textwrap.dedent(block) + "\n"))

    assert result.errors == ()
    assert result.samples == (
        VideoSample(2, "v123", at(18, 0), views=1500, likes=120, shares=15, comments=8),
        VideoSample(3, "v123", at(18, 1), views=1800, likes=130, shares=17, comments=9),
        VideoSample(4, "v123", at(18, 2), views=2100, likes=140, shares=18, comments=9),
    )
    assert "video_id,timestamp,views,likes,comments,shares" in doc


def test_good_csv_rows_parse_with_offsets_normalised_to_utc() -> None:
    result = parse_csv(
        csv_of(
            GOOD,
            "v2 , 2026-12-04T20:30:00+02:00 , 7 , 0 , 0 , 0\r\n",
            '"v3",1796407200.25,"5",4,3,2\n',
        )
    )

    assert result.errors == ()
    assert result.samples == (
        VideoSample(2, "v1", at(18, 0), views=100, likes=10, shares=2, comments=1),
        VideoSample(3, "v2", at(18, 30), views=7, likes=0, shares=0, comments=0),
        VideoSample(4, "v3", at(18, 0, 0.25), views=5, likes=4, shares=2, comments=3),
    )
    assert result.header == ("video_id", "timestamp", "views", "likes", "comments", "shares")
    assert result.consumed_lines == 4
    assert result.next_line_number == 5


def test_a_custom_mapping_reads_video_and_live_rows_from_one_csv() -> None:
    mapping = ColumnMapping(
        video_id="id",
        timestamp="time",
        views="plays",
        likes="hearts",
        comments="comments",
        shares="shares",
        creator_id="creator",
        live_id="live",
        live_viewers="viewers",
        skus="skus",
        orders="orders",
    )
    text = (
        "\ufeffid,time,plays,hearts,comments,shares,creator,live,viewers,skus,orders\n"
        "v1,2026-12-04T18:00:00Z,100,10,1,2,c9,,,,\n"
        ",1796407200000,,5,6,7,,L1,300,SKU-1; SKU-2,4\n"
    )
    result = parse_csv(split_lines(text), mapping)

    assert result.errors == ()
    assert result.samples == (
        VideoSample(2, "v1", at(18, 0), 100, 10, 2, 1, creator_id="c9"),
        LiveSample(3, "L1", ("SKU-1", "SKU-2"), at(18, 0), 300, 18, 4),
    )


def test_good_jsonl_rows_parse_with_nested_paths_lists_and_numbers() -> None:
    mapping = ColumnMapping(
        video_id="video.id",
        views="stats.views",
        likes="stats.likes",
        comments="stats.comments",
        shares="stats.shares",
        live_id="live",
        live_viewers="viewers",
        skus="skus",
    )
    rows = [
        {"video": {"id": 7204}, "timestamp": 1796407260, "stats": {"views": 9, "likes": 1,
         "comments": 0, "shares": "3"}},
        {"live": "L1", "skus": ["S1"], "timestamp": "2026-12-04T18:02:00+00:00", "viewers": 50,
         "stats": {"likes": 1, "comments": 2, "shares": 3}},
    ]  # fmt: skip
    result = parse_jsonl(split_lines("".join(json.dumps(row) + "\n" for row in rows)), mapping)

    assert result.errors == ()
    assert result.samples == (
        VideoSample(1, "7204", at(18, 1), views=9, likes=1, shares=3, comments=0),
        LiveSample(2, "L1", ("S1",), at(18, 2), concurrent_viewers=50, interactions=6,
                   orders_so_far=0),
    )  # fmt: skip


def test_a_count_that_decreases_is_left_for_ingest_to_judge() -> None:
    result = parse_csv(csv_of(GOOD, "v1,2026-12-04T18:01:00Z,50,5,0,0\n"))

    assert result.errors == ()
    assert [sample.line_number for sample in result.samples] == [2, 3]


BAD_CSV_ROWS = [
    ("v1,2026-12-04T18:00:00Z,,10,1,2", "missing views"),
    ("v1,2026-12-04T18:00:00Z,100,10,1", "row has 5 fields, the header has 6"),
    ("v1,2026-12-04T18:00:00Z,100,10,1,2,3", "row has 7 fields, the header has 6"),
    ("v1,2026-12-04T18:00:00Z,1e3,10,1,2", "views must be a whole number"),
    ("v1,2026-12-04T18:00:00Z,100,ten,1,2", "likes must be a whole number"),
    ("v1,2026-12-04T18:00:00Z,100,10,1.5,2", "comments must be a whole number"),
    ("v1,2026-12-04T18:00:00Z,100,10,1,-2", "shares must not be negative"),
    ("v1,2026-12-04T18:00:00Z,9223372036854775808,10,1,2", "views is too large"),
    ("v1,2026-12-04T18:00:00,100,10,1,2", "has no UTC offset"),
    ("v1,yesterday,100,10,1,2", "unparsable timestamp"),
    ("v1,-1796407260,100,10,1,2", "unparsable timestamp"),
    ("v1,1796407260000.5,100,10,1,2", "unparsable timestamp"),
    ("v1,99999999999999999999,100,10,1,2", "unparsable timestamp"),
    (",2026-12-04T18:00:00Z,100,10,1,2", "missing video_id"),
    ("v 1,2026-12-04T18:00:00Z,100,10,1,2", "malformed video_id"),
    ('"v1,2026-12-04T18:00:00Z,100,10,1,2', "malformed CSV"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_CSV_ROWS)
def test_each_bad_csv_row_is_reported_with_its_line_and_skipped(row: str, reason: str) -> None:
    result = parse_csv(csv_of(GOOD, "\n", row + "\n", GOOD))

    assert len(result.errors) == 1
    assert result.errors[0].line_number == 4  # header 1, good 2, blank 3
    assert reason in result.errors[0].reason
    assert [sample.line_number for sample in result.samples] == [2, 5]


LIVE_HEADER = "live,timestamp,viewers,likes,comments,shares,skus,orders\n"
BAD_LIVE_ROWS = [
    ("L1,2026-12-04T18:00:00Z,300,1,2,3,,4", "missing skus"),
    ("L1,2026-12-04T18:00:00Z,300,1,2,3, ; ,4", "at least one SKU"),
    ("L1,2026-12-04T18:00:00Z,300,1,2,3,S 1,4", "malformed sku"),
    ("L1,2026-12-04T18:00:00Z,,1,2,3,S1,4", "missing live_viewers"),
    ("L1,2026-12-04T18:00:00Z,300,1,2,3,S1,", "missing orders"),
    ("L/1,2026-12-04T18:00:00Z,300,1,2,3,S1,4", "malformed live_id"),
    (
        "L1,2026-12-04T18:00:00Z,300,9223372036854775807,1,0,S1,4",
        "interactions (likes + comments + shares) is too large",
    ),
]


@pytest.mark.parametrize(("row", "reason"), BAD_LIVE_ROWS)
def test_each_bad_live_row_is_reported_with_its_line_and_skipped(row: str, reason: str) -> None:
    good = "L1,2026-12-04T18:00:00Z,300,1,2,3,S1,4\n"
    result = parse_csv(split_lines(LIVE_HEADER + good + row + "\n" + good), LIVE_MAPPING)

    assert [(error.line_number, reason in error.reason) for error in result.errors] == [(3, True)]
    assert [sample.line_number for sample in result.samples] == [2, 4]
    assert all(isinstance(sample, LiveSample) for sample in result.samples)


BAD_JSON_ROWS = [
    ('{"video_id": "v1", "timestamp": 1796407260, "views": 1', "not valid JSON"),
    ("[1, 2]", "one JSON object"),
    ('{"video_id": "v1", "timestamp": 1796407260, "views": 1, "likes": 1, "comments": 1}',
     "missing shares"),
    ('{"video_id": "v1", "timestamp": 1796407260, "views": true, "likes": 1, "comments": 1, '
     '"shares": 1}', "views must be a whole number"),
    ('{"video_id": "v1", "timestamp": 1796407260, "views": 1.0, "likes": 1, "comments": 1, '
     '"shares": 1}', "views must be a whole number"),
    ('{"video_id": "v1", "timestamp": NaN, "views": 1, "likes": 1, "comments": 1, '
     '"shares": 1}', "unparsable timestamp"),
    ('{"video_id": "v1", "timestamp": null, "views": 1, "likes": 1, "comments": 1, '
     '"shares": 1}', "missing timestamp"),
    ('{"video_id": ["v1"], "timestamp": 1796407260, "views": 1, "likes": 1, "comments": 1, '
     '"shares": 1}', "malformed video_id"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "reason"), BAD_JSON_ROWS)
def test_each_bad_jsonl_row_is_reported_with_its_line_and_skipped(row: str, reason: str) -> None:
    good = json.dumps(
        {"video_id": "v1", "timestamp": 1796407260, "views": 1, "likes": 1, "comments": 1,
         "shares": 1}
    )  # fmt: skip
    result = parse_jsonl(split_lines(f"{good}\n{row}\n{good}\n"))

    assert len(result.errors) == 1
    assert result.errors[0].line_number == 2
    assert reason in result.errors[0].reason
    assert [sample.line_number for sample in result.samples] == [1, 3]


def test_a_partial_last_line_is_left_for_the_next_read() -> None:
    first = parse_csv(split_lines(HEADER + GOOD + "v2,2026-12-04T18:0"))

    assert [sample.line_number for sample in first.samples] == [2]
    assert first.errors == ()
    assert first.consumed_lines == 2
    assert first.consumed_chars == len(HEADER + GOOD)
    assert first.next_line_number == 3

    rest = "v2,2026-12-04T18:01:00Z,5,0,0,0\n"
    second = parse_csv(
        split_lines(rest), first_line_number=first.next_line_number, header=first.header
    )
    assert second.samples == (VideoSample(3, "v2", at(18, 1), 5, 0, 0, 0),)
    assert second.consumed_chars == len(rest)


def test_consumed_bytes_count_utf8_so_a_byte_offset_tailer_can_seek() -> None:
    text = HEADER + "vidé,2026-12-04T18:00:00Z,1,1,1,1\n"
    result = parse_csv(split_lines(text))

    assert result.consumed_bytes == len(text.encode("utf-8")) == len(text) + 1
    assert result.errors[0] == RowError(2, result.errors[0].reason)


def test_bytes_a_tailer_could_not_decode_count_as_the_bytes_they_were() -> None:
    raw = HEADER.encode() + b"v\xff,2026-12-04T18:00:00Z,1,1,1,1\n"
    result = parse_csv(split_lines(raw.decode("utf-8", "surrogateescape")))

    assert result.consumed_bytes == len(raw)
    assert "malformed video_id" in result.errors[0].reason
    assert parse_jsonl(["\ud800\n"]).consumed_bytes == 4  # no decoding yields it: no crash


def test_split_lines_breaks_only_at_newlines() -> None:
    assert split_lines("a\x0bb\u2028c\r\nd\n") == ["a\x0bb\u2028c\r\n", "d\n"]
    assert split_lines("a\nb") == ["a\n", "b"]
    assert split_lines("") == []


# Lines for the chunking property: good and bad rows of both kinds, and arbitrary text.
CSV_LINES = [GOOD.rstrip("\n"), "", *(row for row, _ in BAD_CSV_ROWS)]
JSON_LINES = [
    json.dumps({"video_id": "vé", "timestamp": "2026-12-04T18:00:00+01:00", "views": 3,
                "likes": 2, "comments": 1, "shares": 0}),
    "",
    *(row for row, _ in BAD_JSON_ROWS),
]  # fmt: skip
# Text as a decoded file holds it: no lone surrogates (they are tested on their own).
NO_NEWLINE = st.text(st.characters(exclude_characters="\n", exclude_categories=["Cs"]), max_size=30)


def read_in_chunks(text: str, cuts: list[int], parse_csv_format: bool) -> ParseResult:
    """What a tailer sees when the file grows to each cut in turn: it parses what it holds
    and keeps the unconsumed rest for the next read."""
    samples: list[VideoSample | LiveSample] = []
    errors: list[RowError] = []
    pending, line_number, header, consumed_bytes = "", 1, None, 0
    previous = 0
    for cut in [*sorted(cuts), len(text)]:
        pending += text[previous:cut]
        previous = cut
        if parse_csv_format:
            result = parse_csv(split_lines(pending), first_line_number=line_number, header=header)
            header = result.header
        else:
            result = parse_jsonl(split_lines(pending), first_line_number=line_number)
        samples += result.samples
        errors += result.errors
        pending = pending[result.consumed_chars :]
        line_number = result.next_line_number
        consumed_bytes += result.consumed_bytes
    return ParseResult(
        tuple(samples), tuple(errors), line_number - 1, len(text) - len(pending),
        consumed_bytes, line_number, header,
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    csv_format=st.booleans(),
    data=st.data(),
    partial_tail=NO_NEWLINE,
)
def test_reading_in_arbitrary_chunks_gives_every_row_exactly_once(
    csv_format: bool, data: st.DataObject, partial_tail: str
) -> None:
    known = st.sampled_from(CSV_LINES if csv_format else JSON_LINES)
    lines = data.draw(st.lists(st.one_of(known, known, NO_NEWLINE), max_size=25))
    text = (HEADER if csv_format else "") + "".join(line + "\n" for line in lines) + partial_tail
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))

    whole = (parse_csv if csv_format else parse_jsonl)(split_lines(text))
    chunked = read_in_chunks(text, cuts, csv_format)

    assert chunked.samples == whole.samples
    assert chunked.errors == whole.errors
    assert chunked.consumed_chars == whole.consumed_chars == len(text) - len(partial_tail)
    assert chunked.consumed_bytes == whole.consumed_bytes
    assert whole.consumed_bytes == len(text[: whole.consumed_chars].encode("utf-8"))
    # Each complete line is a sample, an error, blank or the header: none twice, none lost.
    rows = [
        sample.line_number for sample in whole.samples
    ] + [error.line_number for error in whole.errors]  # fmt: skip
    assert len(rows) == len(set(rows))
    assert len(rows) + sum(not line.strip() for line in lines) + csv_format == len(lines) + (
        1 if csv_format else 0
    )
