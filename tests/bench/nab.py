"""A scorer for labelled anomaly windows following the Numenta Anomaly Benchmark (NAB, its
`nab/sweeper.py` and `nab/runner.py` normalisation), written for our benches.

Rules, per file of n rows:
- the first min(floor(0.15 n), 750) rows are probationary: detections there are ignored,
  and a window none of whose rows is after them is not scored at all;
- inside a window [left, right] (row indices, width w = right - left + 1) only the best,
  i.e. earliest, scored detection counts: at row i its relative position is
  p = -(right - i + 1) / w (-1 at the left edge) and it earns tp * S(p) / S(-1), with the
  scaled sigmoid S(p) = 2 / (1 + exp(5 p)) - 1, or -1 when p >= 3; a window without one
  costs -fn;
- a detection outside every window costs fp * S(d) (S is negative there), d being its
  distance after the end of the preceding window in units of (that window's width - 1),
  and d = 3 (the full -fp) when no window precedes it: a detection just after a window is
  cheap, one long after or before any window costs the full weight;
- a corpus score is the sum over files, normalised as 100 (raw - null) / (perfect - null)
  with `null` the raw score of a detector that never fires and `perfect` = tp per window.

As in NAB, a detection is a row whose anomaly score is >= the threshold; `best_threshold`
sweeps every threshold over a corpus, as NAB's optimiser does for the published figures.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PROBATION_SHARE = 0.15
PROBATION_MAX_ROWS = 750  # NAB: 0.15 * 5000


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", tp=1.0, fp=0.11, fn=1.0)
REWARD_LOW_FP = Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0)
REWARD_LOW_FN = Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0)
PROFILES = (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN)


def probationary_length(rows: int) -> int:
    return min(math.floor(PROBATION_SHARE * rows), PROBATION_MAX_ROWS)


def scaled_sigmoid(position: float) -> float:
    """1 well before a window's end, 0 at its end, -1 from three widths after it on."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


@dataclass(frozen=True)
class LabelledFile:
    name: str  # "category/file.csv"
    values: list[float]
    timestamps: list[datetime]
    windows: list[tuple[int, int]]  # [left, right] row indices, inclusive, in time order
    rises: list[bool]  # per window: does the series go up (not down) in it?

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    def rise_windows_only(self) -> LabelledFile:
        """The file with its drop windows taken out (a detection inside one then counts
        for nothing, see `score_file`'s `ignored`)."""
        kept = [w for w, rise in zip(self.windows, self.rises, strict=True) if rise]
        return LabelledFile(self.name, self.values, self.timestamps, kept, [True] * len(kept))

    def drop_windows(self) -> list[tuple[int, int]]:
        return [w for w, rise in zip(self.windows, self.rises, strict=True) if not rise]


@dataclass(frozen=True)
class FileScore:
    raw: float
    windows: int  # scored windows (not wholly probationary)
    hits: int
    misses: int
    false_alarms: int
    scored_rows: int


def score_file(
    detections: Sequence[bool],
    windows: Sequence[tuple[int, int]],
    profile: Profile,
    ignored: Sequence[tuple[int, int]] = (),
) -> FileScore:
    """NAB's raw score of one file's detections (one bool per row); detections inside an
    `ignored` span count neither as hits nor as false alarms."""
    rows = len(detections)
    probation = probationary_length(rows)
    best: dict[int, float] = {}  # scored window -> its best detection's reward
    scored_windows = {k for k, (_, right) in enumerate(windows) if right >= probation}
    false_alarm_cost = 0.0
    false_alarms = 0
    window_of = [-1] * rows
    for k, (left, right) in enumerate(windows):
        for i in range(left, right + 1):
            window_of[i] = k
    muted = [False] * rows
    for left, right in ignored:
        for i in range(left, right + 1):
            muted[i] = True
    previous_window = -1  # the last window whose right edge is before row i
    for i in range(rows):
        k = window_of[i]
        if i >= probation and detections[i] and not muted[i]:
            if k >= 0:
                left, right = windows[k]
                position = -(right - i + 1) / (right - left + 1)
                reward = scaled_sigmoid(position) * profile.tp / MAX_TP
                best[k] = max(best.get(k, -math.inf), reward)
            else:
                if previous_window < 0:
                    distance = 3.0
                else:
                    left, right = windows[previous_window]
                    # NAB divides by (width - 1); a one-row window would divide by zero there
                    distance = abs(right - i) / max(right - left, 1)
                false_alarm_cost += scaled_sigmoid(distance) * profile.fp
                false_alarms += 1
        if k >= 0 and i == windows[k][1]:
            previous_window = k
    hits = len(best)
    misses = len(scored_windows) - hits
    raw = sum(best.values()) - profile.fn * misses + false_alarm_cost
    return FileScore(raw, len(scored_windows), hits, misses, false_alarms, rows - probation)


