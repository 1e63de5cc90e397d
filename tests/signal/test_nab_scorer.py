"""The NAB scorer's rules (tests/bench/nab.py) on hand-made files."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest

from tests.bench import nab

ROWS = 1000  # probation: the first 150 rows
WINDOW = (400, 499)  # 100 rows wide


def fired(*rows: int, length: int = ROWS) -> list[bool]:
    return [i in rows for i in range(length)]


def test_probation_is_15_percent_of_a_file_and_at_most_750_rows() -> None:
    assert nab.probationary_length(1000) == 150
    assert nab.probationary_length(1001) == 150  # floored
    assert nab.probationary_length(10_000) == 750


def test_the_scaled_sigmoid_is_1_early_0_at_the_end_and_minus_1_well_after() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0


def test_a_detection_at_a_windows_left_edge_earns_the_full_true_positive() -> None:
    score = nab.score_file(fired(400), [WINDOW], nab.STANDARD)
    assert (score.hits, score.misses, score.false_alarms) == (1, 0, 0)
    assert score.raw == pytest.approx(1.0)


def test_only_the_earliest_detection_in_a_window_counts_and_later_ones_are_free() -> None:
    early = nab.score_file(fired(450), [WINDOW], nab.STANDARD)
    both = nab.score_file(fired(450, 460, 499), [WINDOW], nab.STANDARD)
    # position -(499 - 450 + 1) / 100 = -0.5
    assert early.raw == pytest.approx(nab.scaled_sigmoid(-0.5) / nab.MAX_TP)
    assert both.raw == early.raw
    assert both.false_alarms == 0
    late = nab.score_file(fired(499), [WINDOW], nab.STANDARD)
    assert 0 < late.raw < early.raw  # later is worth less, but more than a miss


def test_a_missed_window_costs_the_false_negative_weight() -> None:
    assert nab.score_file(fired(), [WINDOW], nab.STANDARD).raw == -1.0
    assert nab.score_file(fired(), [WINDOW], nab.REWARD_LOW_FN).raw == -2.0


def test_a_false_alarm_before_any_window_costs_the_full_weight() -> None:
    score = nab.score_file(fired(300), [WINDOW], nab.STANDARD)
    assert score.false_alarms == 1
    assert score.raw == pytest.approx(-1.0 - 0.11)
    low_fp = nab.score_file(fired(300), [WINDOW], nab.REWARD_LOW_FP)
    assert low_fp.raw == pytest.approx(-1.0 - 0.22)


def test_a_false_alarm_just_after_a_window_is_cheap_and_later_ones_cost_more() -> None:
    hit = nab.score_file(fired(400), [WINDOW], nab.STANDARD).raw
    soon = nab.score_file(fired(400, 510), [WINDOW], nab.STANDARD).raw - hit
    later = nab.score_file(fired(400, 600), [WINDOW], nab.STANDARD).raw - hit
    far = nab.score_file(fired(400, 900), [WINDOW], nab.STANDARD).raw - hit
    # distance (510 - 499) / (100 - 1) = 1/9 of the window's width after it
    assert soon == pytest.approx(0.11 * nab.scaled_sigmoid(11 / 99))
    assert -0.11 < later < soon < 0
    assert far == pytest.approx(-0.11)  # three widths or more after: the full weight


def test_probationary_detections_and_windows_are_not_scored() -> None:
    # a detection at row 100 is probationary; the window wholly inside probation is unscored
    score = nab.score_file(fired(100, 120), [(90, 130)], nab.STANDARD)
    assert (score.windows, score.hits, score.misses, score.false_alarms) == (0, 0, 0, 0)
    assert score.raw == 0.0
    assert score.scored_rows == ROWS - 150


def test_ignored_spans_count_neither_as_hits_nor_false_alarms() -> None:
    score = nab.score_file(fired(300), [WINDOW], nab.STANDARD, ignored=[(290, 310)])
    assert (score.hits, score.false_alarms, score.raw) == (0, 0, -1.0)


def labelled(windows: list[tuple[int, int]], rises: list[bool] | None = None) -> nab.LabelledFile:
    start = datetime(2026, 1, 1)
    return nab.LabelledFile(
        "cat/file.csv",
        [1.0] * ROWS,
        [start + timedelta(minutes=5 * i) for i in range(ROWS)],
        windows,
        rises or [True] * len(windows),
    )


def test_a_corpus_is_normalised_so_never_firing_scores_0_and_perfect_100() -> None:
    files = [labelled([WINDOW]), labelled([(200, 299), (600, 699)])]
    never = nab.score_corpus(files, [fired(), fired()], nab.STANDARD)
    perfect = nab.score_corpus(files, [fired(400), fired(200, 600)], nab.STANDARD)
    assert never.score == 0.0
    assert perfect.score == pytest.approx(100.0)
    assert (perfect.hits, perfect.misses, perfect.windows) == (3, 0, 3)
    # one window of three caught at its left edge, one far false alarm: raw = 1 - 2 - 0.11
    one = nab.score_corpus(files, [fired(400), fired(950)], nab.STANDARD)
    assert one.score == pytest.approx(100 * (1 - 2 - 0.11 + 3) / (3 + 3))
    assert one.summary()["false_alarms_per_1000_buckets"] == pytest.approx(
        1000 / (2 * (ROWS - 150)), abs=0.01
    )


def test_rises_only_drops_the_drop_windows_and_ignores_detections_in_them() -> None:
    file = labelled([(200, 299), WINDOW], rises=[False, True])
    result = nab.score_corpus([file], [fired(250, 400)], nab.STANDARD, rises_only=True)
    assert (result.windows, result.hits, result.false_alarms) == (1, 1, 0)
    assert result.score == pytest.approx(100.0)


def test_the_best_threshold_is_swept_over_the_corpus() -> None:
    files = [labelled([WINDOW])]
    scores = [[0.0] * ROWS]
    scores[0][420] = 0.9  # in the window
    scores[0][800] = 0.5  # a false alarm if the threshold admits it
    threshold, result = nab.best_threshold(files, scores, nab.STANDARD)
    assert 0.5 < threshold <= 0.9
    assert (result.hits, result.false_alarms) == (1, 0)


def test_a_window_direction_follows_its_largest_excursion() -> None:
    flat = [10.0] * 40
    spike = [*flat[:20], 10.0, 50.0, 10.0, *flat[23:]]
    dip = [*flat[:20], 10.0, 0.0, 10.0, *flat[23:]]
    assert nab.rises(spike, (20, 22))
    assert not nab.rises(dip, (20, 22))
    assert math.isfinite(nab.MAX_TP)
