"""Detector quality on labelled real series: NAB's realAdExchange, realTraffic and
realKnownCause/nyc_taxi (`../shared/data/nab_dev`, see its README), scored by our NAB
scorer (tests/bench/nab.py) per category and profile, with hits, misses and false alarms
per 1,000 scored buckets, and again on the rise windows only (signal detects pulses; some
windows mark drops).

Our detector runs with its defaults over each file as a stream, and its `alert`s are the
detections: no threshold is fitted to these files. Its parameters were chosen on
realAdExchange only (tests/bench/tune_detector.py); realTraffic and nyc_taxi are held out.
The baseline is NAB's windowed Gaussian (mean and deviation of the previous 6,400 values,
refreshed every 100; score 1 - two-sided tail probability) with its threshold optimised
per category and profile over these very files, as NAB does for its published figures:
that flatters the baseline, not us.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pulsestock.signal.domain.detector import DetectorConfig, PulseDetector

from tests.bench import nab
from tests.bench.report import emit
from tests.helpers.shared import shared_dir

DATA = shared_dir() / "data" / "nab_dev"
CATEGORIES = {
    "realAdExchange": "tuning category",
    "realTraffic": "held out",
    "realKnownCause": "held out",
}


def detector_detections(
    values: Sequence[float], config: DetectorConfig | None = None
) -> list[bool]:
    detector = PulseDetector(config or DetectorConfig())
    return [detector.update(v).alert for v in values]


def windowed_gaussian_scores(
    values: Sequence[float], window: int = 6400, step: int = 100
) -> list[float]:
    scores: list[float] = []
    mean, deviation = 0.0, 0.0
    for i, value in enumerate(values):
        if i % step == 0 and i >= 2:
            recent = values[max(0, i - window) : i]
            mean, deviation = statistics.fmean(recent), statistics.pstdev(recent)
        if i < 2 or deviation == 0:
            scores.append(0.0)
            continue
        tail = math.erfc(abs(value - mean) / (deviation * math.sqrt(2)))
        scores.append(1.0 - tail)
    return scores


def category_report(files: list[nab.LabelledFile]) -> dict[str, object]:
    ours = [detector_detections(f.values) for f in files]
    gaussian = [windowed_gaussian_scores(f.values) for f in files]
    report: dict[str, object] = {}
    for profile in nab.PROFILES:
        threshold, baseline = nab.best_threshold(files, gaussian, profile)
        report[profile.name] = {
            "detector": nab.score_corpus(files, ours, profile).summary(),
            "windowed_gaussian": {**baseline.summary(), "threshold": threshold},
        }
    report["rises_only_standard"] = nab.score_corpus(
        files, ours, nab.STANDARD, rises_only=True
    ).summary()
    return report


async def run(_infra: object) -> None:
    corpus = nab.load_corpus(DATA)  # raises when the data is missing: nothing to report then
    for category, split in CATEGORIES.items():
        files = [f for f in corpus if f.category == category]
        if not files:
            raise FileNotFoundError(f"no {category} files under {DATA}")
        report = category_report(files)
        standard = report[nab.STANDARD.name]
        assert isinstance(standard, dict)
        emit(
            f"signal.detector_nab_{category}",
            float(standard["detector"]["nab_score"]),
            "NAB score (standard profile; 0 = never fires, 100 = perfect)",
            baseline=float(standard["windowed_gaussian"]["nab_score"]),
            baseline_is="NAB windowed Gaussian, threshold optimised on these files",
            files=len(files),
            buckets=sum(len(f.values) for f in files),
            split=split,
            tuned_on="realAdExchange only (tests/bench/tune_detector.py)",
            **report,
            source="Numenta Anomaly Benchmark @ea702d75 (MIT), ../shared/data/nab_dev",
        )