@dataclass(frozen=True)
class CorpusScore:
    score: float  # normalised: 0 = never fires, 100 = perfect
    raw: float
    windows: int
    hits: int
    misses: int
    false_alarms: int
    scored_rows: int

    def summary(self) -> dict[str, float | int]:
        return {
            "nab_score": round(self.score, 1),
            "windows": self.windows,
            "hits": self.hits,
            "misses": self.misses,
            "false_alarms": self.false_alarms,
            "false_alarms_per_1000_buckets": round(1000 * self.false_alarms / self.scored_rows, 2)
            if self.scored_rows
            else 0.0,
        }


def score_corpus(
    files: Sequence[LabelledFile],
    detections: Sequence[Sequence[bool]],
    profile: Profile,
    *,
    rises_only: bool = False,
) -> CorpusScore:
    """Normalised NAB score of a corpus; `rises_only` scores only the rise windows and
    ignores detections inside drop windows."""
    parts, nulls, labelled = [], [], 0
    for file, fired in zip(files, detections, strict=True):
        scored = file.rise_windows_only() if rises_only else file
        ignored = file.drop_windows() if rises_only else []
        parts.append(score_file(fired, scored.windows, profile, ignored))
        nulls.append(score_file([False] * len(fired), scored.windows, profile).raw)
        labelled += len(scored.windows)
    raw, null = sum(p.raw for p in parts), sum(nulls)
    perfect = labelled * profile.tp
    return CorpusScore(
        100 * (raw - null) / (perfect - null) if perfect != null else 0.0,
        raw,
        sum(p.windows for p in parts),
        sum(p.hits for p in parts),
        sum(p.misses for p in parts),
        sum(p.false_alarms for p in parts),
        sum(p.scored_rows for p in parts),
    )


def best_threshold(
    files: Sequence[LabelledFile],
    anomaly_scores: Sequence[Sequence[float]],
    profile: Profile,
    most: int = 200,
) -> tuple[float, CorpusScore]:
    """The threshold over the whole corpus that maximises the score, as NAB's optimiser
    picks one per detector and profile for its published results (candidates: the
    distinct scores rounded to 4 decimals, at most `most` of them evenly spread, plus one
    above them all: each candidate scores the whole corpus)."""
    distinct = sorted({round(s, 4) for scores in anomaly_scores for s in scores})
    step = max(1, len(distinct) // most)
    candidates = [*distinct[::step], math.inf]
    best: tuple[float, CorpusScore] | None = None
    for threshold in candidates:
        fired = [[round(s, 4) >= threshold for s in scores] for scores in anomaly_scores]
        result = score_corpus(files, fired, profile)
        if best is None or result.score > best[1].score:
            best = (threshold, result)
    assert best is not None
    return best


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.strip())


def load_corpus(root: Path, categories: Sequence[str] | None = None) -> list[LabelledFile]:
    """The labelled files under `root` (NAB layout: `<category>/<file>.csv` with
    timestamp,value rows and `combined_windows.json`), with each window's direction."""
    if not (root / "combined_windows.json").exists():
        raise FileNotFoundError(f"no NAB labels at {root / 'combined_windows.json'}")
    windows = json.loads((root / "combined_windows.json").read_text())
    files = []
    for name in sorted(windows):
        if categories is not None and name.split("/", 1)[0] not in categories:
            continue
        with open(root / name, newline="") as source:
            rows = list(csv.DictReader(source))
        timestamps = [_parse(r["timestamp"]) for r in rows]
        values = [float(r["value"]) for r in rows]
        spans = []
        for start, end in windows[name]:
            left_at, right_at = _parse(start), _parse(end)
            inside = [i for i, t in enumerate(timestamps) if left_at <= t <= right_at]
            spans.append((inside[0], inside[-1]))
        files.append(
            LabelledFile(name, values, timestamps, spans, [rises(values, w) for w in spans])
        )
    return files


def rises(values: Sequence[float], window: tuple[int, int]) -> bool:
    """Whether a window marks a rise: the furthest excursion inside it from the median of
    the equally long span before it is upwards. Fixed before any detector was scored."""
    left, right = window
    before = sorted(values[max(0, 2 * left - right - 1) : left] or values[left : right + 1])
    median = before[len(before) // 2]
    inside = values[left : right + 1]
    return max(inside) - median >= median - min(inside)
